"""What every part of the worker pool shares: its options, its events and its state."""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import anyio
from anyio.abc import TaskGroup

from batchgen.client import ApiClient
from batchgen.errors import (
    ApiError,
    ApiTransientError,
    AuthError,
    BalanceError,
    EndpointError,
    LedgerError,
    SheetLockedError,
)
from batchgen.groupcommit import LedgerWriter
from batchgen.ledger import JobRecord, Ledger
from batchgen.pacing import InFlightLimit, PollClock

log = logging.getLogger("batchgen")
T = TypeVar("T")
IN_FLIGHT = frozenset({"submitting", "in_queue", "in_progress"})
FIRST_SUBMITS = 4  # submits under way at once at the start of a run (see _submit_window)
UNKNOWN_HINT = (
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
    give_up_after: float = 300.0  # seconds the API may go without answering before we stop
    silence_log_every: float = 25.0  # while it does not answer, say what we wait for this often


class PoolBase:
    """The pool's state and the small moves every part makes: record a change, wake, stop."""

    # made in Pool._open, since anyio primitives need the running event loop
    writer: LedgerWriter
    _changed: anyio.Event
    _learned: anyio.Event
    _poll_scope: anyio.CancelScope
    _submit_scope: anyio.CancelScope
    _submit_slots: anyio.Semaphore
    _download_slots: anyio.Semaphore
    _started: float

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
        # a limit on calls is paced by the client; concurrency halves for a limit on jobs
        client.limiter.on_jobs_limited = self.limit.rate_limited
        self.spent = spent
        self.stop_signal: int | None = None
        self.fatal: BaseException | None = None
        self.balance_exhausted = False
        self.budget_blocked = 0
        self._in_flight = 0
        self._submitting = 0
        # submits under way at once start few and grow with each answer: a provider's request
        # limit, unknown yet, refuses every call sent before its first 429 comes back
        self._submit_window = float(min(FIRST_SUBMITS, options.submits_in_flight))
        self._reached = False  # any answer from the API at all this run
        self._poll_results = True  # check jobs with the result call (see _look)
        self._sent: set[str] = set()  # submits whose request left (fate unknown if cut off)
        self._polls: TaskGroup | None = None
        self._follow_scopes: set[anyio.CancelScope] = set()  # submit tasks now polling
        self._dirty = True
        self.notices: list[str] = []
        self.cancelled_by: str | None = None  # who asked for a stop with `batchgen cancel`
        self.gave_up: float | None = None  # seconds of silence after which the run gave up
        # when the API last answered, the calls waiting for it now (by when each began), and
        # when the oldest call that ended with no answer since began: see _silence
        self._last_answer = time.monotonic()
        self._asking: dict[object, float] = {}
        self._unanswered_since: float | None = None

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

    def _on_submit_refused(self, key: str, exc: BaseException) -> None:
        if isinstance(exc, AuthError | EndpointError):
            # stop at once, but let submits already sent hear their answers (401, or the
            # redirect or 404 of a wrong base URL)
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

    @property
    def _stopping(self) -> bool:
        return (
            self.stop_signal is not None
            or self.fatal is not None
            or self.balance_exhausted
            or self.cancelled_by is not None
            or self.gave_up is not None
        )

    async def _ask(self, call: Awaitable[T]) -> T:
        """Await one exchange with the API (its retries included), noting whether it answered."""
        token = object()
        self._asking[token] = began = time.monotonic()
        try:
            result = await call
        except ApiError as exc:
            status = exc.status_code
            if status is not None and status < 500:  # an answer, if not the one hoped for
                self._answered()
            elif self._unanswered_since is None or began < self._unanswered_since:
                self._unanswered_since = began
            raise
        finally:
            del self._asking[token]
        self._answered()
        return result

    def _answered(self) -> None:
        self._last_answer = time.monotonic()
        self._unanswered_since = None

    def _silence(self) -> float:
        """Seconds the API has gone without answering a call that waits (or waited) for it."""
        began = [*self._asking.values()]
        if self._unanswered_since is not None:
            began.append(self._unanswered_since)
        if not began:
            return 0.0
        return time.monotonic() - max(min(began), self._last_answer)

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

    _submits_done = False
