"""Where a run starts: the sheet's jobs against the ledger, and what is left to do.

A rerun of a 100,000-row sheet that is nearly done must decide what is left at once. Whole
records are read only for the jobs that are not completed; the completed ones are counted
from a covering index, and their records are read when the sheet is first written. When the
sheet's jobs and rows are exactly those its last resume left in the ledger (a plan mark),
even the completed jobs' keys are not read.
"""

from __future__ import annotations

import hashlib
import threading
import time
from array import array
from dataclasses import dataclass, field
from itertools import compress
from operator import attrgetter, ne
from typing import Any

from batchgen import report
from batchgen.config import RunConfig
from batchgen.ledger import JobRecord, Ledger
from batchgen.specs import JobSpec, SheetPlan

UNKNOWN_ERROR = (
    "the run stopped before the submit answered; rerun with --resubmit-unknown to submit it again"
)


@dataclass
class Resume:
    """A run's starting point: the records it acts on, what to submit, and the spend so far."""

    records: dict[str, JobRecord]
    to_submit: list[str]
    spent: float
    start: report.Outcome
    _complete: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def complete(self, ledger: Ledger, plan: SheetPlan) -> dict[str, JobRecord]:
        """Every job's record: the completed ones are read on first call (thread-safe)."""
        with self._lock:
            if not self._complete:
                missing = [job for job in plan.jobs if job.key not in self.records]
                read = ledger.get_jobs([job.key for job in missing], payloads=False)
                for job in missing:
                    record = read.get(job.key)
                    if record is not None:
                        record.payload = job.payload
                        record.sheet_row = job.row  # a sheet sharing the ledger may have moved it
                        self.records[job.key] = record
                self._complete = True
        return self.records


def _new_record(job: JobSpec, now: float) -> JobRecord:
    return JobRecord(
        key=job.key,
        model_id=job.model_id,
        payload=job.payload,
        state="pending",
        take=job.take,
        label=job.label,
        sheet_row=job.row,
        estimated_cost=job.estimated_cost,
        created_at=now,
        updated_at=now,
    )


def plan_digest(keys: list[str], rows: list[int]) -> str:
    """A digest of a plan's job keys and sheet rows, in order."""
    blob = "\n".join(keys).encode() + array("q", rows).tobytes()
    return hashlib.blake2b(blob, digest_size=16).hexdigest()


@dataclass
class _Match:
    """The plan against the ledger: jobs not completed, their records, the completed ones."""

    acting: list[JobSpec]
    records: dict[str, JobRecord]
    completed: int
    spent: float


def _match_marked(plan: SheetPlan, ledger: Ledger, keys: list[str]) -> _Match:
    """The ledger holds exactly the plan's jobs at the plan's rows: read what is not completed."""
    records = ledger.get_jobs(payloads=False, not_state="completed")
    acting = list(compress(plan.jobs, map(records.__contains__, keys)))
    completed = len(keys) - len(acting)
    return _Match(acting, records, completed, ledger.completed_cost() if completed else 0.0)


def _match(plan: SheetPlan, ledger: Ledger, keys: list[str], rows: list[int], lean: bool) -> _Match:
    """Every job against the ledger: add new ones, follow moved rows."""
    # the jobs not completed first: a job that completes meanwhile (another runner sharing
    # the ledger) is then in both reads, and counts as completed; never in neither
    others = ledger.get_jobs(payloads=False, not_state="completed" if lean else None)
    completed_at = ledger.completed_rows() if lean else {}  # else: downloads may be missing
    # one pass over every job, in C: those not completed at their sheet row
    differs = map(ne, map(completed_at.get, keys), rows)
    rest = [plan.jobs[i] for i in compress(range(len(keys)), differs)]
    moved = [(job.key, {"sheet_row": job.row}) for job in rest if job.key in completed_at]
    completed = len(completed_at)
    spent = ledger.completed_cost() if completed else 0.0
    if len(keys) - len(rest) + len(moved) != completed:
        # the ledger holds completed jobs the sheet no longer has: count the sheet's only
        orphans = completed_at.keys() - set(keys)
        completed -= len(orphans)
        spent -= ledger.completed_cost(list(orphans))

    acting = [job for job in rest if job.key not in completed_at]
    for job in acting:
        if job.key in others and others[job.key].sheet_row != job.row:
            moved.append((job.key, {"sheet_row": job.row}))
    now = time.time()
    new = [_new_record(job, now) for job in acting if job.key not in others]
    if moved or new:
        # before the writes: a crash part-way must leave no sheet's mark claiming these rows
        ledger.clear_plan_marks()
    ledger.update_jobs(moved)
    ledger.add_jobs(new)
    records = {job.key: others[job.key] for job in acting if job.key in others}
    records.update((record.key, record) for record in new)
    return _Match(acting, records, completed, spent)


def resume(plan: SheetPlan, ledger: Ledger, config: RunConfig, *, scope: str) -> Resume:
    """Add the sheet's new jobs, follow moved rows, and decide what this run submits."""
    lean = config.download is None  # with --download every completed job is looked at
    keys = list(map(attrgetter("key"), plan.jobs))
    rows = list(map(attrgetter("row"), plan.jobs))
    digest = plan_digest(keys, rows)
    if lean and ledger.plan_mark(scope) == digest and ledger.job_count() == len(keys):
        match = _match_marked(plan, ledger, keys)
    else:
        match = _match(plan, ledger, keys, rows, lean)
        ledger.set_plan_mark(scope, digest)

    start = report.Outcome(rows=plan.row_count, jobs=len(plan.jobs) + len(plan.invalid))
    if match.completed:
        start.counts[report.SUCCESS] = match.completed
    start.estimated_spend = spent = match.spent
    problems: dict[str, list[int]] = {}
    to_submit: list[str] = []
    changes: list[tuple[str, dict[str, Any]]] = []
    records = match.records
    for job in match.acting:
        record = records[job.key]
        record.payload = job.payload  # the sheet's input as it is now: the key's own bytes
        record.sheet_row = job.row
        spent += _decide(record, config, to_submit, changes)
        state = report.sheet_status(record.state)
        start.counts[state] += 1
        if record.request_id and record.estimated_cost:
            start.estimated_spend += record.estimated_cost
        if state != report.SUCCESS:
            problems.setdefault(state, []).append(job.row)
    ledger.update_jobs(changes)
    if plan.invalid:
        start.counts["invalid"] += len(plan.invalid)
        problems.setdefault("invalid", []).extend(plan.invalid)
    start.problem_rows = {state: sorted(set(rows)) for state, rows in problems.items()}
    acting_keys = {job.key for job in match.acting}
    mine = {key: record for key, record in records.items() if key in acting_keys}
    return Resume(mine, to_submit, spent, start)


def _decide(
    record: JobRecord,
    config: RunConfig,
    to_submit: list[str],
    changes: list[tuple[str, dict[str, Any]]],
) -> float:
    """Whether `record` is submitted this run (and its state fixed first); its spend so far."""
    if record.state == "submitting":
        # sent but never answered before a crash: unknowable, never silently resubmitted
        values: dict[str, Any] = {"state": "unknown", "error": UNKNOWN_ERROR}
        changes.append((record.key, values))
        record.update(values)
    if record.state == "unknown" and config.resubmit_unknown:
        to_submit.append(record.key)
    elif (record.state == "failed" and config.retry_failed) or (
        record.state == "cancelled" and config.retry_cancelled
    ):
        values = {"state": "pending", "request_id": None, "error": None, "video_url": None}
        changes.append((record.key, values))
        record.update(values)
        to_submit.append(record.key)
    elif record.state == "pending":
        to_submit.append(record.key)
    if record.request_id or record.state == "unknown":
        return record.estimated_cost or 0.0
    return 0.0
