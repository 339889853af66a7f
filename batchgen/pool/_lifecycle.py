"""The pool's run from start to stop: its task groups, signals, checkpoints and the end."""

from __future__ import annotations

import signal
import time

import anyio

from batchgen.errors import (
    ApiPermanentError,
    ApiTransientError,
    LedgerLostError,
)
from batchgen.groupcommit import LedgerWriter
from batchgen.pool._base import UNKNOWN_HINT, log
from batchgen.pool._cancelling import Cancelling


class Pool(Cancelling):
    """Runs a set of ledger jobs to the end, or until stopped."""

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
            main.start_soon(self._watch_cancel)
            main.start_soon(self._watch_silence)
            async with anyio.create_task_group() as work:
                work.start_soon(self._poll_group)
                work.start_soon(self._submit_group)
            if self.stop_signal is not None and self.options.cancel_on_exit and self.fatal is None:
                await self._cancel_queued()
            await self._settle_unanswered()
            await self._cancel_unsubmitted()
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
                    key, state="unknown", error=f"no answer before the stop; {UNKNOWN_HINT}"
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

    async def _watch_silence(self) -> None:
        """Stop the run when the API has not answered for give_up_after seconds.

        A job takes minutes and its checks may be far apart, so the clock runs from when a
        call began to wait in vain (no connection, timeouts, 5xx, through all its retries),
        not from the last answer. Meanwhile the log says, every silence_log_every seconds,
        what the run is waiting for.
        """
        limit = self.options.give_up_after
        said_at: float | None = None
        while True:
            await anyio.sleep(min(1.0, limit / 4))
            silent = self._silence()
            if silent <= 0 or self._stopping:
                said_at = None
                continue
            now = time.monotonic()
            if silent >= limit:
                self._give_up(silent)
                return
            if said_at is None and silent >= min(10.0, limit / 2):
                said_at = now - self.options.silence_log_every  # say it now
            if said_at is not None and now - said_at >= self.options.silence_log_every:
                said_at = now
                log.warning(
                    "no answer from the API at %s for %.0f s: waiting on %s; giving up "
                    "after %g s without one (--give-up-after)",
                    self.client.base_url,
                    silent,
                    self._waiting_on(),
                    limit,
                )

    def _waiting_on(self) -> str:
        """What the run waits for: its jobs in flight and still to submit, by state."""
        counts: dict[str, int] = {}
        for record in self.records.values():
            if record.state in ("submitting", "in_queue", "in_progress"):
                counts[record.state] = counts.get(record.state, 0) + 1
        parts = [f"{n} job(s) {state}" for state, n in counts.items()]
        if self._pending:
            parts.append(f"{len(self._pending)} job(s) to submit")
        return ", ".join(parts) or "nothing"

    def _give_up(self, silent: float) -> None:
        """Stop like a signal does: submit nothing more, stop the checks, keep every state."""
        self.gave_up = silent
        self._notice(
            f"the API at {self.client.base_url} has not answered for {silent:.0f} s "
            f"(--give-up-after {self.options.give_up_after:g}): stopped; jobs already "
            "submitted keep their request_id and are followed on the next run; rerun to continue"
        )
        self._stop_polls()
        self._submit_scope.deadline = anyio.current_time() + self.options.stop_grace
        self._wake()

    async def _checkpoints(self) -> None:
        """Write the sheet when something changed, and renew the run lock, on their own clocks."""
        if self._checkpoint is None:
            return
        interval = self.options.checkpoint_every
        last_write = last_beat = time.monotonic()
        while True:
            await anyio.sleep(min(interval, self.options.heartbeat_every))
            tick = getattr(self.events, "tick", None)
            if tick is not None:  # a periodic summary, even when no job changes for a while
                tick()
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
            except LedgerLostError as exc:  # the ledger's file is gone: stop writing to it
                self._on_ledger_failure(exc)
            except Exception as exc:  # a failed checkpoint must not end the run
                log.warning("could not write the sheet during the run: %s", exc)
            last_beat = time.monotonic()
            if write:
                last_write = last_beat
                # a big sheet is written less often, so writing never dominates the run
                interval = max(self.options.checkpoint_every, 5 * (last_beat - began))
