"""Writing results back: patches of the bytes read at load, written atomically."""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from batchgen import _csvfile, _outputcols
from batchgen._text import strip_illegal
from batchgen.errors import SheetChangedError
from batchgen.paths import shown
from batchgen.sheets import _room
from batchgen.sheets._read import _read_grid, kind_of
from batchgen.sheets._table import (
    _CHECK_PREFIX,
    OUTPUT_COLUMNS,
    RESULTS_SHEET,
    Fingerprint,
    Results,
    Table,
    _fail,
    content_digest,
)

if TYPE_CHECKING:  # imported where an .xlsx is written: a CSV run does without it
    from batchgen import _xlsx

# --------------------------------------------------------------------------- writing


def check_writable(
    table: Table, *, output: str | Path | None = None, jobs: int | None = None
) -> None:
    """Raise SheetError now if write_back could not write this sheet (nothing is written).

    A run calls this before it submits anything: a results file it could not write would
    otherwise be found out only after the jobs were paid for. `jobs` (default: one a row)
    sizes the write-back, for the free space it needs.
    """
    target = _target(table, output)
    check_writable_file(target, table.kind)
    if table.kind == "xlsx":
        from batchgen import _xlsx

        assert table._book is not None
        try:
            _xlsx.results_sheet_part(table._book, sheet_part=table._sheet_part, name=RESULTS_SHEET)
        except _xlsx.XlsxError as exc:
            raise _fail(table.path, str(exc)) from exc
        _refuse_hidden_or_merged(table)
        try:
            _room.refuse_locked_structure(table)
            _room.refuse_locked(table, lambda: _every_write(table), _header_style(table))
        except _xlsx.XlsxError as exc:
            raise _fail(table.path, str(exc)) from exc
        _dry_patch(table)
    _room.refuse_no_room(table, target, len(table.rows) if jobs is None else jobs)


def check_writable_file(target: Path, kind: str) -> None:
    """check_writable's part that depends on the file system only, not on the sheet's cells."""
    _refuse_read_only(target)
    if kind == "csv":
        _refuse_read_only(results_path(target))
    folder = target.parent
    try:
        marked = os.stat(folder).st_mode & 0o222 == 0
    except OSError:
        marked = False  # not there: the temporary file below says so
    if marked:  # root could still write into it, but its owner marked it read-only
        raise _fail(target, f"cannot write into {folder}: the folder is read-only")
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=_CHECK_PREFIX):
            pass
    except OSError as exc:
        raise _fail(target, f"cannot write into {folder}: {exc.strerror or exc}") from exc


def _refuse_hidden_or_merged(table: Table) -> None:
    """Raise SheetError if an output column is hidden or merged, or none is left."""
    refused = output_plan(table).refused
    if refused:
        raise _fail(
            table.path,
            f"worksheet {table.sheet_name!r}: {refused[0]}; results never go into hidden "
            "columns or merged ranges: unhide or unmerge those columns, then run again",
        )


def _every_write(table: Table) -> dict[int, dict[int, str]]:
    """The cells a write-back writes (each holding 'x'): new header cells, output cells."""
    positions, new_headers = _column_plan(table)
    columns = sorted(positions.values())
    writes = {row.number: dict.fromkeys(columns, "x") for row in table.rows}
    if new_headers:
        writes[table.header_row] = dict(new_headers)
    return writes


def _header_style(table: Table) -> str | None:
    """The format new header cells get: the last header's."""
    from batchgen import _xlsx

    assert table._sheet is not None
    last_header = max((i for i, h in enumerate(table.headers) if h.strip()), default=0)
    return _xlsx.style_of(table._sheet, table.header_row, last_header)


def _column_styles(table: Table) -> dict[int, str]:
    """The output columns' own formats, which the cells batchgen adds to them take."""
    from batchgen import _xlsx

    sheet = table._sheet
    assert sheet is not None
    columns = _xlsx.parse_columns(sheet.text, sheet.data_open[0])
    styles = {col: columns.style(col) for col in output_positions(table).values()}
    return {col: style for col, style in styles.items() if style is not None}


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

    Only batchgen's own names are touched: `.NAME.XXXXXXXX.tmp` of the sheet (or `output`),
    of its results file and of the file results go to beside it. Call it holding the
    sheet's run lock, so none is being written.
    """
    return remove_stale_temp_files_of(_target(table, output), table.kind)


def remove_stale_temp_files_of(target: Path, kind: str) -> list[Path]:
    """remove_stale_temp_files, for the sheet file `target` of `kind` ("csv" or "xlsx")."""
    target = Path(os.path.realpath(target))
    names = [target.name, beside_path(target).name]
    if kind == "csv":
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
    kind = kind_of(target)
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
    """Write output cells into the sheet (in place, or to `output`) atomically; return that path.

    Written in place, the sheet must still be the file loaded (or last written): one saved
    by a person since raises SheetChangedError and nothing of it is replaced.
    """
    target = _target(table, output)
    in_place = output is None or os.path.realpath(target) == os.path.realpath(table.path)
    expect = table.seen if in_place else None
    if expect is not None and not expect.matches(Path(os.path.realpath(target))):
        raise _changed(target)  # before the bytes are built: they would be thrown away
    writes = _plan_writes(table, cells)
    if table.kind == "csv":
        doc = table._csv
        assert doc is not None
        # nothing batchgen writes into a CSV may open as a formula (the xlsx holds inline text)
        inert = _csvfile.neutralise
        writes = {n: {c: inert(v) for c, v in row.items()} for n, row in writes.items()}
        seen = _atomic_write(target, doc.encode(_csvfile.patch(doc, writes)), table, expect=expect)
        if results is not None:
            write_results_file(table, results, results_path(target))
    else:
        data = _patched_workbook(table, writes, results)
        seen = _atomic_write(target, data, table, expect=expect)
    if in_place:
        table.seen = seen  # batchgen's own write is not a change made by someone else
    return target


def write_results_file(table: Table, results: Results, path: Path) -> None:
    """Write a CSV sheet's results table to `path`, in the sheet's encoding and dialect."""
    doc = table._csv
    assert doc is not None
    inert = _csvfile.neutralise
    table_rows: list[list[object]] = [list(results.headers), *results.rows]
    rows = [[inert(_clean(v)) if isinstance(v, str) else v for v in r] for r in table_rows]
    _atomic_write(path, doc.encode(_csvfile.dump_rows(doc, rows)), table)


def beside_path(sheet_path: str | Path) -> Path:
    """Where results that cannot go into the sheet go: ads.xlsx → ads.batchgen-results.xlsx."""
    p = Path(sheet_path)
    return p.with_name(f"{p.stem}.batchgen-results{p.suffix}")


def _changed(target: Path) -> SheetChangedError:
    return SheetChangedError(f"{shown(target)} changed on disk since batchgen read it")


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
        table._outputs = _outputcols.plan_columns(
            table.headers, rows, table._append_at, blocked=_room.blocked_columns(table)
        )
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
    try:
        styles = _wrap_styles(book, writes)
        pieces, removed_formula = _xlsx.patch_sheet(
            sheet,
            writes,
            header_row=table.header_row,
            header_style=_header_style(table),
            wrap=styles.wrapped if styles is not None else None,
            column_styles=_column_styles(table),
        )
        parts, new_styles = {}, None
        if styles is not None and styles.changed:
            if book.styles_part is None:
                new_styles = styles.xml().encode("utf-8")
            else:
                parts[book.styles_part] = styles.xml().encode("utf-8")
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
            parts=parts,
            new_styles=new_styles,
        )
    except _xlsx.XlsxError as exc:
        raise _fail(table.path, str(exc)) from exc


def _wrap_styles(book: _xlsx.Book, writes: dict[int, dict[int, str]]) -> _xlsx.WrapStyles | None:
    """The workbook's cell styles, when a cell of several lines (one per job) must wrap."""
    from batchgen import _xlsx

    if not any("\n" in value for row in writes.values() for value in row.values()):
        return None
    if book.styles_part is None:  # a workbook that plain: a styles part is added
        return _xlsx.WrapStyles(None)
    return _xlsx.WrapStyles(_xlsx.read_part(book, book.styles_part))


def _atomic_write(
    target: Path, data: bytes, table: Table, *, expect: Fingerprint | None = None
) -> Fingerprint:
    """Write via a temp file in the same directory, fsync, then os.replace; note its digest.

    With `expect`, the file replaced must still match it (checked again just before the
    rename): otherwise SheetChangedError, and the file is left as it is. Returns the written
    file's fingerprint.
    """
    default_mode = table._mode
    table.written.pop(str(target), None)  # known again only once the file holds `data`
    real = Path(os.path.realpath(target))  # replace a symlink's target, not the link
    _refuse_read_only(real)  # made read-only during the run: never replaced
    try:
        st = real.stat() if real.exists() else None
        if st is not None and st.st_size == len(data) and _holds(real, data):
            # nothing changed: leave the file untouched (a synced folder would upload it
            # again, an open Excel would say it changed on disk)
            table.written[str(target)] = content_digest(data)
            return Fingerprint.of(st, data)
        mode = (st.st_mode & 0o7777) if st is not None else default_mode
        fd, tmp = tempfile.mkstemp(dir=real.parent, prefix=f".{real.name}.", suffix=".tmp")
    except OSError as exc:
        raise _fail(target, f"cannot be written ({exc.strerror or exc})") from exc
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
            # the file's stat is taken before it is in place: a save landing just after the
            # rename changes its size or mtime, where a stat taken then would record it as ours
            written = Fingerprint.of(os.fstat(f.fileno()), data)
        os.chmod(tmp, mode)
        if st is not None and hasattr(os, "chown"):
            with contextlib.suppress(OSError):  # only root can give a file away; best effort
                os.chown(tmp, st.st_uid, st.st_gid)
        if expect is not None and not expect.matches(real):
            raise _changed(target)  # saved by someone since the check in write_back
        os.replace(tmp, real)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise _fail(target, f"cannot be written ({exc.strerror or exc})") from exc
        raise
    _fsync_dir(real.parent)
    table.written[str(target)] = content_digest(data)
    return written


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
