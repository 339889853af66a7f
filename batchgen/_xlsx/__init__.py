"""Patch an .xlsx package in place of a round-trip: only the touched XML parts change.

openpyxl would drop formula cached values, charts and images, and is slow on big sheets,
so the writer edits the worksheet XML as text and copies every other zip entry unchanged.
`book` reads the package, `worksheet` finds and patches rows, `package` adds the results
sheet and writes the new zip; `styles` copies cell styles so multi-line cells wrap; `markup`
holds the XML helpers they share; `bounds` checks a workbook against batchgen's size limits
before anything reads it; `rowmarks` finds the rows that are not plain data (a Table's
totals rows, hidden rows); `layout` reads hidden columns and the sheet's and workbook's
protection.
"""

from batchgen._xlsx.book import Book, SheetRef, open_book, read_part
from batchgen._xlsx.bounds import check_package, check_worksheet
from batchgen._xlsx.layout import (
    Columns,
    parse_columns,
    sheet_protected,
    structure_locked,
    unlocked_styles,
)
from batchgen._xlsx.markup import REL_WORKSHEET, XlsxError, col_index, col_letter
from batchgen._xlsx.package import (
    encoded_blocks,
    repackage,
    results_sheet_part,
    results_sheet_xml,
)
from batchgen._xlsx.rowmarks import HIDDEN_BY_HAND, Filter, RowMarks, row_marks
from batchgen._xlsx.styles import WrapStyles
from batchgen._xlsx.worksheet import SheetXml, parse_sheet, patch_sheet, style_of

__all__ = [
    "HIDDEN_BY_HAND",
    "REL_WORKSHEET",
    "Book",
    "Columns",
    "Filter",
    "RowMarks",
    "SheetRef",
    "SheetXml",
    "WrapStyles",
    "XlsxError",
    "check_package",
    "check_worksheet",
    "col_index",
    "col_letter",
    "encoded_blocks",
    "open_book",
    "parse_columns",
    "parse_sheet",
    "patch_sheet",
    "read_part",
    "repackage",
    "results_sheet_part",
    "results_sheet_xml",
    "row_marks",
    "sheet_protected",
    "structure_locked",
    "style_of",
    "unlocked_styles",
]
