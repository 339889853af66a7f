"""Load a prompt sheet (.xlsx or .csv) and write job results back into it.

This is the only module that touches pandas or spreadsheet formats. Reading goes through
pandas (calamine for .xlsx) or the csv module; writing patches the original bytes captured
at load time, so every write is a pure function of (loaded file, cells, results): repeated
calls are idempotent, and edits made to the file on disk during a run are overwritten.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from batchgen import _csvfile, _outputcols
from batchgen._text import strip_illegal
from batchgen.errors import SheetError
from batchgen.paths import shown

if TYPE_CHECKING:  # imported where an .xlsx is read or written: a CSV run does without it
    from batchgen import _xlsx

OUTPUT_COLUMNS = ("request_id", "status", "video_url", "error")
RESULTS_SHEET = "batchgen_results"
_CHECK_PREFIX = ".batchgen-check-"

_CSV_SUFFIXES = (".csv", ".tsv")
_XLSX_SUFFIXES = (".xlsx", ".xlsm")
_OLE2_MAGIC = b"\xd0\xcf\x11\xe0"
_ZIP_MAGIC = b"PK\x03\x04"
# Excel's own limit on the characters of one cell; a CSV cell beyond it makes its row invalid
MAX_CELL_CHARS = 32_767


@dataclass
class Row:
    """One non-blank data row of the sheet."""

    number: int  # 1-based row number as Excel shows it (CSV: record number, header included)
    values: tuple[object, ...]  # aligned with Table.headers; None for an empty cell


@dataclass
class Table:
    """A loaded sheet: header, data rows, and what write_back needs to patch the file."""

    path: Path
    kind: str  # "csv" or "xlsx"
    sheet_name: str | None
    header_row: int
    headers: list[str]
    rows: list[Row]
    _mode: int = field(default=0o644, repr=False, compare=False)
    _csv: _csvfile.CsvDoc | None = field(default=None, repr=False, compare=False)
    _book: _xlsx.Book | None = field(default=None, repr=False, compare=False)
    _sheet_part: str = field(default="", repr=False, compare=False)
    _sheet: _xlsx.SheetXml | None = field(default=None, repr=False, compare=False)
    _append_at: int = field(default=0, repr=False, compare=False)
    # row number → (header, rule) of cells no job may be made of (a NUL, a huge CSV cell)
    bad_cells: dict[int, list[tuple[str, str]]] = field(default_factory=dict)
    _outputs: _outputcols.ColumnPlan | None = field(default=None, repr=False, compare=False)
    other_sheets: list[str] = field(default_factory=list)  # the workbook's other worksheets
    header_found: bool = True  # False: no row named the required columns (the first was taken)


@dataclass
class Results:
    """The per-job table written beside the sheet (a worksheet or NAME.results.csv)."""

    headers: list[str]
    rows: list[list[object]]


# --------------------------------------------------------------------------- loading


HeaderTest = Callable[[list[str]], bool]
# title, blank and group-header rows above the header: a header further down is not sought
HEADER_SCAN_ROWS = 50


@dataclass(frozen=True)
class HeaderRule:
    """How to find the header: a fixed row (--header-row), or the first row passing a test."""

    row: int | None = None
    test: HeaderTest | None = None


def load_sheet(
    path: str | Path,
    *,
    sheet_name: str | None = None,
    header: HeaderRule | None = None,
    encoding: str | None = None,
) -> Table:
    """Read the first worksheet of an .xlsx (or `sheet_name`), or a .csv."""
    p = Path(path)
    data, mode = _read_file(p)
    kind = _kind_of(p)
    rule = header or HeaderRule()
    if kind == "csv":
        return _load_csv(p, data, mode, rule, encoding)
    return _load_xlsx(p, data, mode, sheet_name, rule)


def _fail(path: Path, problem: str) -> SheetError:
    """A SheetError whose one line names the file and the problem."""
    return SheetError(f"{shown(path)}: {' '.join(problem.split())}")


def _read_file(p: Path) -> tuple[bytes, int]:
    """The file's bytes and permission bits, or a SheetError saying why not."""
    if not p.exists():
        raise _fail(p, "no such file")
    if p.is_dir():
        raise _fail(p, "is a directory, not a sheet file")
    try:
        data = p.read_bytes()
        mode = p.stat().st_mode & 0o7777
    except OSError as exc:
        raise _fail(p, f"cannot be read ({exc.strerror or exc})") from exc
    if not data:
        raise _fail(p, "is empty (0 bytes)")
    return data, mode


def _kind_of(p: Path) -> str:
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


# --------------------------------------------------------------------------- writing


def check_writable(table: Table, *, output: str | Path | None = None) -> None:
    """Raise SheetError now if write_back could not write this sheet (nothing is written).

    A run calls this before it submits anything: a results file it could not write would
    otherwise be found out only after the jobs were paid for.
    """
    target = _target(table, output)
    _refuse_read_only(target)
    if table.kind == "csv":
        _refuse_read_only(results_path(target))
    folder = target.parent
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=_CHECK_PREFIX):
            pass
    except OSError as exc:
        raise _fail(target, f"cannot write into {folder}: {exc.strerror or exc}") from exc
    if table.kind == "xlsx":
        from batchgen import _xlsx

        assert table._book is not None
        try:
            _xlsx.results_sheet_part(table._book, sheet_part=table._sheet_part, name=RESULTS_SHEET)
        except _xlsx.XlsxError as exc:
            raise _fail(table.path, str(exc)) from exc
        _dry_patch(table)


def _dry_patch(table: Table) -> None:
    """Patch every data row's output cells in memory: a cell that cannot be written (a shared
    or array formula) is found before anything is paid for, not at the final write."""
    from batchgen import _xlsx

    sheet = table._sheet
    assert sheet is not None
    text = sheet.text
    if 't="shared"' not in text and 't="array"' not in text and "t='" not in text:
        return  # no shared or array formula anywhere: nothing a patch could refuse
    positions, _ = _column_plan(table)
    columns = sorted(positions.values())
    writes = {row.number: dict.fromkeys(columns, "x") for row in table.rows}
    try:
        _xlsx.patch_sheet(sheet, writes, header_row=table.header_row, header_style=None)
    except _xlsx.XlsxError as exc:
        raise _fail(table.path, f"{exc} (found before anything was sent)") from exc


def _refuse_read_only(path: Path) -> None:
    """Raise SheetError if `path` is a file marked read-only (its folder may still let a
    rename replace it, and root may write anything: the mark is what the owner meant)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:  # not there yet (a new --output), or unreadable: the write will say
        return
    if mode & 0o222 == 0 or not os.access(path, os.W_OK):
        raise _fail(
            path,
            "is read-only; make it writable (chmod u+w) or write the results elsewhere "
            "with --output",
        )


def remove_stale_temp_files(table: Table, *, output: str | Path | None = None) -> list[Path]:
    """Remove what an interrupted write-back of this sheet left beside it; the paths removed.

    Only batchgen's own names are touched: `.NAME.XXXXXXXX.tmp` of the sheet (or `output`)
    and of its results file. Call it holding the sheet's run lock, so none is being written.
    """
    target = Path(os.path.realpath(_target(table, output)))
    names = [target.name]
    if table.kind == "csv":
        names.append(results_path(target).name)
    pattern = re.compile("|".join(rf"\.{re.escape(n)}\.[a-z0-9_]{{8}}\.tmp" for n in names))
    removed: list[Path] = []
    try:
        entries = list(os.scandir(target.parent))
    except OSError:
        return removed
    for entry in entries:
        if pattern.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
            with contextlib.suppress(OSError):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
    return removed


def _target(table: Table, output: str | Path | None) -> Path:
    """Where write_back writes: `output`, else the sheet itself (of the same kind)."""
    target = Path(output) if output is not None else table.path
    kind = _kind_of(target)
    if kind != table.kind or (
        kind == "xlsx" and target.suffix.lower() != table.path.suffix.lower()
    ):
        # An .xlsx package renamed .xlsm (or the reverse) will not open in Excel.
        raise _fail(target, f"cannot write a {table.path.suffix} sheet to a {target.suffix} file")
    return target


def write_back(
    table: Table,
    cells: dict[int, dict[str, str]],
    *,
    results: Results | None = None,
    output: str | Path | None = None,
) -> Path:
    """Write output cells into the sheet (in place, or to `output`) atomically; return that path."""
    target = _target(table, output)
    writes = _plan_writes(table, cells)
    if table.kind == "csv":
        doc = table._csv
        assert doc is not None
        # nothing batchgen writes into a CSV may open as a formula (the xlsx holds inline text)
        inert = _csvfile.neutralise
        writes = {n: {c: inert(v) for c, v in row.items()} for n, row in writes.items()}
        _atomic_write(target, doc.encode(_csvfile.patch(doc, writes)), table._mode)
        if results is not None:
            table_rows: list[list[object]] = [list(results.headers), *results.rows]
            rows = [[inert(_clean(v)) if isinstance(v, str) else v for v in r] for r in table_rows]
            _atomic_write(
                results_path(target), doc.encode(_csvfile.dump_rows(doc, rows)), table._mode
            )
        return target
    _atomic_write(target, _patched_workbook(table, writes, results), table._mode)
    return target


def results_path(sheet_path: str | Path) -> Path:
    """Where the CSV results table goes: ads.csv → ads.results.csv."""
    p = Path(sheet_path)
    return p.with_name(f"{p.stem}.results{p.suffix}")


def _clean(value: object) -> str:
    """Text as it may be stored: str, without characters XML or a text file cannot hold."""
    return strip_illegal("" if value is None else str(value))


def output_positions(table: Table) -> dict[str, int]:
    """Each output column's 0-based index; one at or past len(headers) is not there yet."""
    return _column_plan(table)[0]


def read_worksheet(table: Table, name: str) -> list[list[object]]:
    """The cached cell values of another worksheet of an .xlsx table; grid[i] is row i+1."""
    assert table._book is not None
    return _read_grid(table.path, table._book, name)[1]


def _column_plan(table: Table) -> tuple[dict[str, int], dict[int, str]]:
    """Output column → 0-based column index, and the header cells that must be added."""
    plan = output_plan(table)
    return plan.positions, plan.new_headers


def output_plan(table: Table) -> _outputcols.ColumnPlan:
    """Where the run writes, and the team's columns it leaves alone (worked out once)."""
    if table._outputs is None:
        rows = [row.values for row in table.rows]
        table._outputs = _outputcols.plan_columns(table.headers, rows, table._append_at)
    return table._outputs


def _plan_writes(table: Table, cells: dict[int, dict[str, str]]) -> dict[int, dict[int, str]]:
    """Row number → column index → text: new header cells plus the given output cells."""
    positions, new_headers = _column_plan(table)
    writes: dict[int, dict[int, str]] = {}
    if new_headers:
        writes[table.header_row] = dict(new_headers)
    for number, row in cells.items():
        if not isinstance(number, int) or number <= table.header_row:
            raise ValueError(f"row {number!r} is not a data row (header is row {table.header_row})")
        for name, value in row.items():
            if name not in positions:
                raise ValueError(f"{name!r} is not an output column; use one of {OUTPUT_COLUMNS}")
            writes.setdefault(number, {})[positions[name]] = _clean(value)
    return writes


def _patched_workbook(
    table: Table, writes: dict[int, dict[int, str]], results: Results | None
) -> bytes:
    """The workbook bytes with `writes` applied and the results sheet added or replaced."""
    from batchgen import _xlsx

    book, sheet = table._book, table._sheet
    assert book is not None and sheet is not None
    last_header = max((i for i, h in enumerate(table.headers) if h.strip()), default=0)
    try:
        header_style = _xlsx.style_of(sheet, table.header_row, last_header)
        pieces, removed_formula = _xlsx.patch_sheet(
            sheet, writes, header_row=table.header_row, header_style=header_style
        )
        results_xml = None
        if results is not None:
            results_xml = _xlsx.results_sheet_xml(list(results.headers), results.rows)
        return _xlsx.repackage(
            book,
            sheet_part=table._sheet_part,
            sheet_xml=_xlsx.encoded_blocks(pieces),
            results_name=RESULTS_SHEET,
            results_xml=results_xml,
            drop_calc_chain=removed_formula,
        )
    except _xlsx.XlsxError as exc:
        raise _fail(table.path, str(exc)) from exc


def _atomic_write(target: Path, data: bytes, default_mode: int) -> None:
    """Write via a temp file in the same directory, fsync, then os.replace."""
    real = Path(os.path.realpath(target))  # replace a symlink's target, not the link
    _refuse_read_only(real)  # made read-only during the run: never replaced
    try:
        st = real.stat() if real.exists() else None
        if st is not None and st.st_size == len(data) and _holds(real, data):
            # nothing changed: leave the file untouched (a synced folder would upload it
            # again, an open Excel would say it changed on disk)
            return
        mode = (st.st_mode & 0o7777) if st is not None else default_mode
        fd, tmp = tempfile.mkstemp(dir=real.parent, prefix=f".{real.name}.", suffix=".tmp")
    except OSError as exc:
        raise _fail(target, f"cannot be written ({exc.strerror or exc})") from exc
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        if st is not None and hasattr(os, "chown"):
            with contextlib.suppress(OSError):  # only root can give a file away; best effort
                os.chown(tmp, st.st_uid, st.st_gid)
        os.replace(tmp, real)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise _fail(target, f"cannot be written ({exc.strerror or exc})") from exc
        raise
    _fsync_dir(real.parent)


def _holds(path: Path, data: bytes) -> bool:
    """Whether the file at `path` holds exactly `data`."""
    try:
        return path.read_bytes() == data
    except OSError:
        return False


def _fsync_dir(directory: Path) -> None:
    """Persist the rename itself (POSIX); harmless where unsupported."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


__all__ = [
    "OUTPUT_COLUMNS",
    "RESULTS_SHEET",
    "HeaderRule",
    "Results",
    "Row",
    "Table",
    "check_writable",
    "load_sheet",
    "output_positions",
    "read_worksheet",
    "remove_stale_temp_files",
    "results_path",
    "write_back",
]
