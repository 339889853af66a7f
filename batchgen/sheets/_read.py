"""Reading a sheet: the file's kind, its header row, its rows (pandas/calamine or csv)."""

from __future__ import annotations

import io
import os
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from batchgen import _csvfile
from batchgen.errors import SheetError
from batchgen.sheets._marks import marked_rows
from batchgen.sheets._table import (
    _CSV_SUFFIXES,
    _OLE2_MAGIC,
    _XLSX_SUFFIXES,
    _ZIP_MAGIC,
    HEADER_SCAN_ROWS,
    MAX_CELL_CHARS,
    RESULTS_SHEET,
    Fingerprint,
    HeaderRule,
    Row,
    Table,
    _fail,
    content_digest,
)

if TYPE_CHECKING:
    from batchgen import _xlsx


def load_sheet(
    path: str | Path,
    *,
    sheet_name: str | None = None,
    header: HeaderRule | None = None,
    encoding: str | None = None,
) -> Table:
    """Read the first worksheet of an .xlsx (or `sheet_name`), or a .csv."""
    p = Path(path)
    data, info = _read_file(p)
    kind = kind_of(p)
    rule = header or HeaderRule()
    mode = info.st_mode & 0o7777
    if kind == "csv":
        table = _load_csv(p, data, mode, rule, encoding)
    else:
        table = _load_xlsx(p, data, mode, sheet_name, rule)
    table.loaded_digest = content_digest(data)
    table.seen = Fingerprint.of(info, data)
    return table


def _read_file(p: Path) -> tuple[bytes, os.stat_result]:
    """The file's bytes and its stat (taken from the file read), or a SheetError saying why not."""
    if not p.exists():
        raise _fail(p, "no such file")
    if p.is_dir():
        raise _fail(p, "is a directory, not a sheet file")
    try:
        with p.open("rb") as handle:
            info = os.fstat(handle.fileno())
            data = handle.read()
    except OSError as exc:
        raise _fail(p, f"cannot be read ({exc.strerror or exc})") from exc
    if not data:
        raise _fail(p, "is empty (0 bytes)")
    return data, info


def kind_of(p: Path) -> str:
    """'csv' or 'xlsx' from the file name."""
    suffix = p.suffix.lower()
    if suffix in _CSV_SUFFIXES:
        return "csv"
    if suffix in _XLSX_SUFFIXES:
        return "xlsx"
    if suffix == ".xls":
        raise _fail(p, "is an old .xls file; save it as .xlsx")
    raise _fail(p, f"unsupported file type {suffix or '(no extension)'!r}; use .xlsx or .csv")


def _is_blank(value: object) -> bool:
    """An empty or whitespace-only cell."""
    return value is None or (isinstance(value, str) and not value.strip())


def _last_used(values: list[object]) -> int:
    """1 + index of the last non-blank value (0 when all are blank)."""
    for i in range(len(values) - 1, -1, -1):
        if not _is_blank(values[i]):
            return i + 1
    return 0


def _find_header(
    p: Path, grid: list[list[object]], used: list[int], rule: HeaderRule
) -> tuple[int, bool]:
    """(0-based header row, whether it passed the test): a fixed row, or the first that does.

    Without a passing row the first non-blank row is taken, and the caller's missing-columns
    error names it.
    """
    if rule.row is not None:
        index = rule.row - 1
        if index >= len(grid) or not used[index]:
            last = len(grid)
            raise _fail(p, f"header row {rule.row} is blank or past the last row ({last})")
        return index, True
    candidates = [i for i, n in enumerate(used) if n][:HEADER_SCAN_ROWS]
    if rule.test is not None:
        for i in candidates:
            if rule.test([_header_text(v) for v in grid[i][: used[i]]]):
                return i, True
    return candidates[0], rule.test is None


def _header_text(value: object) -> str:
    """A header cell as text ('' for empty)."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _build(
    p: Path, grid: list[list[object]], empty_problem: str, rule: HeaderRule
) -> tuple[int, list[str], list[Row], int, bool]:
    """Find the header; return (header_row, headers, rows, append_at, found)."""
    used = [_last_used(row) for row in grid]
    if not any(used):
        raise _fail(p, empty_problem)
    header_index, found = _find_header(p, grid, used, rule)
    width = max(used[header_index:])  # unlabeled data columns count too
    header = list(grid[header_index][:width])
    header += [None] * (width - len(header))
    headers = [_header_text(v) for v in header]
    rows = []
    pad = (None,) * width
    for i in range(header_index + 1, len(grid)):
        if used[i]:
            values = tuple(grid[i][:width])
            if len(values) < width:
                values += pad[len(values) :]
            rows.append(Row(number=i + 1, values=values))
    # Output columns go after every cell holding anything, even whitespace, so none is lost.
    present = max((_last_present(row) for row in grid[header_index:]), default=0)
    return header_index + 1, headers, rows, max(width, present), found


def _last_present(values: list[object]) -> int:
    """1 + index of the last cell that is not empty (whitespace counts)."""
    for i in range(len(values) - 1, -1, -1):
        if values[i] is not None:
            return i + 1
    return 0


def _load_csv(p: Path, data: bytes, mode: int, rule: HeaderRule, encoding: str | None) -> Table:
    """Load a CSV with its dialect remembered for write-back."""
    if data.startswith(_ZIP_MAGIC):
        raise _fail(p, "looks like an Excel workbook, not a CSV; rename it to .xlsx")
    if data.startswith(_OLE2_MAGIC):
        raise _fail(p, "is an Excel binary or password-protected file, not a CSV")
    try:
        doc = _csvfile.parse(data, encoding=encoding)
    except _csvfile.CsvError as exc:
        raise _fail(p, str(exc)) from exc
    grid: list[list[object]] = [[v if v != "" else None for v in rec] for rec in doc.fields]
    header_row, headers, rows, append_at, found = _build(
        p, grid, "is empty (no non-blank row)", rule
    )
    return Table(
        path=p,
        kind="csv",
        sheet_name=None,
        header_row=header_row,
        headers=headers,
        rows=rows,
        _mode=mode,
        _csv=doc,
        _append_at=append_at,
        bad_cells=_bad_csv_cells(doc, headers, header_row),
        header_found=found,
    )


def _bad_csv_cells(
    doc: _csvfile.CsvDoc, headers: list[str], header_row: int
) -> dict[int, list[tuple[str, str]]]:
    """Data rows holding a NUL character or a cell over MAX_CELL_CHARS, with the rule broken."""
    bad: dict[int, list[tuple[str, str]]] = {}
    for index, raw in enumerate(doc.records):
        # a record's raw text bounds its fields: most records are passed over in C
        if index < header_row or (len(raw) <= MAX_CELL_CHARS and "\x00" not in raw):
            continue
        for col, value in enumerate(doc.fields[index]):
            header = headers[col] if col < len(headers) and headers[col] else f"column {col + 1}"
            if "\x00" in value:
                rule = "holds a NUL character (byte 0), which a sheet cannot keep; remove it"
                bad.setdefault(index + 1, []).append((header, rule))
            elif len(value) > MAX_CELL_CHARS:
                rule = f"holds {len(value):,} characters; a cell holds at most {MAX_CELL_CHARS:,}"
                bad.setdefault(index + 1, []).append((header, rule))
    return bad


def _load_xlsx(p: Path, data: bytes, mode: int, sheet_name: str | None, rule: HeaderRule) -> Table:
    """Load one worksheet through pandas+calamine and index its XML for write-back."""
    if data.startswith(_OLE2_MAGIC):
        raise _fail(p, "is password-protected or an old .xls file; save it as .xlsx")
    if not data.startswith(_ZIP_MAGIC):
        raise _fail(p, "is not a valid .xlsx workbook")
    from batchgen import _xlsx

    try:
        _xlsx.check_package(data)  # sizes and packing, before anything inflates a part
        book = _xlsx.open_book(data)
    except _xlsx.XlsxError as exc:
        raise _fail(p, str(exc)) from exc
    if sheet_name is None:
        # The first worksheet, skipping chart sheets (pandas would pick those too).
        first = next((s for s in book.sheets if s.rel_type == _xlsx.REL_WORKSHEET), None)
        if first is None:
            raise _fail(p, "has no worksheets")
        sheet_name = first.name
    name, grid = _read_grid(p, book, sheet_name)
    ref = next((s for s in book.sheets if s.name == name), None)
    if ref is None or ref.part is None or ref.rel_type != _xlsx.REL_WORKSHEET:
        raise _fail(p, f"cannot patch: sheet {name!r} is not a plain worksheet")
    try:
        sheet = _xlsx.parse_sheet(_xlsx.read_part(book, ref.part))
    except _xlsx.XlsxError as exc:
        raise _fail(p, str(exc)) from exc
    header_row, headers, rows, append_at, found = _build(
        p, grid, f"sheet {name!r} has no non-blank row", rule
    )
    rows, totals, hidden = marked_rows(book, ref.part, sheet, header_row, headers, rows)
    others = [s.name for s in book.sheets if s.rel_type == _xlsx.REL_WORKSHEET and s.name != name]
    # Never append into a merged block that covers the header row.
    merged_end = [c2 + 1 for r1, _, r2, c2 in sheet.merges if r1 <= header_row <= r2]
    return Table(
        path=p,
        kind="xlsx",
        sheet_name=name,
        header_row=header_row,
        headers=headers,
        rows=rows,
        _mode=mode,
        _book=book,
        _sheet_part=ref.part,
        _sheet=sheet,
        _append_at=max([append_at, *merged_end]),
        other_sheets=[n for n in others if n != RESULTS_SHEET],
        header_found=found,
        totals_rows=totals,
        hidden_rows=hidden,
    )


def _read_grid(p: Path, book: _xlsx.Book, sheet_name: str) -> tuple[str, list[list[object]]]:
    """Cached cell values of one worksheet; grid[i] is sheet row i+1."""
    import pandas as pd  # deferred: pandas takes a noticeable time to import

    from batchgen import _xlsx

    refs = [s for s in book.sheets if s.name == sheet_name] or [
        s for s in book.sheets if s.name.casefold() == sheet_name.casefold()
    ]
    if refs and refs[0].part is not None:
        try:  # calamine would build the whole block from A1 to the last cell
            _xlsx.check_worksheet(book.data, refs[0].part, refs[0].name)
        except _xlsx.XlsxError as exc:
            raise _fail(p, str(exc)) from exc
    try:
        xl = pd.ExcelFile(io.BytesIO(book.data), engine="calamine")
        names = [str(n) for n in xl.sheet_names]
        matches = [n for n in names if n == sheet_name] or [
            n for n in names if n.casefold() == sheet_name.casefold()
        ]
        if not matches:
            listed = ", ".join(repr(n) for n in names)
            raise _fail(p, f"no worksheet named {sheet_name!r}; sheets: {listed}")
        name = matches[0]
        # No NA guessing: a cell reading "NULL" or "NA" is text, not an empty cell.
        frame = pd.read_excel(
            xl,
            sheet_name=name,
            header=None,
            dtype=object,
            keep_default_na=False,
            na_filter=False,
        )
    except SheetError:
        raise
    except Exception as exc:  # calamine and pandas raise many types; none may escape
        raise _fail(p, f"is not a readable .xlsx workbook ({type(exc).__name__}: {exc})") from exc
    return name, [_convert_row(row) for row in frame.to_numpy(dtype=object).tolist()]


def _convert_row(row: list[object]) -> list[object]:
    """Cells as plain Python values with None for empty; inlined checks for speed."""
    out: list[object] = []
    for value in row:
        kind = type(value)
        if kind is str:
            out.append(value or None)
        elif kind is float:
            out.append(None if value != value else value)  # NaN marks an empty cell
        elif value is None or kind is int or kind is bool or kind is datetime:
            out.append(value)
        else:
            out.append(_cell(value))
    return out


def _cell(value: object) -> object:
    """An unusual pandas cell (Timestamp, numpy scalar, NaT) as a plain Python value."""
    if isinstance(value, datetime):
        to_py = getattr(value, "to_pydatetime", None)  # pandas Timestamp → datetime
        return to_py() if callable(to_py) else value
    if str(value) in ("NaT", "<NA>", "nan"):
        return None
    item = getattr(value, "item", None)  # numpy scalars → Python scalars
    return item() if callable(item) else value
