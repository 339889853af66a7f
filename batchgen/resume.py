"""Where a run starts: the sheet's jobs against the ledger, and what is left to do.

A rerun of a 100,000-row sheet that is nearly done must decide what is left at once. The
ledger is read lean (key, row, state and spend of every job); full records are read only for
the jobs this run may act on. The finished jobs' records are read when the sheet is written.
"""

from __future__ import annotations

import threading
import time
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
    finished: list[str] = field(default_factory=list)  # keys whose records are not read yet
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def complete(self, ledger: Ledger, plan: SheetPlan) -> dict[str, JobRecord]:
        """Every job's record: the finished ones are read on first call (thread-safe)."""
        with self._lock:
            if self.finished:
                read = ledger.get_jobs(self.finished, payloads=False)
                for job in plan.jobs:
                    record = read.get(job.key)
                    if record is not None:
                        record.payload = job.payload
                        self.records[job.key] = record
                self.finished = []
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


def resume(plan: SheetPlan, ledger: Ledger, config: RunConfig) -> Resume:
    """Add the sheet's new jobs, follow moved rows, and decide what this run submits."""
    lean = config.download is None  # else every completed video may need downloading
    completed_at = ledger.completed_rows() if lean else {}
    # the one pass over every job, in C: the jobs not completed at their sheet row
    plan_keys = list(map(attrgetter("key"), plan.jobs))
    plan_rows = list(map(attrgetter("row"), plan.jobs))
    differs = map(ne, map(completed_at.get, plan_keys), plan_rows)
    rest = [plan.jobs[i] for i in compress(range(len(plan_keys)), differs)]
    moved = [(job.key, {"sheet_row": job.row}) for job in rest if job.key in completed_at]
    finished = list(completed_at)
    spent = ledger.completed_cost() if finished else 0.0
    if len(plan.jobs) - len(rest) + len(moved) != len(finished):
        # the ledger holds completed jobs the sheet no longer has: count the sheet's only
        orphans = completed_at.keys() - set(plan_keys)
        finished = [key for key in finished if key not in orphans]
        spent -= ledger.completed_cost(list(orphans))

    others = ledger.get_jobs(payloads=False, not_state="completed" if lean else None)
    acting = [job for job in rest if job.key not in completed_at]
    for job in acting:
        if job.key in others and others[job.key].sheet_row != job.row:
            moved.append((job.key, {"sheet_row": job.row}))
    ledger.update_jobs(moved)
    now = time.time()
    new = [_new_record(job, now) for job in acting if job.key not in others]
    ledger.add_jobs(new)
    records = {job.key: others[job.key] for job in acting if job.key in others}
    records.update((record.key, record) for record in new)

    start = report.Outcome(rows=plan.row_count, jobs=len(plan.jobs) + len(plan.invalid))
    if finished:
        start.counts[report.SUCCESS] = len(finished)
    start.estimated_spend = spent
    problems: dict[str, list[int]] = {}
    to_submit: list[str] = []
    changes: list[tuple[str, dict[str, Any]]] = []
    for job in acting:
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
    return Resume(records, to_submit, spent, start, finished)


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
    elif record.state == "failed" and config.retry_failed:
        values = {"state": "pending", "request_id": None, "error": None, "video_url": None}
        changes.append((record.key, values))
        record.update(values)
        to_submit.append(record.key)
    elif record.state == "pending":
        to_submit.append(record.key)
    if record.request_id or record.state == "unknown":
        return record.estimated_cost or 0.0
    return 0.0
