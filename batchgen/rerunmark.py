"""A rerun with nothing to do, known from a mark instead of reading the sheet into jobs.

A run whose every job completed, and which wrote its results into the sheet it loaded (in
place), leaves a mark in the ledger: one digest of everything that decided the
run (batchgen's own code, Python, every setting, the user's model files, the sheet's bytes
and its results file's bytes) and what the run reported. A later run whose digest is the same
would build the same jobs from the same bytes (batchgen writes only output cells, never an
input), find the same completed records (a mark is
forgotten by every run or cancel that may change a record, see batchgen._rerunmarks) and
write the same bytes back, that is nothing; so it only says what the marked run said.
Anything else (a changed byte, setting or model file, a job not completed, another run's
lock in the ledger) takes the whole way.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections import Counter
from dataclasses import dataclass
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

from batchgen import report, sheets
from batchgen.batch import Batch
from batchgen.config import RunConfig
from batchgen.ledger import Ledger
from batchgen.resume import plan_digest

_DIGEST_BYTES = 16


# the libraries that read a sheet (a non-UTF-8 CSV's encoding, dates and xlsx values)
_READERS = ("charset-normalizer", "pandas", "python-calamine")


@cache
def _code_digest() -> str:
    """batchgen's own files (name, size, modification time), the Python running them and
    the versions of the libraries that read a sheet."""
    root = Path(__file__).resolve().parent
    h = hashlib.blake2b(sys.version.encode(), digest_size=_DIGEST_BYTES)
    for name in _READERS:
        try:
            h.update(f"\0{name}\0{metadata.version(name)}".encode())
        except metadata.PackageNotFoundError:
            h.update(f"\0{name}\0-".encode())
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(files):
            if name.endswith((".py", ".json")):
                stat = os.stat(os.path.join(folder, name))
                h.update(f"{folder}/{name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return h.hexdigest()


def settings_digest(config: RunConfig) -> str | None:
    """Everything but the sheet that decides a run: the code, every setting, the model files.

    Taken when a run starts, so a model file edited during the run never vouches for jobs
    built from the file as it was. None when a model folder cannot be read (the run says why).
    """
    h = hashlib.blake2b(_code_digest().encode(), digest_size=_DIGEST_BYTES)
    h.update(repr(config).encode())
    if config.models_dir is not None:
        folder = Path(config.models_dir).expanduser()
        try:
            for path in sorted(folder.glob("*.json")):  # the files load_catalog reads
                h.update(f"\0{path.name}\0".encode() + path.read_bytes())
        except OSError:
            return None
    return h.hexdigest()


def _file_digest(path: Path) -> str | None:
    """The digest of a file's bytes, or None when it cannot be read."""
    try:
        return sheets.content_digest(path.read_bytes())
    except OSError:
        return None


def mark_digest(settings: str, sheet: str, results: str | None) -> str:
    """The mark of a run's settings, its sheet's bytes and (a CSV's) results file's bytes."""
    text = f"{settings}\0{sheet}\0{results or '-'}"
    return hashlib.blake2b(text.encode(), digest_size=_DIGEST_BYTES).hexdigest()


def current_digest(config: RunConfig, settings: str) -> str | None:
    """The mark a run of the sheet as it is now would match; None if it cannot be read."""
    sheet = _file_digest(config.sheet)
    if sheet is None:
        return None
    results = None
    if sheets.kind_of(config.sheet) == "csv":
        path = sheets.results_path(config.sheet)
        results = _file_digest(path) if path.exists() else None
    return mark_digest(settings, sheet, results)


@dataclass
class Mark:
    """What a marked run reported: its jobs (all completed), rows and header notes."""

    plan: str  # batchgen.resume.plan_digest of its jobs and rows
    jobs: int
    row_count: int
    outcome: dict[str, Any]
    notes: list[tuple[int, str]]  # log records (level, message) about the sheet's headers
    unpriced: bool  # a model without a price: --max-cost refuses the sheet

    def body(self) -> str:
        """The mark as the ledger stores it."""
        return json.dumps(vars(self))

    @classmethod
    def parse(cls, body: str) -> Mark | None:
        """A stored mark, or None if it cannot be read (then it is not trusted)."""
        try:
            data = json.loads(body)
            data["notes"] = [(int(level), str(text)) for level, text in data["notes"]]
            return cls(**data)
        except (ValueError, TypeError, KeyError):
            return None

    def result_outcome(self) -> report.Outcome:
        """The marked run's outcome."""
        data = self.outcome
        return report.Outcome(
            counts=Counter(data["counts"]),
            problem_rows={},
            estimated_spend=float(data["estimated_spend"]),
            actual_cost=float(data["actual_cost"]),
            jobs=int(data["jobs"]),
            rows=int(data["rows"]),
        )


def outcome_data(outcome: report.Outcome) -> dict[str, Any]:
    """An all-completed outcome as a mark keeps it (exact floats)."""
    return {
        "counts": dict(outcome.counts),
        "estimated_spend": outcome.estimated_spend,
        "actual_cost": outcome.actual_cost,
        "jobs": outcome.jobs,
        "rows": outcome.rows,
    }


@dataclass
class Marking:
    """What a run needs to leave a rerun mark: its settings' digest and its header notes."""

    settings: str | None
    notes: list[tuple[int, str]]
    generation: str | None = None  # the marks' generation drawn as the run started
    digest: str = ""
    body: str = ""

    def ready(self, batch: Batch, outcome: report.Outcome, ended_clean: bool) -> None:
        """Make the mark if this run may leave one: every job completed and the results
        written into the sheet it loaded, in place (see rerunmark)."""
        config, table = batch.config, batch.table
        sheet = table.written.get(str(config.sheet))
        results = table.written.get(str(sheets.results_path(config.sheet)))
        if (
            not ended_clean
            or self.settings is None
            or config.output is not None
            or config.download is not None
            or not outcome.all_completed
            or table.hidden_rows  # a run says how its hidden rows were set aside: not marked
            or sheet is None
            # A sheet this run wrote its results into is marked too: its inputs are the bytes
            # loaded, so a rerun plans the same jobs from it and writes the same cells back
            # (nothing). Only the note on a team's own columns would read otherwise then.
            or (sheet != table.loaded_digest and sheets.output_plan(table).kept)
            or (table.kind == "csv" and results is None)
        ):
            return
        keys = [job.key for job in batch.plan.jobs]
        mark = Mark(
            plan=plan_digest(keys, [job.row for job in batch.plan.jobs]),
            jobs=len(keys),
            row_count=batch.plan.row_count,
            outcome=outcome_data(outcome),
            notes=self.notes,
            unpriced=bool(batch.plan.unpriced),
        )
        self.digest = mark_digest(self.settings, sheet, results)
        self.body = mark.body()


def matching_mark(ledger: Ledger, scope: str, digest: str) -> Mark | None:
    """`scope`'s mark if it is `digest` and the ledger still holds just its jobs, completed.

    The ledger must hold exactly the marked jobs (the plan mark of the same jobs and rows,
    and as many jobs), none of them unfinished, and no other sheet's run lock: a live run
    may be changing shared jobs, and a dead one's lock shows it stopped partway.
    """
    stored = ledger.rerun_mark(scope)
    if stored is None or stored[0] != digest:
        return None
    mark = Mark.parse(stored[1])
    if mark is None or ledger.plan_mark(scope) != mark.plan:
        return None
    jobs, unfinished, others = ledger.rerun_counts(scope)
    if jobs != mark.jobs or unfinished or others:
        return None
    return mark


@dataclass
class _MarkedPlan:
    """A marked sheet's plan as a run's observer reads it: its rows, none invalid."""

    row_count: int
    invalid: dict[int, list[Any]]


class Marked:
    """A marked sheet as a run's observer reads a batch: its settings and its plan."""

    def __init__(self, config: RunConfig, row_count: int) -> None:
        self.config = config
        self.plan = _MarkedPlan(row_count, {})
