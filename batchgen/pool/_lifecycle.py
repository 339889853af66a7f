"""The anyio worker pool: submit with a write-ahead ledger, poll, fetch results, stop cleanly."""

from __future__ import annotations

import logging
import signal
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import anyio
from anyio.abc import TaskGroup

from batchgen.client import FINAL_STATUSES, ApiClient, JobStatus, normalise_status
from batchgen.errors import (
    ApiError,
    ApiPermanentError,
    ApiTransientError,
    AuthError,
    BalanceError,
    LedgerError,
    NotFoundError,
    SheetLockedError,
    SubmitUncertainError,
)
from batchgen.groupcommit import LedgerWriter
from batchgen.ledger import JobRecord, Ledger
from batchgen.pacing import InFlightLimit, PollClock

log = logging.getLogger("batchgen")
IN_FLIGHT = frozenset({"submitting", "in_queue", "in_progress"})
_UNKNOWN_HINT = (
    "the submit may have reached RunComfy but its answer was lost; check your RunComfy "
    "dashboard, then rerun with --resubmit-unknown to submit it again"
)


class Events(Protocol):
    """What the engine tells whoever is watching (progress display, logs)."""

    def job_changed(self, record: JobRecord, previous: str) -> None:
        """A job moved from `previous` to `record.state`."""

    def notice(self, message: str) -> None:
        """Something the user should read (balance, rate limits, a stop)."""


@dataclass(kw_only=True)
class EngineOptions:
    """Knobs of one run of the pool."""

    concurrency: int = 4
    max_cost: float | None = None
    job_timeout: float = 1800.0
    cancel_on_exit: bool = False
    download_dir: Path | None = None
    download_name: Callable[[JobRecord], str] | None = None
    checkpoint_every: float = 5.0
    submits_in_flight: int = 8
    stop_grace: float = 5.0  # after a signal: how long submits in flight may take
    cancel_grace: float = 2.0  # then: how long --cancel-on-exit may take
    heartbeat_every: float = 20.0  # how often the run lock is renewed


class Pool:
    """Runs a set of ledger jobs to the end, or until stopped."""

    def __init__(
        self,
        *,
        ledger: Ledger,
        client: ApiClient,
        records: dict[str, JobRecord],
        to_submit: list[str],
        options: EngineOptions,
        events: Events,
        checkpoint: Callable[[bool], bool] | None = None,
        spent: float = 0.0,
    ) -> None:
        self.ledger = ledger
        self.client = client
        self.records = records
        self.options = options
        self.events = events
        self._checkpoint = checkpoint
        self._pending = deque(to_submit)
        self.clock = PollClock()
        self.limit = InFlightLimit(options.concurrency)
        client.on_rate_limited = self.limit.rate_limited
        self.spent = spent
        self.stop_signal: int | None = None
        self.fatal: BaseException | None = None
        self.balance_exhausted = False
        self.budget_blocked = 0
        self._in_flight = 0
        self._submitting = 0
        self._reached = False  # any answer from the API at all this run
        self._poll_results = True  # check jobs with the result call (see _look)
        self._sent: set[str] = set()  # submits whose request left (fate unknown if cut off)
        self._polls: TaskGroup | None = None
        self._follow_scopes: set[anyio.CancelScope] = set()  # submit tasks now polling
        self._dirty = True
        self.notices: list[str] = []

    @property
    def client_calls(self) -> dict[str, int]:
        """API calls made so far, by kind."""
        return self.client.calls

    def _on_ledger_failure(self, error: LedgerError) -> None:
        self.fatal = error
        self._stop_polls()
        self._submit_scope.cancel()
        self._wake()

    def _on_lock_lost(self) -> None:
        # another runner decided we were dead and took the sheet: stop before paying twice
        self.fatal = SheetLockedError("another run took over this sheet's lock; stopped")
        self._stop_polls()
        self._wake()

    def _stop_polls(self) -> None:
        """Cancel every poll: the poll group's and those that submit tasks went on to."""
        self._poll_scope.cancel()
        for scope in self._follow_scopes:
            scope.cancel()

    def _notice(self, message: str) -> None:
        self.notices.append(message)
        self.events.notice(message)

    # state changes ------------------------------------------------------------

    async def _set(self, key: str, *, durable: bool = False, **values: Any) -> JobRecord:
        record = self.records[key]
        previous = record.state
        record.update(values)
        record.updated_at = time.time()
        await self.writer.write(key, values, durable=durable)
        self._dirty = True
        if record.state != previous:
            self.events.job_changed(record, previous)
        return record

    def _release(self) -> None:
        self._in_flight -= 1
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    # the run ------------------------------------------------------------------

    def _open(self) -> None:
        # anyio primitives need the running event loop, so they are made here, not in __init__
        self.writer = LedgerWriter(self.ledger, self._on_ledger_failure)
        self._changed = anyio.Event()
        self._learned = anyio.Event()  # set once the clock knows typical turnarounds
        self._poll_scope = anyio.CancelScope()
        self._submit_scope = anyio.CancelScope()
        self._submit_slots = anyio.Semaphore(
            max(1, self.options.submits_in_flight), fast_acquire=True
        )
        self._download_slots = anyio.Semaphore(4)

    async def run(self) -> None:
        """Submit and poll until every job is final, the budget/balance stops it, or a signal."""
        self._open()
        self._started = time.monotonic()
        async with self.client, anyio.create_task_group() as main:
            main.start_soon(self.writer.run)
            main.start_soon(self._watch_signals)
            main.start_soon(self._checkpoints)
            async with anyio.create_task_group() as work:
                work.start_soon(self._poll_group)
                work.start_soon(self._submit_group)
            if self.stop_signal is not None and self.options.cancel_on_exit and self.fatal is None:
                await self._cancel_queued()
            await self._settle_unanswered()
            await self.writer.flush()
            main.cancel_scope.cancel()

    async def _poll_group(self) -> None:
        with self._poll_scope:
            async with anyio.create_task_group() as polls:
                self._polls = polls
                for key, record in self.records.items():
                    if record.state in ("in_queue", "in_progress") and record.request_id:
                        self._in_flight += 1
                        polls.start_soon(self._poll, key)
                    elif record.state == "completed" and self.options.download_dir is not None:
                        polls.start_soon(self._download, key)
                # keep the group open while submit tasks (polling on) may still add downloads
                while not self._submits_done:
                    await self._changed.wait()

    _submits_done = False

    async def _submit_group(self) -> None:
        while self._polls is None:
            await anyio.sleep(0)
        with self._submit_scope:
            async with anyio.create_task_group() as submits:
                await self._feed(submits)
        self._submits_done = True
        self._wake()

    async def _feed(self, submits: TaskGroup) -> None:
        """Start submits while there is room; wait for refused ones that come back."""
        while not self._stopping:
            self.clock.draining = not self._pending
            if not self._pending:
                if self._submitting == 0:
                    return
                await self._changed.wait()
                continue
            if self._in_flight >= self.limit.value:
                await self._changed.wait()
                continue
            key = self._pending.popleft()
            record = self.records[key]
            cost = record.estimated_cost or 0.0
            cap = self.options.max_cost
            if cap is not None and self.spent + cost > cap + 1e-9:
                self.budget_blocked += 1
                await self._set(
                    key,
                    error=f"not submitted: it would take the estimated spend past --max-cost "
                    f"${cap:.2f}; rerun with a larger cap to continue",
                )
                continue
            await self._submit_slots.acquire()
            if self._stopping:  # a stop came while waiting for a slot
                self._submit_slots.release()
                self._pending.appendleft(key)
                return
            self._in_flight += 1
            self._submitting += 1
            self.spent += cost
            submits.start_soon(self._submit, key)

    @property
    def _stopping(self) -> bool:
        return self.stop_signal is not None or self.fatal is not None or self.balance_exhausted

    async def _submit(self, key: str) -> None:
        record = self.records[key]
        keep_slot = False
        try:
            if not await self._claim(key):
                return
            try:
                answer = await self.client.submit(
                    record.model_id, record.payload, on_send=lambda: self._sent.add(key)
                )
            except SubmitUncertainError as exc:
                await self._set(key, durable=True, state="unknown", error=f"{exc}; {_UNKNOWN_HINT}")
                return
            except (AuthError, BalanceError, ApiTransientError) as exc:
                # provably not created: the job goes back to pending, untouched
                await self._set(key, durable=True, state="pending", error=None)
                self.spent -= record.estimated_cost or 0.0
                self._on_submit_refused(key, exc)
                return
            except ApiPermanentError as exc:
                await self._set(key, durable=True, state="failed", error=str(exc))
                return
            self._reached = True
            state = normalise_status(answer.status)
            await self._set(
                key,
                durable=True,
                state=state if state in ("in_queue", "in_progress") else "in_queue",
                request_id=answer.request_id,
            )
            self.limit.succeeded()
            keep_slot = not self._poll_scope.cancel_called
        finally:
            self._submitting -= 1
            self._submit_slots.release()
            if not keep_slot:
                self._release()
            else:
                self._wake()
        if not keep_slot:
            return
        # this task follows the job on (a task per job, not one to submit and one to poll);
        # its own scope, so stopping the polls leaves the other submits running
        with anyio.CancelScope() as scope:
            self._follow_scopes.add(scope)
            try:
                await self._poll(key)
            finally:
                self._follow_scopes.discard(scope)

    async def _claim(self, key: str) -> bool:
        """Write-ahead: mark the job `submitting` if its ledger state is still ours.

        The update is conditional, so of several runners sharing one ledger only one
        submits a given job; the others leave it to that one.
        """
        record = self.records[key]
        claimed_at = await self.writer.claim(key, expect=record.state)
        if claimed_at is None:
            if self.writer.failure is not None:
                return False
            # shown in this sheet only: the ledger row belongs to the run that claimed it
            record.error = "another run sharing this ledger submitted this job; rerun to see it"
            self._dirty = True
            log.warning("row %s: another run is submitting this job; left to it", record.sheet_row)
            return False
        previous = record.state
        record.update(
            {
                "state": "submitting",
                "submit_attempts": record.submit_attempts + 1,
                "submitted_at": claimed_at,
                "error": None,
            }
        )
        self._dirty = True
        self.events.job_changed(record, previous)
        return True

    def _on_submit_refused(self, key: str, exc: BaseException) -> None:
        if isinstance(exc, AuthError):
            # stop at once, but let submits already sent hear their (401) answers
            self.fatal = exc
            self._stop_polls()
        elif isinstance(exc, BalanceError):
            if not self.balance_exhausted:
                self._notice(
                    f"{exc}: submitting stopped; jobs already submitted are still followed"
                )
            self.balance_exhausted = True
        elif isinstance(exc, ApiTransientError) and exc.status_code is None and not self._reached:
            # never got through to the API at all: nothing can start
            self.fatal = exc
            self._stop_polls()
        else:
            # a 429 after retries: this job goes to the back of the line
            self._pending.append(key)
        self._wake()

    async def _poll(self, key: str) -> None:
        record = self.records[key]
        checks = 0
        # monotonic time of the submit, also for jobs resumed from an earlier run
        submitted = time.monotonic() - max(0.0, time.time() - (record.submitted_at or time.time()))
        last_look = submitted
        # --job-timeout counts from the submit, or from this run's start for an older job
        followed_since = max(submitted, self._started)
        # the first few jobs of a run are looked at early, so the clock learns soon
        probe = self.clock.take_probe()
        try:
            while True:
                delay = self.clock.next_delay(
                    state=record.state,
                    age=time.monotonic() - submitted,
                    checks=checks,
                    queue_position=record.queue_position,
                    probe=probe,
                )
                if self.clock.learned:
                    await anyio.sleep(delay)
                else:
                    with anyio.move_on_after(delay) as waited:
                        await self._learned.wait()
                    if not waited.cancelled_caught:
                        continue  # the clock learned meanwhile: place this check anew
                checks += 1
                try:
                    answer, is_result = await self._look(record.request_id or "")
                except NotFoundError as exc:
                    await self._set(key, state="failed", error=str(exc), finished_at=time.time())
                    return
                except AuthError as exc:
                    self._on_submit_refused(key, exc)
                    return
                except ApiError:
                    # anything else (5xx, 402 on a poll, bad answers) may pass: look again later
                    answer = None
                done = answer is not None and normalise_status(answer.status) in FINAL_STATUSES
                if not done and time.monotonic() - followed_since > self.options.job_timeout:
                    await self._set(
                        key,
                        error=f"still {record.state} after "
                        f"{self.options.job_timeout / 60:g} min (request "
                        f"{record.request_id}); a rerun keeps following it",
                    )
                    return
                if answer is None:
                    continue
                self._reached = True
                state = normalise_status(answer.status)
                if state in FINAL_STATUSES:
                    turnaround = answer.server_turnaround
                    if turnaround is None or turnaround < 0:
                        # it finished somewhere between the last look and this one
                        turnaround = (last_look + time.monotonic()) / 2 - submitted
                    else:
                        # it was not done at the last look, whatever the server's clock says
                        turnaround = max(turnaround, last_look - submitted)
                    self.clock.observe(turnaround)
                    if self.clock.learned:
                        self._learned.set()
                    if await self._finish(key, state, answer if is_result else None):
                        return
                    continue
                last_look = time.monotonic()
                if state == "in_queue":
                    self.clock.saw_queued()
                if state != record.state or answer.queue_position != record.queue_position:
                    extra = {"started_at": time.time()} if state == "in_progress" else {}
                    await self._set(key, state=state, queue_position=answer.queue_position, **extra)
        finally:
            self._release()

    async def _look(self, request_id: str) -> tuple[JobStatus, bool]:
        """One check of a job; (answer, whether it is the result answer).

        The result call answers with the current status until the job is done (API.md), so
        one call per check serves both; an API that refuses it early gets status calls.
        """
        if self._poll_results:
            try:
                return await self.client.result(request_id), True
            except NotFoundError:
                # an API that says 404 to results not ready yet: trust status to decide
                status = await self.client.status(request_id)  # a real 404 raises here
                self._poll_results = False
                log.info("the API answers 404 to early result calls; polling status")
                return status, False
            except ApiPermanentError as exc:
                if exc.status_code not in (400, 405, 422) or isinstance(exc, BalanceError):
                    raise
                self._poll_results = False
                log.info("the API refuses result calls before the end (%s); polling status", exc)
        return await self.client.status(request_id), False

    async def _finish(self, key: str, state: str, result: JobStatus | None) -> bool:
        """Record a final state (fetching the result if needed); False if it is not ready."""
        if state == "cancelled":
            await self._set(key, state="cancelled", queue_position=None, finished_at=time.time())
            return True
        record = self.records[key]
        if result is None:
            try:
                result = await self.client.result(record.request_id or "")
            except NotFoundError as exc:
                await self._set(key, state="failed", error=str(exc), finished_at=time.time())
                return True
            except AuthError as exc:
                self._on_submit_refused(key, exc)
                return True
            except ApiError:
                return False  # it finished; the next look fetches the result again
        final = normalise_status(result.status)
        if final not in FINAL_STATUSES:
            return False
        if final == "completed" and not result.video_url:
            final = "failed"
            error = result.error or "the API reported completion but gave no video URL"
        else:
            error = result.error if final != "completed" else None
        if final == "failed" and not error:
            error = "the API reported the job failed without a reason"
        await self._set(
            key,
            state=final,
            video_url=result.video_url,
            error=error,
            cost=result.cost,
            queue_position=None,
            finished_at=time.time(),
        )
        if final == "completed" and self.options.download_dir is not None:
            assert self._polls is not None
            self._polls.start_soon(self._download, key)
        return True

    async def _download(self, key: str) -> None:
        record = self.records[key]
        directory = self.options.download_dir
        if directory is None or not record.video_url or self.options.download_name is None:
            return
        dest = directory / self.options.download_name(record)
        if dest.is_file() and dest.stat().st_size > 0:
            if record.download_path != str(dest):
                await self._set(key, download_path=str(dest))
            return
        async with self._download_slots:
            try:
                directory.mkdir(parents=True, exist_ok=True)
                await self.client.download(record.video_url, dest)
            except (ApiTransientError, OSError) as exc:
                self._notice(f"row {record.sheet_row}: download failed: {exc}")
                return
        await self._set(key, download_path=str(dest))

    async def _cancel_queued(self) -> None:
        """--cancel-on-exit: cancel what is still queued, a few at a time, within a deadline."""
        limit = anyio.Semaphore(8)

        async def cancel_one(key: str, request_id: str) -> None:
            async with limit:
                try:
                    outcome = await self.client.cancel(request_id)
                except (ApiTransientError, ApiPermanentError):
                    return
            if outcome == "cancelled":
                await self._set(key, state="cancelled", finished_at=time.time())

        with anyio.move_on_after(self.options.cancel_grace):
            async with anyio.create_task_group() as tg:
                for key, record in list(self.records.items()):
                    if record.state == "in_queue" and record.request_id:
                        tg.start_soon(cancel_one, key, record.request_id)

    async def _settle_unanswered(self) -> None:
        """Submits cut off by a stop: unknown if the request left, else simply pending."""
        for key, record in self.records.items():
            if record.state != "submitting":
                continue
            if key in self._sent:
                await self._set(
                    key, state="unknown", error=f"no answer before the stop; {_UNKNOWN_HINT}"
                )
            else:
                await self._set(key, state="pending", error=None)

    async def _watch_signals(self) -> None:
        try:
            receiver = anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM)
        except (ValueError, NotImplementedError):
            return  # not the main thread: whoever runs us handles signals
        with receiver as signals:
            async for signum in signals:
                if self.stop_signal is None:
                    self.stop_signal = signum
                    name = "SIGINT" if signum == signal.SIGINT else "SIGTERM"
                    self._notice(f"{name} received: stopping; waiting for submits in flight")
                    self._stop_polls()
                    self._submit_scope.deadline = anyio.current_time() + self.options.stop_grace
                    self._wake()
                else:
                    self._submit_scope.cancel()

    async def _checkpoints(self) -> None:
        """Write the sheet when something changed, and renew the run lock, on their own clocks."""
        if self._checkpoint is None:
            return
        interval = self.options.checkpoint_every
        last_write = last_beat = time.monotonic()
        while True:
            await anyio.sleep(min(interval, self.options.heartbeat_every))
            now = time.monotonic()
            write = self._dirty and now - last_write >= interval
            beat = now - last_beat >= self.options.heartbeat_every
            if not (write or beat):
                continue
            self._dirty = self._dirty and not write
            await self.writer.flush()
            began = time.monotonic()
            try:
                held = await anyio.to_thread.run_sync(self._checkpoint, write)
                if held is False:
                    self._on_lock_lost()
            except Exception as exc:  # a failed checkpoint must not end the run
                log.warning("could not write the sheet during the run: %s", exc)
            last_beat = time.monotonic()
            if write:
                last_write = last_beat
                # a big sheet is written less often, so writing never dominates the run
                interval = max(self.options.checkpoint_every, 5 * (last_beat - began))
