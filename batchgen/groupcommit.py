"""Group commit: ledger writes and claims from many tasks, committed together."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import anyio

from batchgen.errors import LedgerError
from batchgen.ledger import Claim, Ledger

COMMIT_WINDOW = 0.010  # seconds: the most a durable write waits for others to share its commit


class LedgerWriter:
    """Queues ledger writes and claims and commits whatever queued up in one transaction."""

    def __init__(self, ledger: Ledger, on_failure: Callable[[LedgerError], None]) -> None:
        self._ledger = ledger
        self._on_failure = on_failure
        self.failure: LedgerError | None = None
        self._queue: list[tuple[str, dict[str, Any]]] = []
        self._claims: list[Claim] = []
        self._claimed_at: dict[str, float | None] = {}  # claim results not yet collected
        self._committed = anyio.Event()  # set once the changes queued so far are committed
        self._wake = anyio.Event()
        self._limiter = anyio.CapacityLimiter(1)

    async def write(self, key: str, values: dict[str, Any], *, durable: bool = True) -> None:
        """Queue a change; with `durable`, return only once it is committed (or failed)."""
        if self.failure is not None:
            return  # the ledger cannot be written: the run is stopping
        self._queue.append((key, values))
        self._wake.set()
        if durable:
            await self._wait(self._committed)

    async def claim(self, key: str, *, expect: str) -> float | None:
        """Claim a job for submission (ledger.Claim) after every write queued before it.

        Returns, once committed, the claim's time (its submitted_at), or None if the job's
        state was no longer `expect` or the ledger failed.
        """
        if self.failure is not None:
            return None
        self._claims.append(Claim(key, expect))
        self._wake.set()
        await self._wait(self._committed)
        claimed_at = self._claimed_at.pop(key, None)
        return claimed_at if self.failure is None else None

    @staticmethod
    async def _wait(committed: anyio.Event) -> None:
        # shielded: a request_id that arrived must reach the disk even while stopping
        with anyio.CancelScope(shield=True):
            await committed.wait()

    async def run(self) -> None:
        """Commit batches until cancelled; flush() drains what is left."""
        last = -COMMIT_WINDOW
        while True:
            await self._wake.wait()
            self._wake = anyio.Event()
            # a busy run commits at most once per window: the writes of every task that
            # got an answer meanwhile share that commit (each costs about half a millisecond)
            wait = last + COMMIT_WINDOW - anyio.current_time()
            if wait > 0:
                await anyio.sleep(wait)
            else:
                await anyio.lowlevel.checkpoint()
            last = anyio.current_time()
            await self.flush()

    async def flush(self) -> None:
        """Commit everything queued so far."""
        while (self._queue or self._claims) and self.failure is None:
            batch, self._queue = self._queue, []
            claims, self._claims = self._claims, []
            committed, self._committed = self._committed, anyio.Event()
            try:
                now = time.time()
                won = await self._write(batch, claims, now)
                for claim, result in zip(claims, won, strict=True):
                    self._claimed_at[claim.key] = now if result else None
            except Exception as exc:  # any failure stops the run; no waiter is left hanging
                failure = (
                    exc
                    if isinstance(exc, LedgerError)
                    else LedgerError(f"cannot write the ledger: {exc!r}")
                )
                self.failure = failure
                self._on_failure(failure)
            finally:
                committed.set()
        if self.failure is not None:
            self._committed.set()  # nobody waits on a ledger that cannot be written
            self._queue, self._claims = [], []

    async def _write(
        self, batch: list[tuple[str, dict[str, Any]]], claims: list[Claim], now: float
    ) -> list[bool]:
        def write() -> list[bool]:
            return self._ledger.write_jobs(batch, claims, now=now)

        # in a worker thread, SQLite too: a commit may wait (up to the busy timeout) for
        # another process holding the ledger's write lock, and meanwhile the event loop must
        # go on polling, reporting and handling signals; one thread at a time keeps the
        # commits in order, and the shield lets a commit under way finish even when stopping
        with anyio.CancelScope(shield=True):
            won = await anyio.to_thread.run_sync(write, limiter=self._limiter)
        return won
