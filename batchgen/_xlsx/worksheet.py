"""A worksheet's XML: where its rows are, and the patch that writes output cells into it."""

from __future__ import annotations

import bisect
import functools
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from batchgen._xlsx.markup import (
    ATTRS,
    XlsxError,
    attr,
    cell_xml,
    col_letter,
    drop_attr,
    parse_ref,
)

_SHEETDATA_OPEN_RE = re.compile(r"<([\w.-]+:)?sheetData(?=[\s/>])(" + ATTRS + r")(/?)>", re.S)
_DIMENSION_RE = re.compile(r"<(?:[\w.-]+:)?dimension(?=[\s/>])(" + ATTRS + r")/?>", re.S)
_MERGE_RE = re.compile(r"<(?:[\w.-]+:)?mergeCell(?=[\s/>])(" + ATTRS + r")/?>", re.S)
_SHARED_OR_ARRAY_F_RE = re.compile(r"<(?:[\w.-]+:)?f(?=[\s/>])" + ATTRS + r"\sref\s*=", re.S)
_FORMULA_RE = re.compile(r"<(?:[\w.-]+:)?f(?=[\s/>])")


@dataclass
class SheetXml:
    """A worksheet's XML with the position of every <row> inside <sheetData>."""

    text: str
    prefix: str  # namespace prefix of the main namespace as used in this part, e.g. "x:"
    data_open: tuple[int, int]  # span of the <sheetData ...> start tag
    data_close: int  # start of </sheetData>, or end of a self-closing <sheetData/>
    self_closing: bool
    row_nums: list[int] = field(default_factory=list)
    # (start, content start, content end, end) of each row; content is empty for <row/>
    row_spans: list[tuple[int, int, int, int]] = field(default_factory=list)
    merges: list[tuple[int, int, int, int]] = field(default_factory=list)  # r1, c1, r2, c2


@dataclass(frozen=True)
class _Patterns:
    """Regexes for one namespace prefix; a literal start like '<x:row' makes scans fast."""

    row: re.Pattern[str]  # a <row ...> or <row .../> start tag
    cell: re.Pattern[str]  # a whole <c> element
    cell_tag: re.Pattern[str]  # a <c ...> start tag
    row_close: re.Pattern[str]


@functools.lru_cache(maxsize=8)
def _patterns(prefix: str) -> _Patterns:
    """Compiled patterns for elements written with `prefix` (e.g. 'x:' or '')."""
    p = re.escape(prefix)
    return _Patterns(
        row=re.compile(f"<{p}row(?=[\\s/>])({ATTRS})(/?)>", re.S),
        cell=re.compile(f"<{p}c(?=[\\s/>])({ATTRS})(?:/>|>(.*?)</{p}c\\s*>)", re.S),
        cell_tag=re.compile(f"<{p}c(?=[\\s/>])({ATTRS})/?>", re.S),
        row_close=re.compile(f"</{p}row\\s*>"),
    )


def parse_sheet(text: str) -> SheetXml:
    """Index the rows of a worksheet so single rows can be patched quickly."""
    m = _SHEETDATA_OPEN_RE.search(text)
    if not m:
        raise XlsxError("cannot patch: the worksheet has no <sheetData>")
    prefix = m.group(1) or ""
    pats = _patterns(prefix)
    self_closing = m.group(3) == "/"
    close = m.end()
    if not self_closing:
        close_m = re.compile(r"</" + re.escape(prefix) + r"sheetData\s*>").search(text, m.end())
        if not close_m:
            raise XlsxError("cannot patch: the worksheet's <sheetData> is not closed")
        close = close_m.start()
    sheet = SheetXml(
        text=text,
        prefix=prefix,
        data_open=(m.start(), m.end()),
        data_close=close,
        self_closing=self_closing,
    )
    close_tag = f"</{prefix}row>"
    missing: list[tuple[int, int]] = []  # (insert position, row number) for rows without r
    prev = 0
    for tm in pats.row.finditer(text, m.end(), close):
        content_end = end = tm.end()
        if not tm.group(2):
            content_end = text.find(close_tag, end, close)
            if content_end == -1:
                cm = pats.row_close.search(text, tm.end(), close)
                if cm is None:
                    raise XlsxError(f"cannot patch: row after row {prev} is not closed")
                content_end, end = cm.start(), cm.end()
            else:
                end = content_end + len(close_tag)
        r = attr(tm.group(1), "r")
        if r is None:
            # Rare (some generators omit r): number it like Excel does, added below.
            missing.append((tm.start() + len(prefix) + 4, prev + 1))
            r = str(prev + 1)
        if not r.isdigit() or int(r) <= prev:
            raise XlsxError(f"cannot patch: worksheet rows are out of order near row {r}")
        prev = int(r)
        sheet.row_nums.append(prev)
        sheet.row_spans.append((tm.start(), tm.end(), content_end, end))
    if missing:
        # Explicit r everywhere keeps rows in place once missing rows are inserted.
        pieces, pos = [], 0
        for at, number in missing:
            pieces += [text[pos:at], f' r="{number}"']
            pos = at
        return parse_sheet("".join(pieces) + text[pos:])
    for mm in _MERGE_RE.finditer(text, close):
        ref = attr(mm.group(1), "ref") or ""
        parts = ref.split(":")
        try:
            (r1, c1), (r2, c2) = parse_ref(parts[0]), parse_ref(parts[-1])
        except XlsxError:
            continue
        sheet.merges.append((r1, c1, r2, c2))
    return sheet


def _row_parts(
    sheet: SheetXml, span: tuple[int, int, int, int] | None, row_num: int
) -> tuple[str, str]:
    """(attribute string, content) of an existing row, or of a new empty one."""
    if span is None:
        return f' r="{row_num}"', ""
    start, content_start, content_end, end = span
    attrs_start = start + len(sheet.prefix) + 4  # past "<row"
    if content_start == end:  # <row .../>
        return sheet.text[attrs_start : end - 2], ""
    return sheet.text[attrs_start : content_start - 1], sheet.text[content_start:content_end]


def _last_cell_col(content: str, prefix: str) -> int | None:
    """Column of the row's last cell; -1 for no cells; None if it has no explicit r."""
    pats = _patterns(prefix)
    tag = f"<{prefix}c"
    i = content.rfind(tag)
    while i != -1:
        m = pats.cell_tag.match(content, i)
        if m is not None:
            ref = attr(m.group(1), "r")
            return parse_ref(ref)[1] if ref else None
        i = content.rfind(tag, 0, i)
    return -1


Wrap = Callable[[str | None], str | None]  # a cell's style → the style that wraps its text


def _patch_row(
    sheet: SheetXml,
    span: tuple[int, int, int, int] | None,
    row_num: int,
    values: dict[int, str],
    new_style: str | None,
    wrap: Wrap | None = None,
    column_styles: Mapping[int, str] | None = None,
) -> tuple[str, bool]:
    """Set the cells of one <row> at the given columns; return (new xml, a formula was removed).

    A cell added gets `new_style`, else its column's format, as a cell typed there would; a
    value of several lines gets the style `wrap` makes of its cell's style.
    """
    prefix = sheet.prefix
    col_styles = column_styles or {}

    def styled(style: str | None, value: str) -> str | None:
        return wrap(style) if wrap is not None and "\n" in value else style

    attrs, content = _row_parts(sheet, span, row_num)
    last = _last_cell_col(content, prefix)
    if last is not None and last < min(values):
        # Common case: every output cell goes after the row's last cell.
        new = [
            cell_xml(
                prefix,
                f"{col_letter(col)}{row_num}",
                styled(new_style if new_style is not None else col_styles.get(col), values[col]),
                values[col],
            )
            for col in sorted(values)
            if values[col] or new_style is not None
        ]
        if not new:
            return (sheet.text[span[0] : span[3]] if span else ""), False
        attrs = drop_attr(attrs, "spans")  # spans is only a hint; stale spans confuse Excel
        return f"<{prefix}row{attrs}>{content}{''.join(new)}</{prefix}row>", False
    cells: list[tuple[int, str]] = []  # (col, xml)
    prev = -1
    removed_formula = False
    pending = dict(values)
    for cm in _patterns(prefix).cell.finditer(content):
        c_attrs, c_body = cm.group(1), cm.group(2) or ""
        ref = attr(c_attrs, "r")
        col = parse_ref(ref)[1] if ref else prev + 1
        prev = col
        if col in pending:
            if _SHARED_OR_ARRAY_F_RE.search(c_body):
                raise XlsxError(
                    f"cannot patch: cell {col_letter(col)}{row_num} in an output column holds "
                    "a shared or array formula; clear that column and try again"
                )
            removed_formula = removed_formula or bool(_FORMULA_RE.search(c_body))
            style = attr(c_attrs, "s")
            value = pending.pop(col)
            if not value and style is None:
                continue  # an empty unstyled cell is the same as no cell
            xml = cell_xml(prefix, f"{col_letter(col)}{row_num}", styled(style, value), value)
        elif ref is None:
            # Explicit r keeps this cell in place once new cells are inserted before it.
            at = cm.start() + len(prefix) + 2
            xml = content[cm.start() : at] + f' r="{col_letter(col)}{row_num}"'
            xml += content[at : cm.end()]
        else:
            xml = cm.group(0)
        cells.append((col, xml))
    added = False
    for col, value in pending.items():
        if value or new_style is not None:
            added = True
            ref = f"{col_letter(col)}{row_num}"
            style = new_style if new_style is not None else col_styles.get(col)
            cells.append((col, cell_xml(prefix, ref, styled(style, value), value)))
    cells.sort(key=lambda c: c[0])
    if added:
        attrs = drop_attr(attrs, "spans")
    body = "".join(c[1] for c in cells)
    if not body:
        return f"<{prefix}row{attrs}/>", removed_formula
    return f"<{prefix}row{attrs}>{body}</{prefix}row>", removed_formula


def style_of(sheet: SheetXml, row_num: int, col: int) -> str | None:
    """The s attribute of a cell, if the cell exists."""
    i = bisect.bisect_left(sheet.row_nums, row_num)
    if i == len(sheet.row_nums) or sheet.row_nums[i] != row_num:
        return None
    _, content = _row_parts(sheet, sheet.row_spans[i], row_num)
    prev = -1
    for cm in _patterns(sheet.prefix).cell.finditer(content):
        ref = attr(cm.group(1), "r")
        prev = parse_ref(ref)[1] if ref else prev + 1
        if prev == col:
            return attr(cm.group(1), "s")
    return None


def _new_dimension(sheet: SheetXml, bounds: tuple[int, int, int, int]) -> str:
    """The sheet text before <sheetData> with <dimension ref> widened to cover new cells."""
    head = sheet.text[: sheet.data_open[0]]
    m = _DIMENSION_RE.search(head)
    if not m:
        return head
    ref = attr(m.group(1), "ref") or ""
    try:
        parts = [parse_ref(p) for p in ref.split(":")]
    except XlsxError:
        return head
    min_row, min_col, max_row, max_col = bounds
    r1, c1 = parts[0]
    r2, c2 = parts[-1]
    r1, c1, r2, c2 = min(r1, min_row), min(c1, min_col), max(r2, max_row), max(c2, max_col)
    new_ref = f"{col_letter(c1)}{r1}:{col_letter(c2)}{r2}"
    new_attrs = re.sub(
        r"(\sref\s*=\s*)(?:\"[^\"]*\"|'[^']*')", lambda x: f'{x.group(1)}"{new_ref}"', m.group(1)
    )
    return head[: m.start(1)] + new_attrs + head[m.end(1) :]


def patch_sheet(
    sheet: SheetXml,
    writes: dict[int, dict[int, str]],
    *,
    header_row: int,
    header_style: str | None,
    wrap: Wrap | None = None,
    column_styles: Mapping[int, str] | None = None,
) -> tuple[list[str], bool]:
    """Apply `writes` (row → column → text); return (the new text in pieces, a formula cell
    was overwritten). Pieces, not one string: a 100,000-row sheet is then never held whole
    twice over (joined, then encoded) on top of the original."""
    # New header cells get header_style, values of several lines the style `wrap` makes of
    # their cell's; an overwritten formula means calcChain.xml must go.
    text = sheet.text
    p = sheet.prefix
    out: list[str] = []
    removed_formula = False
    col_styles = column_styles or {}
    cols = [c for row in writes.values() for c in row]
    if cols:
        rows = [r for r, row in writes.items() if row]
        out.append(_new_dimension(sheet, (min(rows), min(cols), max(rows), max(cols))))
    else:
        out.append(text[: sheet.data_open[0]])
    if sheet.self_closing:
        open_tag = text[sheet.data_open[0] : sheet.data_open[1]]
        out.append(open_tag[:-2].rstrip() + ">")
        cursor = sheet.data_open[1]
    else:
        out.append(text[sheet.data_open[0] : sheet.data_open[1]])
        cursor = sheet.data_open[1]
    for row_num in sorted(writes):
        values = writes[row_num]
        if not values:
            continue
        style = header_style if row_num == header_row else None
        i = bisect.bisect_left(sheet.row_nums, row_num)
        if i < len(sheet.row_nums) and sheet.row_nums[i] == row_num:
            span = sheet.row_spans[i]
            start, end = span[0], span[3]
            row_xml, removed = _patch_row(sheet, span, row_num, values, style, wrap, col_styles)
            removed_formula = removed_formula or removed
        else:
            start = end = sheet.row_spans[i][0] if i < len(sheet.row_nums) else sheet.data_close
            if sheet.self_closing:
                start = end = cursor
            row_xml, _ = _patch_row(sheet, None, row_num, values, style, wrap, col_styles)
        out.append(text[cursor:start])
        out.append(row_xml)
        cursor = end
    if sheet.self_closing:
        out.append(f"</{p}sheetData>")
    out.append(text[cursor:])
    return out, removed_formula


# --------------------------------------------------------------------------- results sheet
