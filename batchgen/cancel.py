"""`batchgen cancel`: stop a batch's spending, whether or not a run is in progress."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field

import anyio

from batchgen.batch import load_batch, open_ledger, plan_records, set_aside_hidden
from batchgen.client import ApiClient, token_from_env
from batchgen.config import RunConfig
from batchgen.errors import (
    EXIT_JOBS_FAILED,
    EXIT_OK,
    ApiPermanentError,
    ApiTransientError,
    AuthError,
    LedgerError,
)
from batchgen.ledger import CancelRequests, JobRecord, Ledger, LockInfo
from batchgen.ondisk import SheetWriter

# states of a job the provider may still be working on (a `submitting` one has an id only
# once its answer came, and then it is in_queue)
AT_PROVIDER = frozenset({"submitting", "in_queue", "in_progress"})
# how long `cancel` waits for a run in progress to confirm that it submits nothing more
CONFIRM_WAIT = 15.0


@dataclass
class CancelReport:
    """What `batchgen cancel` did."""

    cancelled: list[int] = field(default_factory=list)
    not_cancellable: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    auth_error: AuthError | None = None
    run: LockInfo | None = None  # the run in progress that was told to stop submitting
    confirmed: bool = True  # whether that run confirmed it in time
    never_submitted: list[int] = field(default_factory=list)  # that run's rows, now cancelled

    @property
    def exit_code(self) -> int:
        """0 when the cancel took full effect, 1 when a part of it did not."""
        return EXIT_OK if self.confirmed and not self.errors else EXIT_JOBS_FAILED


def cancel_batch(config: RunConfig) -> CancelReport:
    """Stop the sheet's spending: a run in progress submits nothing more (told through the
    ledger, wherever it runs), and every job still queued at the provider is cancelled."""
    batch = load_batch(config)
    token = token_from_env()
    ledger = open_ledger(config)
    try:
        # jobs may be cancelled: no sheet's rerun mark holds (see batchgen.rerunmark)
        ledger.forget_rerun_marks()
        set_aside_hidden(batch, ledger)
        holder = ledger.live_lock_holder(batch.scope)
        done_before: set[str] = set()
        if holder is not None:
            done_before = {
                k for k, r in plan_records(batch, ledger).items() if r.state == "cancelled"
            }
            # the run cancels its queued jobs itself before it confirms
            confirmed = _stop_submitting(ledger, holder)
        # read once the run stopped submitting: the jobs it submitted last are queued too
        records = plan_records(batch, ledger)
        targets = [r for r in records.values() if r.state in AT_PROVIDER and r.request_id]
        result = anyio.run(_cancel_all, config, token, targets)
        if holder is not None:
            result.run, result.confirmed = holder, confirmed
            by_run = [
                r for k, r in records.items() if r.state == "cancelled" and k not in done_before
            ]
            result.cancelled += [r.sheet_row or 0 for r in by_run if r.request_id]
            result.never_submitted = sorted(r.sheet_row or 0 for r in by_run if not r.request_id)
            result.cancelled.sort()
        if result.auth_error is not None:
            raise result.auth_error
        now = time.time()
        ledger.update_jobs(
            [
                (r.key, {"state": "cancelled", "queue_position": None, "finished_at": now})
                for r in targets
                if r.state == "cancelled"
            ]
        )
        if ledger.live_lock_holder(batch.scope) is None:
            SheetWriter(batch).write(records)  # else the run in progress writes it
    finally:
        try:
            with contextlib.suppress(LedgerError):
                ledger.forget_rerun_marks()  # and none made meanwhile either
        finally:
            ledger.close()
    return result


def _stop_submitting(ledger: Ledger, holder: LockInfo) -> bool:
    """Ask the run in progress to submit nothing more; whether it confirmed in time."""
    requests = CancelRequests(ledger)
    requests.request(holder)
    deadline = time.monotonic() + CONFIRM_WAIT
    while not requests.acknowledged(holder.run_id):
        live = ledger.live_lock_holder(holder.scope)
        if live is None or live.run_id != holder.run_id:
            return True  # it ended
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


async def _cancel_all(config: RunConfig, token: str, targets: list[JobRecord]) -> CancelReport:
    result = CancelReport()
    client = ApiClient(base_url=config.api_base_url, token=token, rate=config.rate)
    async with client, anyio.create_task_group() as tg:
        limit = anyio.Semaphore(8)

        async def one(record: JobRecord) -> None:
            async with limit:
                try:
                    outcome = await client.cancel(record.request_id or "")
                except AuthError as exc:
                    result.auth_error = exc
                    tg.cancel_scope.cancel()
                    return
                except (ApiTransientError, ApiPermanentError) as exc:
                    result.errors.append(f"row {record.sheet_row}: {exc}")
                    return
            if outcome == "cancelled":
                record.state = "cancelled"
                result.cancelled.append(record.sheet_row or 0)
            else:
                result.not_cancellable.append(record.sheet_row or 0)

        for record in targets:
            tg.start_soon(one, record)
    result.cancelled.sort()
    result.not_cancellable.sort()
    return result
