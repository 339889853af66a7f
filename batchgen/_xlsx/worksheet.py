"""Patch an .xlsx package in place of a round-trip: only the touched XML parts change.

openpyxl would drop formula cached values, charts and images, and is slow on big sheets,
so the writer edits the worksheet XML as text and copies every other zip entry unchanged.
"""

from __future__ import annotations

import bisect
import functools
import io
import math
import posixpath
import re
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from xml.etree import ElementTree

from batchgen._text import ILLEGAL_XML_CHARS, strip_illegal

NS_MAIN = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
NS_REL = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
NS_PKG_REL = "http://schemas.openxmlformats.org/package/2006/relationships"
REL_WORKSHEET = NS_REL + "/worksheet"
REL_CALC_CHAIN = NS_REL + "/calcChain"
REL_OFFICE_DOC = NS_REL + "/officeDocument"
CT_WORKSHEET = "application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"

# One XML attribute list; quoted values may contain '>' so they are matched whole.
_ATTRS = r"(?:[^>\"']|\"[^\"]*\"|'[^']*')*?"
_SHEETDATA_OPEN_RE = re.compile(r"<([\w.-]+:)?sheetData(?=[\s/>])(" + _ATTRS + r")(/?)>", re.S)
_DIMENSION_RE = re.compile(r"<(?:[\w.-]+:)?dimension(?=[\s/>])(" + _ATTRS + r")/?>", re.S)
_MERGE_RE = re.compile(r"<(?:[\w.-]+:)?mergeCell(?=[\s/>])(" + _ATTRS + r")/?>", re.S)
_XML_DECL_ENC_RE = re.compile(r"^\s*<\?xml[^>]*encoding\s*=\s*[\"']([^\"']+)[\"']")
_REF_RE = re.compile(r"^\$?([A-Za-z]{1,3})\$?(\d+)$")
_SHARED_OR_ARRAY_F_RE = re.compile(r"<(?:[\w.-]+:)?f(?=[\s/>])" + _ATTRS + r"\sref\s*=", re.S)
_FORMULA_RE = re.compile(r"<(?:[\w.-]+:)?f(?=[\s/>])")
_NEEDS_ESCAPE_RE = re.compile(f"[&<>\r{ILLEGAL_XML_CHARS}]|_x")
# Excel and calamine decode _xHHHH_ in strings; escaping the underscore keeps such text literal.
_X_ESCAPE_RE = re.compile(r"_(x[0-9A-Fa-f]{4}_)")


_ATTR_RES: dict[str, re.Pattern[str]] = {}
# What a damaged archive entry raises while being read.
_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, OSError, EOFError, NotImplementedError)


class XlsxError(Exception):
    """The workbook cannot be read or patched; the message names the problem."""


@functools.lru_cache(maxsize=4096)
def col_letter(index: int) -> str:
    """0-based column index → Excel letters (0 → A)."""
    letters = ""
    n = index + 1
    while n:
        n, rem = divmod(n - 1, 26)
        letters = chr(65 + rem) + letters
    return letters


def col_index(letters: str) -> int:
    """Excel letters → 0-based column index (A → 0)."""
    n = 0
    for ch in letters.upper():
        n = n * 26 + ord(ch) - 64
    return n - 1


def _attr(attrs: str, name: str) -> str | None:
    """Value of attribute `name` (no prefix) in an attribute string, as written."""
    pattern = _ATTR_RES.get(name)
    if pattern is None:
        pattern = re.compile(r"(?:^|\s)" + re.escape(name) + r"\s*=\s*(?:\"([^\"]*)\"|'([^']*)')")
        _ATTR_RES[name] = pattern
    m = pattern.search(attrs)
    if not m:
        return None
    return m.group(1) if m.group(1) is not None else m.group(2)


def _drop_attr(attrs: str, name: str) -> str:
    """Remove attribute `name` from an attribute string."""
    return re.sub(r"\s+" + re.escape(name) + r"\s*=\s*(?:\"[^\"]*\"|'[^']*')", "", attrs)


def _escape_text(text: str) -> str:
    """Escape text for element content; CR as a reference so XML parsers keep it."""
    if _NEEDS_ESCAPE_RE.search(text) is None:
        return text
    text = _X_ESCAPE_RE.sub(r"_x005F_\1", strip_illegal(text))
    return (
        text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\r", "&#13;")
    )


def _escape_attr(text: str) -> str:
    """Escape text for a double-quoted attribute value."""
    return (
        text.replace("&", "&amp;").replace("<", "&lt;").replace('"', "&quot;").replace(">", "&gt;")
    )


def _parse_ref(ref: str) -> tuple[int, int]:
    """'K5' → (row 5, column index 10)."""
    m = _REF_RE.match(ref.strip())
    if not m:
        raise XlsxError(f"cannot patch: unreadable cell reference {ref!r}")
    return int(m.group(2)), col_index(m.group(1))


# --------------------------------------------------------------------------- package


@dataclass
class SheetRef:
    """A <sheet> of the workbook and the zip entry holding it."""

    name: str
    sheet_id: int
    part: str | None
    rel_type: str


@dataclass
class Book:
    """The package as loaded: raw bytes and the parsed workbook-level parts."""

    data: bytes
    names: list[str]
    workbook_part: str
    workbook_xml: str
    rels_part: str
    rels_xml: str
    ctypes_xml: str
    sheets: list[SheetRef]
    calc_chain: str | None


def _read_text(zf: zipfile.ZipFile, name: str) -> str:
    """Read one zip entry as UTF-8 text."""
    raw = zf.read(name)
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    m = _XML_DECL_ENC_RE.match(raw[:200].decode("ascii", "replace"))
    if m and m.group(1).lower().replace("_", "-") not in ("utf-8", "utf8"):
        raise XlsxError(f"cannot patch: {name} is encoded as {m.group(1)}, not UTF-8")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise XlsxError(f"cannot patch: {name} is not valid UTF-8") from exc


def _resolve(base_part: str, target: str) -> str:
    """Resolve a relationship target against the part that owns the .rels file."""
    if target.startswith("/"):
        return target.lstrip("/")
    return posixpath.normpath(posixpath.join(posixpath.dirname(base_part), target))


def _rels_part_of(part: str) -> str:
    """xl/workbook.xml → xl/_rels/workbook.xml.rels."""
    return posixpath.join(posixpath.dirname(part), "_rels", posixpath.basename(part) + ".rels")


def _parse_rels(xml: str) -> dict[str, tuple[str, str]]:
    """Relationship Id → (Type, Target) of a .rels part."""
    root = ElementTree.fromstring(xml)
    rels: dict[str, tuple[str, str]] = {}
    for el in root.iter(f"{{{NS_PKG_REL}}}Relationship"):
        if el.get("TargetMode") == "External":
            continue
        rels[el.get("Id", "")] = (el.get("Type", ""), el.get("Target", ""))
    return rels


def open_book(data: bytes) -> Book:
    """Parse the workbook-level parts of an .xlsx held in memory."""
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise XlsxError("is not a valid .xlsx workbook (not a zip archive)") from exc
    with zf:
        names = zf.namelist()
        by_lower = {n.lower(): n for n in names}
        try:
            ctypes_xml = _read_text(zf, by_lower["[content_types].xml"])
            workbook_part = "xl/workbook.xml"
            if "_rels/.rels" in by_lower:
                for rel_type, target in _parse_rels(
                    _read_text(zf, by_lower["_rels/.rels"])
                ).values():
                    if rel_type == REL_OFFICE_DOC:
                        workbook_part = target.lstrip("/")
            workbook_part = by_lower.get(workbook_part.lower(), workbook_part)
            workbook_xml = _read_text(zf, workbook_part)
            rels_part = by_lower.get(_rels_part_of(workbook_part).lower(), "")
            rels_xml = _read_text(zf, rels_part)
            wb_root = ElementTree.fromstring(workbook_xml)
            rels = _parse_rels(rels_xml)
        except KeyError as exc:
            raise XlsxError(f"is not a valid .xlsx workbook (missing {exc.args[0]})") from exc
        except (ElementTree.ParseError, *_ZIP_ERRORS) as exc:
            raise XlsxError(f"is not a valid .xlsx workbook ({exc})") from exc
    if "purl.oclc.org/ooxml" in workbook_xml:
        raise XlsxError("is saved as Strict Open XML; save it as a normal Excel Workbook (.xlsx)")
    sheets: list[SheetRef] = []
    calc_chain: str | None = None
    for rel_type, target in rels.values():
        if rel_type == REL_CALC_CHAIN:
            calc_chain = by_lower.get(_resolve(workbook_part, target).lower())
    for el in wb_root.iter(f"{{{NS_MAIN}}}sheet"):
        rel_type, target = rels.get(el.get(f"{{{NS_REL}}}id", ""), ("", ""))
        part = by_lower.get(_resolve(workbook_part, target).lower()) if target else None
        sheet_id = el.get("sheetId", "0")
        sheets.append(
            SheetRef(
                name=el.get("name", ""),
                sheet_id=int(sheet_id) if sheet_id.isdigit() else 0,
                part=part,
                rel_type=rel_type,
            )
        )
    return Book(
        data=data,
        names=names,
        workbook_part=workbook_part,
        workbook_xml=workbook_xml,
        rels_part=rels_part,
        rels_xml=rels_xml,
        ctypes_xml=ctypes_xml,
        sheets=sheets,
        calc_chain=calc_chain,
    )


def read_part(book: Book, part: str) -> str:
    """Read one XML part of the package as text."""
    with zipfile.ZipFile(io.BytesIO(book.data)) as zf:
        try:
            return _read_text(zf, part)
        except (KeyError, *_ZIP_ERRORS) as exc:
            raise XlsxError(f"cannot patch: cannot read {part} ({exc})") from exc


# --------------------------------------------------------------------------- worksheet


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
        row=re.compile(f"<{p}row(?=[\\s/>])({_ATTRS})(/?)>", re.S),
        cell=re.compile(f"<{p}c(?=[\\s/>])({_ATTRS})(?:/>|>(.*?)</{p}c\\s*>)", re.S),
        cell_tag=re.compile(f"<{p}c(?=[\\s/>])({_ATTRS})/?>", re.S),
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
        r = _attr(tm.group(1), "r")
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
        ref = _attr(mm.group(1), "ref") or ""
        parts = ref.split(":")
        try:
            (r1, c1), (r2, c2) = _parse_ref(parts[0]), _parse_ref(parts[-1])
        except XlsxError:
            continue
        sheet.merges.append((r1, c1, r2, c2))
    return sheet


def _cell_xml(prefix: str, ref: str, style: str | None, value: str | None) -> str:
    """One cell holding `value` as an inline string (or no value when value is empty)."""
    s_attr = f' s="{_escape_attr(style)}"' if style is not None else ""
    if not value:
        return f'<{prefix}c r="{ref}"{s_attr}/>'
    return (
        f'<{prefix}c r="{ref}"{s_attr} t="inlineStr"><{prefix}is>'
        f'<{prefix}t xml:space="preserve">{_escape_text(value)}</{prefix}t>'
        f"</{prefix}is></{prefix}c>"
    )


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
            ref = _attr(m.group(1), "r")
            return _parse_ref(ref)[1] if ref else None
        i = content.rfind(tag, 0, i)
    return -1


def _patch_row(
    sheet: SheetXml,
    span: tuple[int, int, int, int] | None,
    row_num: int,
    values: dict[int, str],
    new_style: str | None,
) -> tuple[str, bool]:
    """Set the cells of one <row> at the given columns; return (new xml, a formula was removed)."""
    prefix = sheet.prefix
    attrs, content = _row_parts(sheet, span, row_num)
    last = _last_cell_col(content, prefix)
    if last is not None and last < min(values):
        # Common case: every output cell goes after the row's last cell.
        new = [
            _cell_xml(prefix, f"{col_letter(col)}{row_num}", new_style, values[col])
            for col in sorted(values)
            if values[col] or new_style is not None
        ]
        if not new:
            return (sheet.text[span[0] : span[3]] if span else ""), False
        attrs = _drop_attr(attrs, "spans")  # spans is only a hint; stale spans confuse Excel
        return f"<{prefix}row{attrs}>{content}{''.join(new)}</{prefix}row>", False
    cells: list[tuple[int, str]] = []  # (col, xml)
    prev = -1
    removed_formula = False
    pending = dict(values)
    for cm in _patterns(prefix).cell.finditer(content):
        c_attrs, c_body = cm.group(1), cm.group(2) or ""
        ref = _attr(c_attrs, "r")
        col = _parse_ref(ref)[1] if ref else prev + 1
        prev = col
        if col in pending:
            if _SHARED_OR_ARRAY_F_RE.search(c_body):
                raise XlsxError(
                    f"cannot patch: cell {col_letter(col)}{row_num} in an output column holds "
                    "a shared or array formula; clear that column and try again"
                )
            removed_formula = removed_formula or bool(_FORMULA_RE.search(c_body))
            style = _attr(c_attrs, "s")
            value = pending.pop(col)
            if not value and style is None:
                continue  # an empty unstyled cell is the same as no cell
            xml = _cell_xml(prefix, f"{col_letter(col)}{row_num}", style, value)
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
            cells.append((col, _cell_xml(prefix, f"{col_letter(col)}{row_num}", new_style, value)))
    cells.sort(key=lambda c: c[0])
    if added:
        attrs = _drop_attr(attrs, "spans")
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
        ref = _attr(cm.group(1), "r")
        prev = _parse_ref(ref)[1] if ref else prev + 1
        if prev == col:
            return _attr(cm.group(1), "s")
    return None


def _new_dimension(sheet: SheetXml, bounds: tuple[int, int, int, int]) -> str:
    """The sheet text before <sheetData> with <dimension ref> widened to cover new cells."""
    head = sheet.text[: sheet.data_open[0]]
    m = _DIMENSION_RE.search(head)
    if not m:
        return head
    ref = _attr(m.group(1), "ref") or ""
    try:
        parts = [_parse_ref(p) for p in ref.split(":")]
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
) -> tuple[list[str], bool]:
    """Apply `writes` (row → column → text); return (the new text in pieces, a formula cell
    was overwritten). Pieces, not one string: a 100,000-row sheet is then never held whole
    twice over (joined, then encoded) on top of the original."""
    # New header cells get header_style; an overwritten formula means calcChain.xml must go.
    text = sheet.text
    p = sheet.prefix
    out: list[str] = []
    removed_formula = False
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
            row_xml, removed = _patch_row(sheet, span, row_num, values, style)
            removed_formula = removed_formula or removed
        else:
            start = end = sheet.row_spans[i][0] if i < len(sheet.row_nums) else sheet.data_close
            if sheet.self_closing:
                start = end = cursor
            row_xml, _ = _patch_row(sheet, None, row_num, values, style)
        out.append(text[cursor:start])
        out.append(row_xml)
        cursor = end
    if sheet.self_closing:
        out.append(f"</{p}sheetData>")
    out.append(text[cursor:])
    return out, removed_formula


# --------------------------------------------------------------------------- results sheet


def results_sheet_xml(headers: list[str], rows: list[list[object]]) -> Iterator[bytes]:
    """A standalone worksheet, encoded a block of rows at a time: a header row, then a row
    per job."""
    out = ['<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n']
    width = max([len(headers), *(len(r) for r in rows)]) or 1
    out.append(f'<worksheet xmlns="{NS_MAIN}">')
    out.append(f'<dimension ref="A1:{col_letter(width - 1)}{len(rows) + 1}"/>')
    out.append("<sheetData>")
    for n, values in enumerate([list(headers), *rows], start=1):
        out.append(f'<row r="{n}">')
        for c, value in enumerate(values):
            if type(value) is str and value:  # the common case, inlined for speed
                out.append(
                    f'<c r="{col_letter(c)}{n}" t="inlineStr"><is><t xml:space="preserve">'
                    f"{_escape_text(value)}</t></is></c>"
                )
            else:
                out.append(_results_cell(f"{col_letter(c)}{n}", value))
        out.append("</row>")
        if n % _ROWS_PER_BLOCK == 0:
            yield "".join(out).encode("utf-8")
            out = []
    out.append("</sheetData></worksheet>")
    yield "".join(out).encode("utf-8")


def encoded_blocks(pieces: list[str], size: int = 1 << 20) -> Iterator[bytes]:
    """UTF-8 blocks of about `size` characters made from `pieces` (consumed as it goes)."""
    block: list[str] = []
    length = 0
    pieces.reverse()  # pop from the end: each piece is released once encoded
    while pieces:
        piece = pieces.pop()
        block.append(piece)
        length += len(piece)
        if length >= size:
            yield "".join(block).encode("utf-8")
            block, length = [], 0
    yield "".join(block).encode("utf-8")


_ROWS_PER_BLOCK = 2000


def _results_cell(ref: str, value: object) -> str:
    """One results cell: numbers and booleans typed, everything else an inline string."""
    if value is None or value == "":
        return ""
    if isinstance(value, bool):
        return f'<c r="{ref}" t="b"><v>{int(value)}</v></c>'
    if isinstance(value, int | float) and math.isfinite(value):
        return f'<c r="{ref}"><v>{value!r}</v></c>'
    return _cell_xml("", ref, None, str(value))


# --------------------------------------------------------------------------- repackaging


def _insert_before_close(xml: str, tag: str, fragment: str) -> str:
    """Insert `fragment` before the last closing tag `tag` (any prefix)."""
    matches = list(re.finditer(r"</([\w.-]+:)?" + tag + r"\s*>", xml))
    if not matches:
        raise XlsxError(f"cannot patch: no </{tag}> in the package")
    m = matches[-1]
    return xml[: m.start()] + fragment.replace("{p}", m.group(1) or "") + xml[m.start() :]


def _add_results_sheet(book: Book, name: str) -> tuple[str, dict[str, str]]:
    """Register a new worksheet part; return its part name and the changed XML parts."""
    taken = {n.lower() for n in book.names}
    n = 1
    while f"xl/worksheets/sheet{n}.xml" in taken:
        n += 1
    part = f"xl/worksheets/sheet{n}.xml"
    rel_ids = set(re.findall(r"\sId\s*=\s*[\"']([^\"']+)", book.rels_xml))
    k = len(rel_ids) + 1
    while f"rId{k}" in rel_ids:
        k += 1
    rid = f"rId{k}"
    sheet_id = max([s.sheet_id for s in book.sheets] or [0]) + 1
    target = posixpath.relpath(part, posixpath.dirname(book.workbook_part) or ".")
    rels_xml = _insert_before_close(
        book.rels_xml,
        "Relationships",
        f'<{{p}}Relationship Id="{rid}" Type="{REL_WORKSHEET}" Target="{target}"/>',
    )
    m = re.search(r"xmlns:([\w.-]+)\s*=\s*[\"']" + re.escape(NS_REL) + "[\"']", book.workbook_xml)
    r_prefix, r_decl = (m.group(1), "") if m else ("r", f' xmlns:r="{NS_REL}"')
    workbook_xml = _insert_before_close(
        book.workbook_xml,
        "sheets",
        f'<{{p}}sheet name="{_escape_attr(name)}" sheetId="{sheet_id}"{r_decl} '
        f'{r_prefix}:id="{rid}"/>',
    )
    ctypes_xml = _insert_before_close(
        book.ctypes_xml,
        "Types",
        f'<{{p}}Override PartName="/{part}" ContentType="{CT_WORKSHEET}"/>',
    )
    return part, {
        book.rels_part: rels_xml,
        book.workbook_part: workbook_xml,
        _ctypes_name(book): ctypes_xml,
    }


def _ctypes_name(book: Book) -> str:
    """The exact zip name of [Content_Types].xml."""
    return next(n for n in book.names if n.lower() == "[content_types].xml")


def _drop_calc_chain(book: Book, changed: dict[str, str]) -> None:
    """Forget xl/calcChain.xml: Excel rebuilds it, and a stale one makes Excel 'repair' the file."""
    assert book.calc_chain is not None
    rels = changed.get(book.rels_part, book.rels_xml)
    changed[book.rels_part] = _remove_empty_elements(
        rels, "Relationship", lambda attrs: _attr(attrs, "Type") == REL_CALC_CHAIN
    )
    ct_name = _ctypes_name(book)
    ctypes = changed.get(ct_name, book.ctypes_xml)
    part = "/" + book.calc_chain.lower()
    changed[ct_name] = _remove_empty_elements(
        ctypes, "Override", lambda attrs: (_attr(attrs, "PartName") or "").lower() == part
    )


def _remove_empty_elements(xml: str, tag: str, doomed: Callable[[str], bool]) -> str:
    """Remove the empty elements <tag .../> whose attribute string satisfies `doomed`."""
    pattern = re.compile(r"<(?:[\w.-]+:)?" + tag + r"(?=\s)(" + _ATTRS + r")/>")
    return pattern.sub(lambda m: "" if doomed(m.group(1)) else m.group(0), xml)


def results_sheet_part(book: Book, *, sheet_part: str, name: str) -> str | None:
    """The part of an existing results sheet called `name` (None: there is none yet), or an
    XlsxError if that sheet cannot take the results."""
    existing = next((s for s in book.sheets if s.name.lower() == name.lower()), None)
    if existing is None:
        return None
    if existing.part is None or existing.rel_type != REL_WORKSHEET:
        raise XlsxError(f"cannot patch: sheet {existing.name!r} is not a plain worksheet")
    if existing.part == sheet_part:
        raise XlsxError(f"cannot write results into the sheet being processed ({existing.name!r})")
    return existing.part


def repackage(
    book: Book,
    *,
    sheet_part: str,
    sheet_xml: Iterable[bytes],
    results_name: str | None,
    results_xml: Iterable[bytes] | None,
    drop_calc_chain: bool,
) -> bytes:
    """Build the new package: every entry copied unchanged except the parts we patch."""
    replaced: dict[str, bytes | Iterable[bytes]] = {sheet_part: sheet_xml}
    changed_text: dict[str, str] = {}
    new_part: str | None = None
    if results_xml is not None and results_name is not None:
        existing = results_sheet_part(book, sheet_part=sheet_part, name=results_name)
        if existing is None:
            new_part, changed_text = _add_results_sheet(book, results_name)
        else:
            replaced[existing] = results_xml
    skip: set[str] = set()
    if drop_calc_chain and book.calc_chain is not None:
        _drop_calc_chain(book, changed_text)
        skip.add(book.calc_chain)
    for name, text in changed_text.items():
        replaced[name] = text.encode("utf-8")
    buf = io.BytesIO()
    try:
        with (
            zipfile.ZipFile(io.BytesIO(book.data)) as src,
            zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as dst,
        ):
            for info in src.infolist():
                if info.filename in skip:
                    continue
                data = replaced.get(info.filename)
                if data is None:
                    data = src.read(info)
                _write_entry(dst, _copy_info(info), data)
            if new_part is not None and results_xml is not None:
                _write_entry(dst, _copy_info(zipfile.ZipInfo(new_part)), results_xml)
    except _ZIP_ERRORS as exc:
        raise XlsxError(f"cannot patch: {exc}") from exc
    return buf.getvalue()


def _write_entry(
    dst: zipfile.ZipFile, info: zipfile.ZipInfo, data: bytes | Iterable[bytes]
) -> None:
    """One zip entry: bytes at once, an iterable of blocks streamed (never held whole)."""
    if isinstance(data, bytes):
        dst.writestr(info, data, compresslevel=_level(data))
        return
    # streamed parts are the big ones: zlib level 1 (the attribute's name varies by Python)
    try:
        info.compress_level = 1  # type: ignore[attr-defined]
    except AttributeError:
        info._compresslevel = 1  # type: ignore[attr-defined]
    with dst.open(info, "w") as handle:
        for block in data:
            handle.write(block)


def _level(data: bytes) -> int:
    """zlib level: fast for big parts (4x quicker, ~15% larger), default for the rest."""
    return 1 if len(data) > 1_000_000 else 6


def _copy_info(info: zipfile.ZipInfo) -> zipfile.ZipInfo:
    """A fresh ZipInfo with the entry's name, time and attributes, always deflated."""
    new = zipfile.ZipInfo(info.filename, info.date_time)
    new.compress_type = zipfile.ZIP_DEFLATED
    new.external_attr = info.external_attr
    new.create_system = info.create_system
    return new
