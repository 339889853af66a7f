"""Writing a run's results into its sheet, and into a sheet a person saved during the run.

The sheet on disk is never replaced by a write made from content it no longer has. Before
each write (the checkpoints and the end of a run, and `cancel`) the file is compared with the
one batchgen loaded or last wrote (see sheets.Fingerprint). When someone saved it since, the
new content is read again (the same worksheet, header rule and CSV encoding), each of its rows
is matched to this run's jobs by job key (the same inputs make the same key, so rows inserted,
deleted or moved still match; a row whose inputs were edited is a new job and does not), and
the results are patched into the rows that match: everything else of the person's is kept
byte for byte. The results of our rows that no longer match, or of every row when the new
content cannot be read as the run read it, go beside the sheet to NAME.batchgen-results.EXT:
the sheet as the run loaded it, with those rows' results (an .xlsx with its per-job table; a
CSV's per-job table stays NAME.results.csv). So does everything while an office program's
lock file says someone has the sheet open: they would save over it. The ledger stays the
truth: a rerun follows every job, and writes the results into the rows that match again.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

from batchgen import officelock, paths, report, sheets
from batchgen.batch import Batch, reload_batch, write_sheet
from batchgen.errors import SheetChangedError, SheetError
from batchgen.ledger import JobRecord
from batchgen.plan import JobSpec, SheetPlan

log = logging.getLogger("batchgen")
# saves that may land while one write is made before the write goes beside the sheet
_ATTEMPTS = 3
_ROWS_NAMED = 5


class SheetWriter:
    """Writes one batch's results, following its sheet through a person's saves."""

    def __init__(self, batch: Batch) -> None:
        self.batch = batch
        self.base: Batch | None = None  # the sheet as a person saved it during the run
        self.note: str | None = None  # what the run says about where its results went
        self.beside = sheets.beside_path(batch.config.sheet)

    def write(self, records: Mapping[str, JobRecord]) -> Path:
        """Write the results; return the file the sheet's results went to."""
        config = self.batch.config
        if config.output is None:
            lock = officelock.find_lock(config.sheet)
            if lock is not None:
                who = f" by {lock.holder}" if lock.holder else ""
                return self._all_beside(
                    records,
                    f"{config.sheet.name} was opened in {lock.program}{who} during the run "
                    f"(lock file {lock.lock_file.name}), which would save over the results",
                )
        for _ in range(_ATTEMPTS):
            try:
                if self.base is not None:
                    return self._merge(records)
                written = write_sheet(self.batch, records)
                self.note = None  # written into the sheet: an earlier note no longer holds
                return written
            except SheetChangedError:
                why = self._reload()
                if why is not None:
                    return self._all_beside(records, why)
        return self._all_beside(
            records, f"{config.sheet.name} kept changing on disk while the results were written"
        )

    def _reload(self) -> str | None:
        """Read the sheet as saved now; why its rows cannot be matched, or None."""
        name = self.batch.config.sheet.name
        try:
            base = reload_batch(self.batch)
        except SheetError as exc:
            return f"{name} changed on disk during the run and cannot be read as before ({exc})"
        if not base.table.header_found:
            return (
                f"{name} changed on disk during the run and its header row no longer names "
                "the model's columns"
            )
        self.base = base
        return None

    def _merge(self, records: Mapping[str, JobRecord]) -> Path:
        """Patch the results into the rows of the new content that match this run's jobs."""
        assert self.base is not None
        ours, theirs = self.batch.plan, self.base.plan
        known = {job.key for job in ours.jobs if job.key in records}
        by_row = theirs.jobs_by_row()
        matched = {row for row, jobs in by_row.items() if all(j.key in known for j in jobs)}
        cells = {
            row: values
            for row, values in report.sheet_cells(theirs, records).items()
            if row in matched
        }
        merged = {job.key for row in matched for job in by_row[row]}
        ours_by_row = ours.jobs_by_row()
        left = sorted(
            row for row, jobs in ours_by_row.items() if any(j.key not in merged for j in jobs)
        )
        left_jobs = [job for job in ours.jobs if job.key not in merged]
        shown_jobs = [job for job in theirs.jobs if job.row in matched]
        rows = report.results_rows(_only(theirs, shown_jobs), records)
        # a job no row of the new content shows: its row number would name another row
        rows += [[None, *r[1:]] for r in report.results_rows(_only(ours, left_jobs), records)]
        results = sheets.Results(headers=list(report.RESULT_HEADERS), rows=rows)
        written = sheets.write_back(self.base.table, cells, results=results)
        name = self.batch.config.sheet.name
        total = len(ours_by_row)
        if left:
            self._write_beside(records, set(left), results_file=False)
            self._say(
                f"{name} changed on disk during the run: results merged into "
                f"{total - len(left)} of {total} rows; {_rows(left)} no longer match "
                f"(inputs edited or rows deleted) and were written to {paths.shown(self.beside)}"
            )
        else:
            self._say(
                f"{name} changed on disk during the run: results merged into all {total} "
                "rows of the saved sheet"
            )
        return written

    def _all_beside(self, records: Mapping[str, JobRecord], why: str) -> Path:
        """Leave the sheet as it is; write every row's results beside it."""
        plan = self.batch.plan
        self._write_beside(records, set(plan.jobs_by_row()) | set(plan.invalid), results_file=True)
        self._say(
            f"{why}: the sheet was left as it is and the results were written to "
            f"{paths.shown(self.beside)}; run again when it is closed to write them into the "
            "sheet (nothing is submitted again)"
        )
        return self.beside

    def _write_beside(
        self, records: Mapping[str, JobRecord], rows: set[int], *, results_file: bool
    ) -> None:
        """The sheet as the run loaded it, with `rows`' results, next to the sheet.

        A CSV's per-job table is NAME.results.csv, batchgen's own file: a merge has just
        written it (`results_file` False), otherwise it is written here.
        """
        table, plan = self.batch.table, self.batch.plan
        cells = {n: v for n, v in report.sheet_cells(plan, records).items() if n in rows}
        results = sheets.Results(
            headers=list(report.RESULT_HEADERS), rows=report.results_rows(plan, records)
        )
        if table.kind == "csv":  # the per-job table stays where later runs read it
            sheets.write_back(table, cells, output=self.beside)
            if results_file:
                sheets.write_results_file(table, results, sheets.results_path(table.path))
        else:
            sheets.write_back(table, cells, results=results, output=self.beside)

    def _say(self, note: str) -> None:
        """Log a note when it is new (checkpoints repeat it); the summary shows the last."""
        if note != self.note:
            log.warning("%s", note)
        self.note = note


def _only(plan: SheetPlan, jobs: list[JobSpec]) -> SheetPlan:
    """`plan` with only `jobs` (and none of its invalid rows)."""
    return SheetPlan(jobs=jobs, multi_model=plan.multi_model, models=plan.models)


def _rows(numbers: list[int]) -> str:
    """`row 7` / `rows 4, 9 and 3 more`."""
    if len(numbers) == 1:
        return f"row {numbers[0]}"
    shown = ", ".join(map(str, numbers[:_ROWS_NAMED]))
    more = len(numbers) - _ROWS_NAMED
    return f"{len(numbers)} rows ({shown}{f' and {more} more' if more > 0 else ''})"
