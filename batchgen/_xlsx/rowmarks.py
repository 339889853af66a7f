"""Rows that are not plain data rows: an Excel Table's totals rows, rows of aggregate formulas
(a totals row outside a Table), and hidden rows (by hand, by an active AutoFilter, or inside
a collapsed outline group)."""

from __future__ import annotations

import bisect
import posixpath
import re
from dataclasses import dataclass, field
from xml.etree import ElementTree

from batchgen._xlsx.book import Book, _parse_rels, _rels_part_of, _resolve, read_part
from batchgen._xlsx.markup import ATTRS, NS_MAIN, NS_REL, XlsxError, attr, parse_ref
from batchgen._xlsx.worksheet import _FORMULA_RE, SheetXml, _patterns

REL_TABLE = NS_REL + "/table"
_TABLE_PART_RE = re.compile(r"<(?:[\w.-]+:)?tablePart(?=[\s/>])(" + ATTRS + r")/?>", re.S)
_AUTOFILTER_RE = re.compile(
    r"<(?:[\w.-]+:)?autoFilter(?=[\s/>])(" + ATTRS + r")(?:/>|>(.*?)</(?:[\w.-]+:)?autoFilter\s*>)",
    re.S,
)
_FILTER_COLUMN_RE = re.compile(
    r"<(?:[\w.-]+:)?filterColumn(?=[\s/>])("
    + ATTRS
    + r")(?:/>|>(.*?)</(?:[\w.-]+:)?filterColumn\s*>)",
    re.S,
)
_TRUE = ("1", "true")
# literal first, no IGNORECASE: the regex engine then skips to each "hidden" at C speed
_HIDDEN_RE = re.compile(r"hidden\s*=\s*[\"'](?:1|true|True|TRUE)[\"']")

# a formula that sums up a column: what a totals row holds (its text has no leading '=')
# the function names as Excel stores them (upper case); <f> found first by its literal tag
_AGGREGATE = (
    r"(?=[\s>])[^>]*>\s*(?:_xlfn\.)?(?:SUBTOTAL|SUM|SUMIFS?|COUNT|COUNTA|COUNTIFS?|AVERAGE|"
    r"AVERAGEIFS?|AGGREGATE|MIN|MAX)\s*\("
)

_AGGREGATE_BODY_RE = re.compile(r"<(?:[\w.-]+:)?f" + _AGGREGATE)

HIDDEN_BY_HAND = "by hand"
HIDDEN_IN_GROUP = "in a collapsed group"


@dataclass(frozen=True)
class Filter:
    """An AutoFilter with at least one column filtered: its rows, and each filtered column
    with the values it shows (lower case, "" for blank), or None for any other kind of
    criterion (a custom, top-10, date, colour or dynamic filter)."""

    first_row: int  # its header row
    last_row: int
    criteria: tuple[tuple[int, frozenset[str] | None], ...]  # (0-based sheet column, shown)


@dataclass
class RowMarks:
    """A worksheet's totals rows (row → the Table's name) and hidden rows (row → how)."""

    totals: dict[int, str] = field(default_factory=dict)
    # row → HIDDEN_BY_HAND, HIDDEN_IN_GROUP, or the filter whose range holds it
    hidden: dict[int, str | Filter] = field(default_factory=dict)
    # rows holding an aggregate formula → (its columns holding one, those holding another)
    aggregates: dict[int, tuple[frozenset[int], frozenset[int]]] = field(default_factory=dict)


def row_marks(book: Book, sheet_part: str, sheet: SheetXml) -> RowMarks:
    """The totals rows of the worksheet's Tables and its hidden rows."""
    marks = RowMarks()
    filters = [f for f in [_filter_of(_tail(sheet))] if f is not None]
    for table in _tables(book, sheet_part, sheet):
        for row in table.totals_rows:
            marks.totals[row] = table.name
        if table.filter is not None:
            filters.append(table.filter)
    marks.hidden = _hidden_rows(sheet, filters)
    marks.aggregates = _aggregate_rows(sheet)
    return marks


def _tail(sheet: SheetXml) -> str:
    """The worksheet's XML after <sheetData>, where <autoFilter> and <tableParts> are."""
    return sheet.text[sheet.data_close :]


def _hidden_rows(sheet: SheetXml, filters: list[Filter]) -> dict[int, str | Filter]:
    """Every row marked hidden, and why: a filter covering it, a collapsed group, or a hand."""
    hidden: dict[int, str | Filter] = {}
    text = sheet.text
    starts: list[int] = []
    skip = len(sheet.prefix) + 4  # past "<row"
    # one scan in C: most sheets hide nothing, and LibreOffice writes hidden="false" everywhere
    for m in _HIDDEN_RE.finditer(text, sheet.data_open[1], sheet.data_close):
        starts = starts or [span[0] for span in sheet.row_spans]
        i = bisect.bisect_right(starts, m.start()) - 1
        if i < 0 or m.start() >= sheet.row_spans[i][1]:
            continue  # not in a <row> start tag (a cell's text may read hidden="1")
        number, (start, tag_end, _, _) = sheet.row_nums[i], sheet.row_spans[i]
        attrs = text[start + skip : tag_end]
        if (attr(attrs, "hidden") or "").lower() not in _TRUE:
            continue
        by = next((f for f in filters if f.first_row < number <= f.last_row), None)
        if by is not None:
            hidden[number] = by
        elif (attr(attrs, "outlineLevel") or "0") not in ("", "0"):
            hidden[number] = HIDDEN_IN_GROUP
        else:
            hidden[number] = HIDDEN_BY_HAND
    return hidden


def _aggregate_rows(sheet: SheetXml) -> dict[int, tuple[frozenset[int], frozenset[int]]]:
    """Rows holding an aggregate formula (SUM, SUBTOTAL, COUNT…): (its columns holding one,
    its columns holding any other formula). One scan in C; most sheets have none."""
    found: dict[int, tuple[frozenset[int], frozenset[int]]] = {}
    text = sheet.text
    starts: list[int] = []
    cell = _patterns(sheet.prefix).cell
    tag = f"<{sheet.prefix}f"
    first = text.find(tag, sheet.data_open[1], sheet.data_close)
    if first == -1:
        return found  # no formula at all
    aggregate = re.compile(re.escape(tag) + _AGGREGATE)
    for m in aggregate.finditer(text, first, sheet.data_close):
        starts = starts or [span[0] for span in sheet.row_spans]
        i = bisect.bisect_right(starts, m.start()) - 1
        if i < 0 or sheet.row_nums[i] in found:
            continue
        _, content_start, content_end, _ = sheet.row_spans[i]
        aggregates: set[int] = set()
        others: set[int] = set()
        prev = -1
        try:
            for cm in cell.finditer(text, content_start, content_end):
                ref = attr(cm.group(1), "r")
                prev = parse_ref(ref)[1] if ref else prev + 1
                body = cm.group(2) or ""
                if _FORMULA_RE.search(body):
                    (aggregates if _AGGREGATE_BODY_RE.search(body) else others).add(prev)
        except XlsxError:
            continue  # an unreadable cell reference: a row like any other
        found[sheet.row_nums[i]] = (frozenset(aggregates), frozenset(others))
    return found


def _filter_of(xml: str) -> Filter | None:
    """The first <autoFilter> in `xml` with a filtered column (colId counts from its range)."""
    at = xml.find("autoFilter")  # a literal find first: the part may hold 100,000 links
    if at == -1:
        return None
    m = _AUTOFILTER_RE.search(xml, xml.rfind("<", 0, at))
    if m is None or not m.group(2):
        return None
    try:
        (r1, c1), (r2, _) = _bounds(attr(m.group(1), "ref") or "")
    except XlsxError:
        return None
    criteria = []
    for fm in _FILTER_COLUMN_RE.finditer(m.group(2)):
        col_id = attr(fm.group(1), "colId") or ""
        if col_id.isdigit():
            criteria.append((c1 + int(col_id), _shown_values(fm.group(2) or "")))
    return Filter(r1, r2, tuple(criteria)) if criteria else None


def _shown_values(body: str) -> frozenset[str] | None:
    """The values a <filterColumn> shows when it is a plain list (<filters><filter val>);
    None for any other criterion, which batchgen does not evaluate."""
    # prefixes dropped: the fragment is parsed without the declarations of its document
    plain = re.sub(r"<(/?)[\w.-]+:", r"<\1", body)
    plain = re.sub(r"\s[\w.-]+:([\w.-]+\s*=)", r" \1", plain)
    try:
        root = ElementTree.fromstring(f"<c>{plain}</c>")
    except ElementTree.ParseError:
        return None
    kids = list(root)
    if len(kids) != 1 or kids[0].tag != "filters":
        return None
    items = list(kids[0])
    if any(item.tag != "filter" for item in items):
        return None  # date groups
    shown = {(item.get("val") or "").casefold() for item in items}
    if (kids[0].get("blank") or "").lower() in _TRUE:
        shown.add("")
    return frozenset(shown)


def _bounds(ref: str) -> tuple[tuple[int, int], tuple[int, int]]:
    """'A1:F20' → ((1, 0), (20, 5)); a single cell is its own range."""
    parts = ref.split(":")
    return parse_ref(parts[0]), parse_ref(parts[-1])


def _tables(book: Book, sheet_part: str, sheet: SheetXml) -> list[_Table]:
    """The Tables (ListObjects) on the worksheet, from its <tableParts> and relationships."""
    tail = _tail(sheet)
    if "tablePart" not in tail:
        return []
    by_lower = {n.lower(): n for n in book.names}
    rels_part = by_lower.get(_rels_part_of(sheet_part).lower())
    if rels_part is None:
        return []
    try:
        rels = _parse_rels(read_part(book, rels_part))
    except (XlsxError, ElementTree.ParseError):
        return []
    found = []
    for m in _TABLE_PART_RE.finditer(tail):
        rel_id = next((v for k, v in _attrs(m.group(1)).items() if k.endswith(":id")), "")
        rel_type, target = rels.get(rel_id, ("", ""))
        part = by_lower.get(_resolve(sheet_part, target).lower()) if target else None
        if rel_type != REL_TABLE or part is None:
            continue
        try:
            table = _table(read_part(book, part), posixpath.basename(part))
        except XlsxError:
            continue  # an unreadable table part: its rows are read as plain rows
        if table is not None:
            found.append(table)
    return found


@dataclass(frozen=True)
class _Table:
    """What batchgen needs of an Excel Table: its name, totals rows and active filter."""

    name: str
    totals_rows: range
    filter: Filter | None


def _attrs(attrs: str) -> dict[str, str]:
    """An attribute string as a dict (names keep their prefix)."""
    return {
        m.group(1): m.group(2) if m.group(2) is not None else m.group(3)
        for m in re.finditer(r"([\w.:-]+)\s*=\s*(?:\"([^\"]*)\"|'([^']*)')", attrs)
    }


def _table(xml: str, part_name: str) -> _Table | None:
    """One table part; None when it is not one batchgen can read."""
    try:
        root = ElementTree.fromstring(xml)
    except ElementTree.ParseError:
        return None
    if root.tag != f"{{{NS_MAIN}}}table":
        return None
    try:
        (r1, _), (r2, _) = _bounds(root.get("ref", ""))
    except XlsxError:
        return None
    # totalsRowCount says how many totals rows the range ends with; totalsRowShown only says
    # whether one was ever shown (Excel writes totalsRowShown="0" for a table without one)
    totals, headers = _count(root.get("totalsRowCount"), 0), _count(root.get("headerRowCount"), 1)
    first = max(r1 + headers, r2 - totals + 1)
    name = root.get("displayName") or root.get("name") or part_name
    return _Table(name, range(first, r2 + 1) if totals else range(0), _filter_of(xml))


def _count(value: str | None, default: int) -> int:
    """A count attribute as written, or its default."""
    return int(value) if value is not None and value.isdigit() else default
