"""Load a prompt sheet (.xlsx or .csv) and write job results back into it.

This is the only package that touches pandas or spreadsheet formats. Reading goes through
pandas (calamine for .xlsx) or the csv module; writing patches the original bytes captured
at load time, so every write is a pure function of (loaded file, cells, results): repeated
calls are idempotent. A sheet saved by someone else since it was loaded (or last written) is
never replaced: write_back raises SheetChangedError, and the caller reloads it.
"""

from batchgen.sheets._read import kind_of, load_sheet
from batchgen.sheets._table import (
    HEADER_SCAN_ROWS,
    MAX_CELL_CHARS,
    OUTPUT_COLUMNS,
    RESULTS_SHEET,
    Fingerprint,
    HeaderRule,
    HeaderTest,
    Results,
    Row,
    Table,
    content_digest,
)
from batchgen.sheets._write import (
    beside_path,
    check_writable,
    check_writable_file,
    output_plan,
    output_positions,
    read_worksheet,
    remove_stale_temp_files,
    remove_stale_temp_files_of,
    results_path,
    write_back,
    write_results_file,
)

__all__ = [
    "HEADER_SCAN_ROWS",
    "MAX_CELL_CHARS",
    "OUTPUT_COLUMNS",
    "RESULTS_SHEET",
    "Fingerprint",
    "HeaderRule",
    "HeaderTest",
    "Results",
    "Row",
    "Table",
    "beside_path",
    "check_writable",
    "check_writable_file",
    "content_digest",
    "kind_of",
    "load_sheet",
    "output_plan",
    "output_positions",
    "read_worksheet",
    "remove_stale_temp_files",
    "remove_stale_temp_files_of",
    "results_path",
    "write_back",
    "write_results_file",
]
