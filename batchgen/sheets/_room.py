"""Whether a sheet has room for its results: columns a person can see and type into, a
workbook that takes a new worksheet, and a disk with space for the write-back."""

from __future__ import annotations

import bisect
import os
import zipfile
from collections.abc import Callable
from io import BytesIO
from pathlib import Path

from batchgen._outputcols import EXCEL_COLUMNS, Blocked
from batchgen.sheets._table import RESULTS_SHEET, Table, _fail

# what one job may add to the sheet's output cells and to its results table, beyond its
# inputs: a request id, a status, a video link, an error, the markup around them (a
# 1,000-row sheet grew by about 200 bytes a job as an .xlsx, 560 as a CSV with its results)
_BYTES_PER_JOB = 1024
_SLACK = 256 << 10  # the zip directory, a file system's blocks: never cut it fine


def blocked_columns(table: Table) -> Blocked | None:
    """Why a column of an .xlsx cannot show a result: hidden, or merged in a row written."""
    sheet = table._sheet
    if table.kind != "xlsx" or sheet is None:
        return None
    from batchgen import _xlsx

    columns = _xlsx.parse_columns(sheet.text, sheet.data_open[0])
    in_data: dict[int, str] = {}  # column → why, for every row written
    in_header: dict[int, str] = {}  # merged in the header row: only a new column minds
    for first, last in columns.hidden:
        last = min(last, _LAST_COLUMN)
        span = _span(first, last)
        why = f"hidden column {span}" if first == last else f"hidden columns {span}"
        for col in range(max(first, 0), last + 1):
            in_data.setdefault(col, why)
    rows = sorted(row.number for row in table.rows)
    for r1, c1, r2, c2 in sheet.merges:
        ref = f"{_xlsx.col_letter(c1)}{r1}:{_xlsx.col_letter(c2)}{r2}"
        i = bisect.bisect_left(rows, r1)
        where = in_data if i < len(rows) and rows[i] <= r2 else None
        if where is None and r1 <= table.header_row <= r2:
            where = in_header
        if where is None:
            continue  # above the header, or between rows batchgen writes
        for col in range(c1, min(c2, _LAST_COLUMN) + 1):
            where.setdefault(col, f"merged range {ref}")

    def blocked(col: int, new: bool) -> str | None:
        return in_data.get(col) or (in_header.get(col) if new else None)

    return blocked


_LAST_COLUMN = EXCEL_COLUMNS - 1  # XFD, 0-based


def _span(first: int, last: int) -> str:
    from batchgen import _xlsx

    if first == last:
        return _xlsx.col_letter(first)
    return f"{_xlsx.col_letter(first)}–{_xlsx.col_letter(last)}"


def refuse_locked(
    table: Table, writes: Callable[[], dict[int, dict[int, str]]], header_style: str | None
) -> None:
    """Raise SheetError if the worksheet is protected and a cell batchgen writes is locked.

    A protected sheet is one its author locked against typing: batchgen could write behind
    the protection's back, but writes only cells a person could type into (unlocked ones).
    """
    from batchgen import _xlsx

    sheet, book = table._sheet, table._book
    assert sheet is not None and book is not None
    if not _xlsx.sheet_protected(sheet.text, sheet.data_close):
        return
    columns = _xlsx.parse_columns(sheet.text, sheet.data_open[0])
    unlocked = _xlsx.unlocked_styles(book)
    cells = writes()
    for row_num in sorted(cells):
        for col in sorted(cells[row_num]):
            style = _xlsx.style_of(sheet, row_num, col)
            if style is None:  # a cell batchgen adds takes the header's or the column's format
                style = header_style if row_num == table.header_row else columns.style(col)
            if (style or "0") not in unlocked:
                cell = f"{_xlsx.col_letter(col)}{row_num}"
                raise _fail(
                    table.path,
                    f"worksheet {table.sheet_name!r} is protected and cell {cell}, where a "
                    "result goes, is locked: batchgen writes only cells a person could type "
                    "into; unprotect the sheet (Review → Unprotect Sheet) or unlock the cells "
                    "it writes (Format Cells → Protection), then run again",
                )


def refuse_locked_structure(table: Table) -> None:
    """Raise SheetError if the results worksheet must be added to a workbook whose
    structure is protected (Excel allows no new worksheet then)."""
    from batchgen import _xlsx

    book = table._book
    assert book is not None
    if not _xlsx.structure_locked(book):
        return
    if _xlsx.results_sheet_part(book, sheet_part=table._sheet_part, name=RESULTS_SHEET):
        return  # the results worksheet is there already: its cells are replaced, none added
    raise _fail(
        table.path,
        f"the workbook's structure is protected (Review → Protect Workbook), so batchgen "
        f"cannot add its {RESULTS_SHEET!r} worksheet; unprotect the workbook, then run again",
    )


def needed_bytes(table: Table, jobs: int) -> int:
    """A safe estimate of the disk space the write-back takes while it runs.

    The new sheet is written beside the old one before it replaces it (and a CSV's results
    file beside its old one): twice the old file's size (an .xlsx's untouched parts are
    packed again, at a faster and looser level), plus every job's output cells and results
    row, its inputs counted in full (uncompressed, for an .xlsx).
    """
    if table._book is not None:
        size = len(table._book.data)
        with zipfile.ZipFile(BytesIO(table._book.data)) as zf:
            text = sum(info.file_size for info in zf.infolist())
    else:  # a CSV's results file is written in the sheet's own encoding
        try:
            size = text = table.path.stat().st_size
        except OSError:
            size = text = 0
    per_row = max(1.0, jobs / max(1, len(table.rows)))  # a row of variants makes many jobs
    inputs = int(text * per_row)
    return 2 * size + inputs + jobs * _BYTES_PER_JOB + _SLACK


def refuse_no_room(table: Table, target: Path, jobs: int) -> None:
    """Raise SheetError if the folder written into has too little free space for the
    write-back (a full disk found after paying would leave the results unwritten)."""
    folder = Path(os.path.realpath(target)).parent
    try:
        st = os.statvfs(folder)
    except (OSError, AttributeError):  # no statvfs (Windows) or no folder: the write will say
        return
    free = st.f_bavail * st.f_frsize
    need = needed_bytes(table, jobs)
    if free < need:
        raise _fail(
            target,
            f"no room for the results: the write-back needs about {_size(need)} in "
            f"{folder} (the new sheet and its results, written beside the old ones before "
            f"they replace them) and {_size(free)} is free; free some space or write "
            "elsewhere with --output",
        )


def _size(n: int) -> str:
    """Bytes as a person reads them: 1.2 MB."""
    for unit, scale in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"
