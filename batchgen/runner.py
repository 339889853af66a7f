"""One run of a batch: reconcile the sheet with the ledger, run the pool, write the sheet.

The public API: `run_batch` and `cancel_batch` here, and `check_batch`, `batch_status` and
`report_batch`, which need no API client and live in `batch` (re-exported here).
"""

from __future__ import annotations

import contextlib
import logging
import re
import signal
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from batchgen import officelock, paths, report, rerunmark, sheets
from batchgen.batch import (
    Batch,
    CheckResult,
    StatusReport,
    batch_status,
    bulk_allocations,
    check_batch,
    check_prices,
    eta_seconds,
    load_batch,
    open_ledger,
    report_batch,
    set_aside_hidden,
    write_sheet,
)
from batchgen.cancel import CancelReport, cancel_batch
from batchgen.client import ApiClient, RetryPolicy, check_token, token_from_env
from batchgen.config import RunConfig
from batchgen.errors import (
    EXIT_JOBS_FAILED,
    EXIT_OK,
    EXIT_SIGINT,
    EXIT_SIGTERM,
    LedgerError,
    SheetError,
)
from batchgen.ledger import CancelRequests, JobRecord, Ledger, ledger_exists, ledger_url
from batchgen.ondisk import SheetWriter
from batchgen.pool import CancelHooks, EngineOptions, Events, Pool
from batchgen.resume import Resume, resume
from batchgen.sheetlock import SheetLock
from batchgen.shown import Shown

__all__ = [
    "Batch",
    "CancelReport",
    "CheckResult",
    "RunResult",
    "StatusReport",
    "batch_status",
    "cancel_batch",
    "check_batch",
    "eta_seconds",
    "load_batch",
    "open_ledger",
    "report_batch",
    "run_batch",
    "write_sheet",
]

log = logging.getLogger("batchgen")
# POSTs awaiting their answer at once: enough to hide two group commits per submit, few
# enough that a crash leaves at most this many jobs in doubt (`unknown`)
SUBMITS_IN_FLIGHT = 48
# the calls ApiClient counts: a quick rerun reports none of each, as a run that made none does
CALL_KINDS = ("submit", "status", "result", "cancel")


@dataclass
class RunResult:
    """How a run ended."""

    outcome: report.Outcome
    exit_code: int
    written_to: Path | None
    notices: list[str] = field(default_factory=list)
    stopped_by: str | None = None
    calls: dict[str, int] = field(default_factory=dict)
    cancelled_by: str | None = None  # who stopped it with `batchgen cancel`
    sheet_note: str | None = None  # where the results went when the sheet changed mid-run


def refuse_unsure_headers(batch: Batch, *, say: bool = True) -> list[tuple[int, str]]:
    """Say how headers were read; refuse (before anything is paid) headers that need a word.

    Returns what is said, (level, message): a rerun mark repeats it (see rerunmark). With
    `say` false it was said already (by a quick rerun that found the sheet changed).
    """
    columns = batch.plan.columns
    name = batch.config.sheet.name
    notes: list[tuple[int, str]] = []
    if columns.mapped:
        mapped = ", ".join(map(str, columns.mapped))
        notes.append((logging.INFO, f"{name}: headers read as inputs: {mapped}"))
    if columns.unsure:
        _say(notes if say else [])
        raise SheetError(f"{name}: {columns.unsure_text()}; nothing was sent")
    outputs = sheets.output_plan(batch.table)
    if (outputs.kept or outputs.skipped) and not outputs.refused:
        notes.append((logging.WARNING, f"{name}: {report.output_columns_text(batch.table)}"))
    _say(notes if say else [])
    return notes


def _say(notes: list[tuple[int, str]]) -> None:
    for level, message in notes:
        log.log(level, "%s", message)


def download_name(batch: Batch) -> Callable[[JobRecord], str]:
    """Stable, filesystem-safe file names: row, a name/variant column when present, the job."""
    headers = [h.strip().lower() for h in batch.table.headers]
    column = next((headers.index(n) for n in ("variant", "name") if n in headers), None)
    by_row = {row.number: row.values for row in batch.table.rows}

    def name(record: JobRecord) -> str:
        parts = [f"row{record.sheet_row:05d}" if record.sheet_row else "row"]
        values = by_row.get(record.sheet_row or -1)
        if column is not None and values is not None and column < len(values) and values[column]:
            parts.append(str(values[column]))
        if record.label:
            parts.append(record.label)
        parts.append(record.key[:8])
        stem = re.sub(r"[^A-Za-z0-9._-]+", "-", "_".join(parts)).strip("-.")[:150]
        return stem + ".mp4"

    return name


def run_batch(
    config: RunConfig, *, events: Events, observer: Any = None, token: str | None = None
) -> RunResult:
    """Run a sheet end to end; the sheet is written during the run and at the end."""
    settings = rerunmark.settings_digest(config)  # before the sheet and models are read
    quick = _quick_rerun(config, settings, observer=observer, token=token)
    if isinstance(quick, RunResult):
        return quick
    batch = load_batch(config)
    notes = refuse_unsure_headers(batch, say=quick is None)
    # a hidden row is set aside, so it cannot make the sheet invalid
    invalid = [p for row, p in batch.plan.invalid.items() if row not in batch.plan.hidden]
    if config.strict and invalid:
        first = invalid[0][0]
        count = len(invalid)
        raise SheetError(
            f"{config.sheet.name}: {count} invalid row(s), --strict refuses the sheet; "
            f"first: {first}"
        )
    check_prices(batch)
    token = check_token(token) if token else token_from_env()
    # the sheet is first written at the first checkpoint (5 s), not at the start: a short
    # run would spend a write on cells that only say "pending"; but a sheet that cannot be
    # written (read-only, a folder without room for a temporary file) is refused first
    sheets.check_writable(batch.table, output=config.output, jobs=len(batch.plan.jobs))
    target = Path(config.output or config.sheet)
    officelock.refuse_if_open(target, paths.shown(target))
    # one run per sheet file on this machine, by whatever path or ledger (see sheetlock)
    sheet_lock = SheetLock.acquire(config.sheet)
    try:
        marking = rerunmark.Marking(settings, notes)
        return _run_locked(
            batch, sheet_lock, events=events, observer=observer, token=token, marking=marking
        )
    finally:
        sheet_lock.release()


def _quick_rerun(
    config: RunConfig, settings: str | None, *, observer: Any, token: str | None
) -> RunResult | bool | None:
    """A rerun with nothing to do, answered from the ledger's rerun mark (see rerunmark).

    None: no mark applies, take the whole way; False: the same, the header notes said.
    """
    if settings is None or config.output is not None or config.download is not None:
        return None
    digest = rerunmark.current_digest(config, settings)
    if digest is None or not ledger_exists(ledger_url(config.db, config.sheet)):
        return None
    scope = str(config.sheet.resolve())
    ledger = open_ledger(config)
    try:
        mark = rerunmark.matching_mark(ledger, scope, digest)
        if mark is None or (mark.unpriced and config.max_cost is not None):
            return None
        # what the whole way does before it locks the sheet, in its order
        _say(mark.notes)
        token = check_token(token) if token else token_from_env()
        target = Path(config.sheet)
        sheets.check_writable_file(target, sheets.kind_of(target))
        officelock.refuse_if_open(target, paths.shown(target))
        sheet_lock = SheetLock.acquire(config.sheet)
        try:
            run_id = uuid.uuid4().hex
            ledger.acquire_lock(scope, run_id=run_id)
            try:
                if rerunmark.matching_mark(ledger, scope, digest) is None:
                    return False  # a run came and went since the first look
                _say_removed(sheets.remove_stale_temp_files_of(target, sheets.kind_of(target)))
                outcome = mark.result_outcome()
                if observer is not None:
                    observer.start(rerunmark.Marked(config, mark.row_count), outcome)
            finally:
                try:
                    with contextlib.suppress(LedgerError):
                        CancelRequests(ledger).forget(run_id)
                finally:
                    ledger.release_lock(scope, run_id=run_id)
        finally:
            sheet_lock.release()
    finally:
        ledger.close()
    calls = dict.fromkeys(CALL_KINDS, 0)
    return RunResult(outcome, EXIT_OK, target, calls=calls)


def _run_locked(
    batch: Batch,
    sheet_lock: SheetLock,
    *,
    events: Events,
    observer: Any,
    token: str,
    marking: rerunmark.Marking,
) -> RunResult:
    """run_batch, with the sheet file locked."""
    config = batch.config
    ledger = open_ledger(config)
    run_id = uuid.uuid4().hex
    ledger.acquire_lock(batch.scope, run_id=run_id)
    try:
        # this run may change job records: no sheet's rerun mark holds until it has ended;
        # and it marks its own sheet only if no other run or cancel started or ended since
        ledger.forget_rerun_marks()
        marking.generation = ledger.rerun_generation()  # before any record is read
        _remove_stale_temp_files(batch)
        with bulk_allocations():
            shown = Shown(batch.table, output=config.output)
            held = set_aside_hidden(batch, ledger, shown)
            start = resume(batch.plan, ledger, config, scope=batch.scope, shown=shown, held=held)
        if batch.plan.set_aside or held:
            log.info("%s: %s", config.sheet.name, report.hidden_text(batch.table, batch.plan))
        if start.adopted:
            log.warning(
                "rebuilt the ledger from the sheet: %d job(s) the ledger %s had no request_id "
                "for are shown in the sheet with one; they are followed by that id and never "
                "submitted again",
                start.adopted,
                ledger.display_url,
            )
        if observer is not None:
            observer.start(batch, start.start)
        writer = SheetWriter(batch)
        pool = _make_pool(batch, ledger, start, token, events, run_id, sheet_lock, writer)
        anyio.run(pool.run)
        unread: LedgerError | None = None
        try:
            with bulk_allocations():
                records = start.complete(ledger, batch.plan)
        except LedgerError as exc:
            # the rows of this run's jobs are still written (their request_ids may be
            # nowhere else if the ledger failed); rows without a record are left as they are
            unread, records = exc, start.records
        unwritten: SheetError | None = None
        try:
            written: Path | None = writer.write(records)
            sheet_lock.follow()
        except SheetError as exc:
            if not any(record.request_id for record in records.values()):
                raise  # nothing was paid for: nothing could start
            unwritten, written = exc, None
        outcome = report.outcome(batch.plan, records)
        ended_clean = unread is None and unwritten is None and not pool.notices
        ended_clean &= pool.fatal is None and pool.stop_signal is None
        ended_clean &= pool.cancelled_by is None and pool.gave_up is None
        ended_clean &= writer.note is None  # the results went elsewhere than the sheet loaded
        marking.ready(batch, outcome, ended_clean=ended_clean and not ledger.lost)
    finally:
        try:
            with contextlib.suppress(LedgerError):  # never hide why the run ended
                CancelRequests(ledger).forget(run_id)
            with contextlib.suppress(LedgerError):
                if not ledger.lost:  # marks forgotten again: this run may have changed jobs
                    ledger.forget_rerun_marks(
                        scope=batch.scope if marking.digest else None,
                        generation=marking.generation,
                        digest=marking.digest,
                        body=marking.body,
                    )
        finally:
            if not ledger.lost:  # a deleted ledger has no lock left to release
                ledger.release_lock(batch.scope, run_id=run_id)
            ledger.close()
    if pool.fatal is not None:
        raise pool.fatal
    if unread is not None:
        raise unread
    stopped = None
    code = EXIT_OK if outcome.all_completed else EXIT_JOBS_FAILED
    if unwritten is not None:
        log.error(_unwritten_message(batch, unwritten))
        code = EXIT_JOBS_FAILED  # jobs were paid for: not "nothing could start"
    if pool.stop_signal is not None:
        stopped = "SIGINT" if pool.stop_signal == signal.SIGINT else "SIGTERM"
        code = EXIT_SIGINT if pool.stop_signal == signal.SIGINT else EXIT_SIGTERM
    if pool.cancelled_by is not None and code == EXIT_OK:
        code = EXIT_JOBS_FAILED  # a cancelled run never says all is done
    if pool.gave_up is not None and stopped is None:
        stopped = f"--give-up-after (the API did not answer for {pool.gave_up:.0f} s)"
        code = EXIT_JOBS_FAILED
    return RunResult(
        outcome,
        code,
        written,
        list(pool.notices),
        stopped,
        dict(pool.client_calls),
        pool.cancelled_by,
        writer.note,
    )


def _remove_stale_temp_files(batch: Batch) -> None:
    """Remove what an interrupted write-back left beside the sheet (the run holds its lock)."""
    _say_removed(sheets.remove_stale_temp_files(batch.table, output=batch.config.output))


def _say_removed(removed: list[Path]) -> None:
    if removed:
        names = ", ".join(path.name for path in removed)
        log.info("removed temporary file(s) of an interrupted write-back: %s", names)


def _unwritten_message(batch: Batch, error: SheetError) -> str:
    """What to do when the results could not be written after jobs were paid for."""
    config = batch.config
    target = config.jobfile or config.sheet
    other = config.sheet.with_name(f"{config.sheet.stem}-results{config.sheet.suffix}")
    return (
        f"the results could not be written: {error}. Every job's result is kept in the "
        f"ledger: `batchgen status {target}` shows them, and `batchgen run {target} "
        f"--output {other}` writes them to another file without submitting anything again"
    )


def _make_pool(
    batch: Batch,
    ledger: Ledger,
    start: Resume,
    token: str,
    events: Events,
    run_id: str,
    sheet_lock: SheetLock,
    writer: SheetWriter,
) -> Pool:
    config = batch.config
    options = EngineOptions(
        concurrency=config.concurrency,
        max_cost=config.max_cost,
        job_timeout=config.job_timeout,
        give_up_after=config.give_up_after,
        cancel_on_exit=config.cancel_on_exit,
        download_dir=config.download,
        download_name=download_name(batch) if config.download else None,
        submits_in_flight=min(SUBMITS_IN_FLIGHT, config.concurrency),
    )
    acting = dict(start.records)  # the pool's own map: finished records join only the run's

    def checkpoint(write: bool) -> bool:
        # in a worker thread: the first one reads the finished jobs' records
        with bulk_allocations():
            records = start.complete(ledger, batch.plan)
        if write:
            writer.write(records)
            sheet_lock.follow()  # the written sheet is a new file: lock its identity too
        counts = report.outcome(batch.plan, records).counts
        return ledger.heartbeat(batch.scope, run_id=run_id, progress=dict(counts))

    client = ApiClient(
        base_url=config.api_base_url,
        token=token,
        max_connections=min(max(4, config.concurrency + 4), 16),
        retry=RetryPolicy(),
        rate=config.rate,
    )
    cancels = CancelRequests(ledger)
    pool = Pool(
        ledger=ledger,
        client=client,
        records=acting,
        to_submit=start.to_submit,
        options=options,
        events=events,
        checkpoint=checkpoint,
        spent=start.spent,
    )
    pool.cancel_hooks = CancelHooks(
        requested=lambda: cancels.requested(run_id),
        acknowledge=lambda: cancels.acknowledge(run_id),
    )
    return pool
