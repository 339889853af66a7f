"""Where a run starts: the sheet's jobs against the ledger, and what is left to do.

A rerun of a 100,000-row sheet that is nearly done must decide what is left at once. Whole
records are read only for the jobs that are not completed; the completed ones are counted
from a covering index, and their records are read when the sheet is first written. When the
sheet's jobs and rows are exactly those its last resume left in the ledger (a plan mark),
even the completed jobs' keys are not read.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from array import array
from collections.abc import Container
from dataclasses import dataclass, field
from itertools import compress
from operator import attrgetter, ne
from typing import Any, Protocol

from batchgen import report
from batchgen.client import is_request_id
from batchgen.config import RunConfig
from batchgen.ledger import JobRecord, Ledger
from batchgen.specs import JobSpec, SheetPlan

log = logging.getLogger("batchgen")
# ledger states with no request_id that a request_id shown in the sheet replaces
ADOPTABLE = ("pending", "unknown")
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
    adopted: int = 0  # jobs the ledger had no request_id for, taken from the sheet
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


def resume(
    plan: SheetPlan,
    ledger: Ledger,
    config: RunConfig,
    *,
    scope: str,
    shown: ShownSource | None = None,
    held: Container[str] = (),
) -> Resume:
    """Add the sheet's new jobs, follow moved rows, and decide what this run submits.

    With `shown` (what the sheet shows of earlier runs), a job the ledger holds no
    request_id for but the sheet does is adopted with that id, never submitted again.
    A job in `held` (of a hidden row) is followed but never submitted, retried or resubmitted.
    """
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
    adopted = 0
    if shown is not None:
        adopted = adopt_shown(
            plan, match.acting, match.records, ledger, shown, completed=match.completed
        )
    problems: dict[str, list[int]] = {}
    to_submit: list[str] = []
    changes: list[tuple[str, dict[str, Any]]] = []
    records = match.records
    others = _claimed_by_live_runs(records, ledger)
    for job in match.acting:
        record = records[job.key]
        record.payload = job.payload  # the sheet's input as it is now: the key's own bytes
        record.sheet_row = job.row
        if job.key not in others:
            spent += _decide(record, config, to_submit, changes, held=job.key in held)
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
    # another live run's claims are not this run's to act on: the sheet reads their records
    # from the ledger when it is written (Resume.complete), as that run leaves them
    acting_keys = {job.key for job in match.acting} - others
    mine = {key: record for key, record in records.items() if key in acting_keys}
    return Resume(mine, to_submit, spent, start, adopted)


def _claimed_by_live_runs(records: dict[str, JobRecord], ledger: Ledger) -> set[str]:
    """The keys of jobs whose claim (`submitting`, or `unknown` after it) belongs to another
    run sharing the ledger that is still alive: that run is sending them, or has just
    decided they are in doubt. They are neither turned `unknown` nor resubmitted here, even
    with --resubmit-unknown; only a claim whose run is gone (no live lock) is."""
    claimed = {
        key: record.claimed_by
        for key, record in records.items()
        if record.state in ("submitting", "unknown")
        and record.claimed_by
        and record.claimed_by != ledger.run_id
    }
    if not claimed:
        return set()
    live = ledger.live_runs(claimed.values())
    theirs = {key for key, run_id in claimed.items() if run_id in live}
    for run_id, holder in live.items():
        count = sum(1 for key in theirs if claimed[key] == run_id)
        log.warning(
            "%d job(s) are being submitted by another run sharing this ledger (process %d "
            "on %s, for %s); left to it",
            count,
            holder.pid,
            holder.host,
            holder.scope,
        )
    return theirs


def _decide(
    record: JobRecord,
    config: RunConfig,
    to_submit: list[str],
    changes: list[tuple[str, dict[str, Any]]],
    *,
    held: bool = False,
) -> float:
    """Whether `record` is submitted this run (and its state fixed first); its spend so far."""
    if record.state == "submitting":
        # sent but never answered before a crash: unknowable, never silently resubmitted
        values: dict[str, Any] = {"state": "unknown", "error": UNKNOWN_ERROR}
        changes.append((record.key, values))
        record.update(values)
    if held:
        pass  # a hidden row's job: followed if it was sent, never sent (again) while hidden
    elif record.state == "unknown" and config.resubmit_unknown:
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


# --------------------------------------------------------------------------- the sheet as a ledger


class ShownSource(Protocol):
    """What a sheet shows of earlier runs (batchgen.shown.Shown)."""

    def cells(self, number: int) -> dict[str, str] | None:
        """Row `number`'s output cells by column name, or None when it shows no request_id."""

    def results(self) -> dict[str, dict[str, str]]:
        """The results table's rows that show a request_id, by job key."""


def adopt_shown(
    plan: SheetPlan,
    acting: list[JobSpec],
    records: dict[str, JobRecord],
    ledger: Ledger,
    shown: ShownSource,
    *,
    completed: int,
) -> int:
    """Adopt every job the ledger holds no request_id for but the sheet shows one; how many.

    An adopted job is followed by that id (or, shown completed with a video, done): a lost,
    emptied or replaced ledger never makes a rerun pay again for what the sheet shows.
    """
    waiting = [
        job
        for job in acting
        if records[job.key].state in ADOPTABLE and not records[job.key].request_id
    ]
    showing = {job.key for job in waiting if shown.cells(job.row) is not None}
    # a ledger that knows nothing of the sheet is new, emptied or another's: the results
    # table may show what the cells no longer do (it is read only then: it can be large)
    knew_nothing = completed == 0 and len(waiting) == len(acting)
    if not showing and not (waiting and knew_nothing):
        return 0
    by_key = shown.results()  # exact, by job key; a row's cells are matched by position
    owner = {values["request_id"].strip(): key for key, values in by_key.items()}
    by_row = plan.jobs_by_row()
    now = time.time()
    candidates: list[JobRecord] = []
    for job in waiting:
        values = by_key.get(job.key)
        if values is None and job.key in showing:
            values = _row_lines(job, by_row[job.row], shown.cells(job.row))
        request_id = values.get("request_id", "").strip() if values else ""
        if not is_request_id(request_id) or owner.get(request_id, job.key) != job.key:
            continue  # not an id, or another job's (its prompt was edited since)
        assert values is not None
        candidates.append(_adopted(records[job.key], request_id, values, now))
    won = ledger.adopt_jobs(candidates)
    for record in candidates:
        if record.key in won:
            records[record.key] = record
    return len(won)


def _row_lines(
    job: JobSpec, row_jobs: list[JobSpec], cells: dict[str, str] | None
) -> dict[str, str] | None:
    """The line of each of a row's output cells that belongs to `job`.

    Lines that start with the name of one of the row's jobs (`9:16: `, as this version
    writes them) are matched by that name: a row whose variants were changed, reordered or
    cut since never hands one job's request id to another. Cells written by older
    versions (bare lines, `[ratio=9:16] ` or `model, ratio=9:16: ` prefixes) are matched
    line by line, and only while the row still has as many jobs as the cell has lines.
    """
    if cells is None:
        return None
    names = [f"{other.label}: " for other in row_jobs if other.label]
    own = f"{job.label}: " if job.label else None
    out: dict[str, str] = {}
    for column, text in cells.items():
        lines = [line.strip() for line in text.split("\n")]
        if own is not None and any(line.startswith(n) for line in lines for n in names):
            mine = [line.removeprefix(own) for line in lines if line.startswith(own)]
            if len(mine) != 1 and column == "request_id":
                return None  # not shown (a variant added since), or shown twice: not sure
            out[column] = mine[0].strip() if len(mine) == 1 else ""
            continue
        if len(row_jobs) == 1:
            lines = [text.strip()]
        if len(lines) != len(row_jobs):
            if column == "request_id":
                return None  # the row's variants changed since: no line is surely this job's
            lines = [""] * len(row_jobs)
        line = lines[row_jobs.index(job)]
        for former in {job.label, job.former_label} - {""}:
            line = line.removeprefix(f"{former}:").removeprefix(f"[{former}]").strip()
        out[column] = line
    return out


def _adopted(record: JobRecord, request_id: str, values: dict[str, str], now: float) -> JobRecord:
    """`record` as the sheet shows it: finished if it says so (with its video), else in flight."""
    status = values.get("status", "").strip().lower()
    video_url = values.get("video_url", "").strip() or None
    error = values.get("error", "").strip() or None
    state, finished_at = "in_queue", None
    if status == "completed" and video_url:
        state, finished_at = "completed", now
    elif status in ("failed", "cancelled"):
        state, finished_at = status, now
    adopted = JobRecord(**vars(record))
    adopted.update(
        {
            "state": state,
            "request_id": request_id,
            "video_url": video_url if state == "completed" else None,
            "error": error if state == "failed" else None,
            "finished_at": finished_at,
            "submitted_at": now,
        }
    )
    return adopted
