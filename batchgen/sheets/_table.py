"""A loaded sheet's shapes: its rows, its table, the results table, the header rule."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from batchgen import _csvfile, _outputcols
from batchgen._outputcols import OUTPUT_COLUMNS as OUTPUT_COLUMNS
from batchgen.errors import SheetError
from batchgen.paths import shown

if TYPE_CHECKING:  # imported where an .xlsx is read or written: a CSV run does without it
    from batchgen import _xlsx

RESULTS_SHEET = "batchgen_results"
_CHECK_PREFIX = ".batchgen-check-"

_CSV_SUFFIXES = (".csv", ".tsv")
_XLSX_SUFFIXES = (".xlsx", ".xlsm")
_OLE2_MAGIC = b"\xd0\xcf\x11\xe0"
_ZIP_MAGIC = b"PK\x03\x04"
# Excel's own limit on the characters of one cell; a CSV cell beyond it makes its row invalid
MAX_CELL_CHARS = 32_767


@dataclass(frozen=True)
class Fingerprint:
    """A sheet file as batchgen last read or wrote it: its stat, and a digest of its bytes."""

    size: int
    mtime_ns: int
    device: int
    inode: int
    digest: bytes

    @classmethod
    def of(cls, info: os.stat_result, data: bytes) -> Fingerprint:
        """The fingerprint of `data`, the bytes of the file whose stat is `info`."""
        digest = hashlib.sha256(data).digest()
        return cls(info.st_size, info.st_mtime_ns, info.st_dev, info.st_ino, digest)

    def matches(self, path: Path) -> bool:
        """Whether `path` still holds these bytes: the stat says so, or else the content does.

        A file copied over with the same bytes, or only touched, has not changed.
        """
        try:
            info = os.stat(path)
        except OSError:
            return False  # deleted or unreadable: not what was loaded
        same = (info.st_size, info.st_mtime_ns, info.st_dev, info.st_ino) == (
            self.size,
            self.mtime_ns,
            self.device,
            self.inode,
        )
        if same:
            return True
        if info.st_size != self.size:
            return False
        try:
            return hashlib.sha256(path.read_bytes()).digest() == self.digest
        except OSError:
            return False


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
    # totals rows (row → its Excel Table's name, "" outside a Table): not in `rows`, not written
    totals_rows: dict[int, str] = field(default_factory=dict)
    # data rows hidden (row → how: "by hand", "by the filter on column 'Status'", …)
    hidden_rows: dict[int, str] = field(default_factory=dict)
    # the digest of the file's bytes as loaded, and of the bytes each write_back left in a
    # file (by path): a rerun mark is set only when the two agree (see batchgen.rerunmark)
    loaded_digest: str = field(default="", repr=False, compare=False)
    written: dict[str, str] = field(default_factory=dict, repr=False, compare=False)
    # the file as loaded, then as batchgen last wrote it: a write finding another is refused
    seen: Fingerprint | None = field(default=None, repr=False, compare=False)


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


def content_digest(data: bytes) -> str:
    """A file's identity by content: 32 hex digits of BLAKE2b."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def _fail(path: Path, problem: str) -> SheetError:
    """A SheetError whose one line names the file and the problem."""
    return SheetError(f"{shown(path)}: {' '.join(problem.split())}")
