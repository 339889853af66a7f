"""What a sheet shows of earlier runs: the second ledger a lost one is rebuilt from.

batchgen writes every job's request_id into the sheet's output cells and its results table
(a worksheet, or NAME.results.csv). Read back, they keep a job the sheet shows as submitted
from being paid for again when the ledger was deleted, emptied or replaced.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from batchgen import _csvfile, sheets
from batchgen.errors import SheetError


class Shown:
    """What the sheet shows of earlier runs: its output cells and its results table.

    A lost ledger is rebuilt from these, so a job the sheet shows with a request_id is never
    paid for again. Both are read on demand: most runs never ask. With --output, the results
    table of the file earlier runs wrote there counts too.
    """

    def __init__(self, table: sheets.Table, *, output: Path | None = None) -> None:
        self.table = table
        self.output = output  # where runs write with --output: its results table counts too
        self._rows: dict[int, sheets.Row] | None = None
        self._results: dict[str, dict[str, str]] | None = None
        # the sheet's own output columns (a column still to be appended shows nothing)
        width = len(table.headers)
        positions = sheets.output_positions(table).items()
        self._columns = {name: at for name, at in positions if at < width}

    def cells(self, number: int) -> dict[str, str] | None:
        """Row `number`'s output cells by column name, or None when it shows no request_id."""
        at = self._columns.get("request_id")
        if at is None:  # a first run: asked for every job, so this is the quick answer
            return None
        if self._rows is None:
            self._rows = {row.number: row for row in self.table.rows}
        row = self._rows.get(number)
        if row is None or not self._text(row.values[at]).strip():
            return None
        return {name: self._text(row.values[i]) for name, i in self._columns.items()}

    def results(self) -> dict[str, dict[str, str]]:
        """The results tables' rows that show a request_id, by job key (read once)."""
        if self._results is None:
            self._results = {}
            # results written beside the sheet when a person saved it during a run count too
            beside = sheets.beside_path(self.table.path) if self.table.kind == "xlsx" else None
            for source in (self.table, self.output, beside):
                try:
                    grid = self._results_grid(source)
                except (SheetError, _csvfile.CsvError, OSError):
                    grid = []  # an unreadable results table: the sheet's own cells still count
                self._results.update(_results_by_key(grid, self._text))
        return self._results

    def _text(self, value: object) -> str:
        """A cell as batchgen wrote it (a CSV value loses its anti-formula quote)."""
        if value is None:
            return ""
        text = str(value)
        return _csvfile.restore(text) if self.table.kind == "csv" else text

    def _results_grid(self, source: sheets.Table | Path | None) -> list[list[object]]:
        """A results worksheet or file as rows of cells; [] when there is none.

        Of a --output file only the results table is read: its rows need not be the
        sheet's rows any more (rows inserted since), but the table names each job's key.
        """
        if source is None:
            return []
        if isinstance(source, Path):
            if not source.exists():
                return []
            source = sheets.load_sheet(source, sheet_name=self.table.sheet_name)
        table = source
        if table.kind == "csv":
            path = sheets.results_path(table.path)
            if not path.is_file():
                return []
            doc = _csvfile.parse(path.read_bytes())
            return [list(fields) for fields in doc.fields]
        book = table._book
        assert book is not None
        if not any(ref.name == sheets.RESULTS_SHEET for ref in book.sheets):
            return []
        return sheets.read_worksheet(table, sheets.RESULTS_SHEET)


def _results_by_key(
    grid: list[list[object]], text: Callable[[object], str]
) -> dict[str, dict[str, str]]:
    """Results-table rows by their job key (`job_id`), for rows that show a request_id."""
    header = next((i for i, row in enumerate(grid) if any(text(v).strip() for v in row)), None)
    if header is None:
        return {}
    names = [text(v).strip().lower() for v in grid[header]]
    if "job_id" not in names or "request_id" not in names:
        return {}
    at = {name: names.index(name) for name in ("job_id", *sheets.OUTPUT_COLUMNS) if name in names}
    found: dict[str, dict[str, str]] = {}
    for row in grid[header + 1 :]:
        values = {name: text(row[i]) if i < len(row) else "" for name, i in at.items()}
        key = values.pop("job_id").strip()
        if key and values["request_id"].strip():
            found[key] = values
    return found
