"""Group commit: ledger writes from many tasks, committed together, durable when awaited."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio

from batchgen.errors import LedgerError
from batchgen.ledger import Ledger


class LedgerWriter:
    """Serialises ledger writes in one thread and commits whatever queued up together."""

    def __init__(self, ledger: Ledger, on_failure: Callable[[LedgerError], None]) -> None:
        self._ledger = ledger
        self._on_failure = on_failure
        self.failure: LedgerError | None = None
        self._queue: list[tuple[str, dict[str, Any]]] = []
        self._done: list[anyio.Event] = []
        self._wake = anyio.Event()
        self._limiter = anyio.CapacityLimiter(1)

    async def write(self, key: str, values: dict[str, Any], *, durable: bool = True) -> None:
        """Queue a change; with `durable`, return only once it is committed (or failed)."""
        if self.failure is not None:
            return  # the ledger cannot be written: the run is stopping
        self._queue.append((key, values))
        self._wake.set()
        if durable:
            event = anyio.Event()
            self._done.append(event)
            # shielded: a request_id that arrived must reach the disk even while stopping
            with anyio.CancelScope(shield=True):
                await event.wait()

    async def claim(self, key: str, *, expect: str, values: dict[str, Any]) -> bool:
        """Apply `values` only if the job's state in the ledger is still `expect` (durable)."""
        if self.failure is not None:
            return False
        try:
            if self._ledger.is_local:
                return self._ledger.claim_job(key, expect=expect, values=values)
            with anyio.CancelScope(shield=True):
                return await anyio.to_thread.run_sync(
                    lambda: self._ledger.claim_job(key, expect=expect, values=values),
                    limiter=self._limiter,
                )
        except LedgerError as exc:
            self.failure = exc
            self._on_failure(exc)
            return False

    async def run(self) -> None:
        """Commit batches until cancelled; flush() drains what is left."""
        while True:
            await self._wake.wait()
            self._wake = anyio.Event()
            await self.flush()

    async def flush(self) -> None:
        """Commit everything queued so far."""
        while self._queue and self.failure is None:
            batch, self._queue = self._queue, []
            waiters, self._done = self._done, []
            try:
                if self._ledger.is_local:
                    # a SQLite commit takes about a millisecond; in a thread it would wait
                    # for the GIL behind the event loop, holding every write-ahead submit up
                    self._ledger.update_jobs(batch)
                else:
                    with anyio.CancelScope(shield=True):
                        await anyio.to_thread.run_sync(
                            self._ledger.update_jobs, batch, limiter=self._limiter
                        )
            except LedgerError as exc:
                self.failure = exc
                self._on_failure(exc)
            finally:
                for event in waiters:
                    event.set()
        if self.failure is not None:
            for event in self._done:
                event.set()
            self._done, self._queue = [], []
