"""Hearing of `batchgen cancel`: submit nothing more, cancel what is queued, follow the rest."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import anyio

from batchgen.errors import ApiPermanentError, ApiTransientError, LedgerError
from batchgen.pool._base import log
from batchgen.pool._submitting import Submitting

NEVER_SUBMITTED = (
    "cancelled by `batchgen cancel` before it was submitted; "
    "rerun with --retry-cancelled to submit it"
)


@dataclass(frozen=True)
class CancelHooks:
    """How a run hears of a cancel (a ledger row: any host sees it) and answers it.

    Both are called in a worker thread: a ledger wait must not hold up the event loop.
    """

    requested: Callable[[], str | None]  # who asked this run to stop submitting, or None
    acknowledge: Callable[[], None]  # record that this run submits nothing more
    every: float = 1.0  # seconds between looks


class Cancelling(Submitting):
    """Watches the ledger for a cancel; then stops the feed and cancels the queued jobs."""

    cancel_hooks: CancelHooks | None = None  # set by whoever runs the pool

    async def _watch_cancel(self) -> None:
        hooks = self.cancel_hooks
        if hooks is None:
            return
        by = None
        while by is None:
            await anyio.sleep(hooks.every)
            try:
                by = await anyio.to_thread.run_sync(hooks.requested)
            except LedgerError as exc:  # the run goes on; the writer reports a lasting failure
                log.debug("could not look for a cancel request: %s", exc)
        self.cancelled_by = by
        self._notice(
            f"cancelled by `batchgen cancel` ({by}): submitting nothing more; jobs queued at "
            "RunComfy are cancelled, jobs already running are followed to their end"
        )
        self._wake()
        while self._submitting:  # submits already sent hear their answers first
            await self._changed.wait()
        await self._cancel_at_provider()
        await self._cancel_unsubmitted()
        await self.writer.flush()
        try:  # `batchgen cancel` waits for this before it reports
            await anyio.to_thread.run_sync(hooks.acknowledge)
        except LedgerError as exc:
            log.warning("could not confirm the cancel in the ledger: %s", exc)

    async def _cancel_at_provider(self) -> None:
        """Cancel this run's jobs still queued at the provider; name those already running."""
        limit = anyio.Semaphore(8)
        running: list[int] = []

        async def cancel_one(key: str, request_id: str) -> None:
            async with limit:
                try:
                    outcome = await self.client.cancel(request_id)
                except (ApiTransientError, ApiPermanentError) as exc:
                    log.warning("row %s: could not cancel: %s", self.records[key].sheet_row, exc)
                    return
            if outcome == "cancelled":
                await self._set(
                    key, state="cancelled", queue_position=None, finished_at=time.time()
                )
            else:
                running.append(self.records[key].sheet_row or 0)

        async with anyio.create_task_group() as tg:
            for key, record in list(self.records.items()):
                if record.state in ("in_queue", "in_progress") and record.request_id:
                    tg.start_soon(cancel_one, key, record.request_id)
        if running:
            rows = ", ".join(map(str, sorted(running)))
            self._notice(
                f"already running at RunComfy, so not cancellable (followed to their end): "
                f"rows {rows}"
            )

    async def _cancel_unsubmitted(self) -> None:
        """After a cancel: the jobs this run never submitted end `cancelled`."""
        if self.cancelled_by is None:
            return
        for key in list(self._pending):
            if self.records[key].state == "pending":
                await self._set(
                    key, state="cancelled", error=NEVER_SUBMITTED, finished_at=time.time()
                )
        self._pending.clear()
