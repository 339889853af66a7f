"""What a worksheet's layout says about where results may go: hidden columns, protection.

Read from the XML as text (the parts are already in memory): `<cols>` before `<sheetData>`,
`<sheetProtection>` after it, `<workbookProtection>` in the workbook and the cell formats'
`<protection locked>` in the styles part.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from xml.etree import ElementTree

from batchgen._xlsx.book import Book, read_part
from batchgen._xlsx.markup import ATTRS, NS_MAIN, XlsxError, attr

_COL_RE = re.compile(r"<(?:[\w.-]+:)?col(?=[\s/>])(" + ATTRS + r")/?>", re.S)
_SHEET_PROTECTION_RE = re.compile(r"<(?:[\w.-]+:)?sheetProtection(?=[\s/>])(" + ATTRS + r")/?>")
_BOOK_PROTECTION_RE = re.compile(r"<(?:[\w.-]+:)?workbookProtection(?=[\s/>])(" + ATTRS + r")/?>")


def _true(value: str | None) -> bool:
    """An xsd:boolean attribute's value ('1' or 'true')."""
    return value is not None and value.strip().lower() in ("1", "true")


@dataclass
class Columns:
    """The `<col>` ranges of a worksheet: hidden ones, and the cell format each gives."""

    hidden: list[tuple[int, int]] = field(default_factory=list)  # 0-based, inclusive
    styles: list[tuple[int, int, str]] = field(default_factory=list)  # first, last, s

    def is_hidden(self, col: int) -> bool:
        """Whether the 0-based column `col` is hidden (or zero wide)."""
        return any(first <= col <= last for first, last in self.hidden)

    def style(self, col: int) -> str | None:
        """The column's own cell format (what a cell typed into it gets), if it has one."""
        return next((s for first, last, s in self.styles if first <= col <= last), None)


def parse_columns(text: str, data_start: int) -> Columns:
    """The `<col>` elements before `<sheetData>` (which begins at `data_start`).

    A column is hidden by `hidden="1"`, which is also how Excel and LibreOffice mark the
    columns of a collapsed outline group, or by a zero width.
    """
    columns = Columns()
    for m in _COL_RE.finditer(text, 0, data_start):
        attrs = m.group(1)
        try:
            first, last = int(attr(attrs, "min") or ""), int(attr(attrs, "max") or "")
        except ValueError:
            continue
        try:
            zero_wide = float(attr(attrs, "width") or "1") == 0
        except ValueError:
            zero_wide = False
        if _true(attr(attrs, "hidden")) or zero_wide:
            columns.hidden.append((first - 1, last - 1))
        style = attr(attrs, "style")
        if style and style != "0":
            columns.styles.append((first - 1, last - 1, style))
    return columns


def sheet_protected(text: str, data_end: int) -> bool:
    """Whether the worksheet is protected (`<sheetProtection sheet="1">` after `<sheetData>`)."""
    m = _SHEET_PROTECTION_RE.search(text, data_end)
    return m is not None and _true(attr(m.group(1), "sheet"))


def structure_locked(book: Book) -> bool:
    """Whether the workbook's structure is protected: no worksheet may be added."""
    m = _BOOK_PROTECTION_RE.search(book.workbook_xml)
    return m is not None and _true(attr(m.group(1), "lockStructure"))


def unlocked_styles(book: Book) -> set[str]:
    """The cell formats (`s` values) whose cells are unlocked; every other one is locked."""
    if book.styles_part is None:
        return set()
    try:
        root = ElementTree.fromstring(read_part(book, book.styles_part))
    except (XlsxError, ElementTree.ParseError):
        return set()
    xfs = root.find(f"{{{NS_MAIN}}}cellXfs")
    unlocked: set[str] = set()
    for index, xf in enumerate(xfs if xfs is not None else []):
        protection = xf.find(f"{{{NS_MAIN}}}protection")
        if protection is not None and protection.get("locked", "1").lower() in ("0", "false"):
            unlocked.add(str(index))
    return unlocked
