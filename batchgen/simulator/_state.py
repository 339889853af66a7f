"""The simulated provider: jobs, a FIFO queue, `capacity` workers, and a lazily advanced clock."""

from __future__ import annotations

import heapq
import random
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from batchgen.errors import ConfigError
from batchgen.models import ModelSpec, get_model
from batchgen.simulator._app import SimulatorApp
from batchgen.simulator._limits import TokenBucket, check_config, draw_duration
from batchgen.simulator._schema import validate_input
from batchgen.simulator._types import (
    EXCLUSIVE_KINDS,
    Reply,
    SimulatorConfig,
    Submission,
    error_reply,
)

DEFAULT_COST = 0.1  # dollars per job when the model has no price table
ENDPOINTS = ("submit", "status", "result", "cancel", "media")
# besides calls per endpoint: calls the request limit refused, and every 429 answer sent
LIMIT_STATS = ("rate_limited", "answered_429")
FAILURE_MESSAGES = (
    "content moderation: the prompt was rejected",
    "content moderation: the first frame image was rejected",
    "could not download first_frame_image_url: HTTP 403 Forbidden",
    "first frame image is too small: 256x144 (each side must be at least 300 px)",
    "generation failed: worker error (CUDA out of memory), please retry",
    "generation timed out after 600 s",
)


@dataclass(slots=True)
class _Job:
    """One job and where it is in its life."""

    seq: int  # 1-based submission order, also its index in the queue-position tree
    sub: Submission
    duration: float
    error: str | None  # set when the job is going to fail
    cost: float
    created: float  # monotonic seconds
    status: str = "in_queue"
    started: float | None = None  # monotonic seconds
    finished: float | None = None  # monotonic seconds (cancel time for cancelled jobs)


class _Fenwick:
    """Prefix sums over a growing array of 0/1 flags, so queue positions cost O(log n)."""

    def __init__(self) -> None:
        self._tree = [0]  # 1-based

    def append(self, value: int) -> None:
        """Add a new last element."""
        i = len(self._tree)
        # tree[i] holds the sum of (i - lowbit(i), i]; compute it from the existing prefixes.
        self._tree.append(value + self.prefix(i - 1) - self.prefix(i - (i & -i)))

    def add(self, i: int, delta: int) -> None:
        """Add delta to element i."""
        tree, n = self._tree, len(self._tree)
        while i < n:
            tree[i] += delta
            i += i & -i

    def prefix(self, i: int) -> int:
        """Sum of elements 1..i."""
        tree, total = self._tree, 0
        while i > 0:
            total += tree[i]
            i -= i & -i
        return total


def _model(model_id: str) -> ModelSpec | None:
    try:
        return get_model(model_id)
    except ConfigError:  # a model listed in the config but without a data file
        return None


def _cost(model_id: str, payload: dict[str, Any]) -> float:
    model = _model(model_id)
    try:
        cost = model.estimate_cost(payload) if model is not None else None
    except (KeyError, TypeError, ValueError):
        cost = None
    return DEFAULT_COST if cost is None else cost


def validate(model_id: str, payload: dict[str, Any]) -> list[dict[str, Any]]:
    """Problems with the payload for this model's schema, as a FastAPI-style `detail` list."""
    model = _model(model_id)
    if model is None:  # served by configuration, without a data file: no schema to check
        return []
    return validate_input(model, payload)


class Simulator:
    """In-memory stand-in for the Model API (thread-safe); `.app` is its ASGI app."""

    def __init__(self, config: SimulatorConfig | None = None) -> None:
        self.config = config if config is not None else SimulatorConfig()
        check_config(self.config)
        seed = self.config.seed
        # Separate streams, so injected faults never shift the jobs' durations and outcomes.
        self._job_rng = random.Random(seed)
        self._fault_rng = random.Random(None if seed is None else f"faults:{seed}")
        self._lock = threading.Lock()
        self._jobs: dict[str, _Job] = {}
        self._order: list[_Job] = []
        self._queue: deque[_Job] = deque()  # may hold cancelled jobs, skipped when popped
        self._queued = 0  # jobs really waiting in the queue
        self._running: list[tuple[float, int, _Job]] = []  # heap of (end time, seq, job)
        self._waiting = _Fenwick()  # 1 for each job still in the queue, by seq
        self._spent = 0.0
        self._stats = dict.fromkeys((*ENDPOINTS, "faults", *LIMIT_STATS), 0)
        self._bucket = TokenBucket()
        self._mono0 = time.monotonic()
        self._wall0 = time.time()
        self.media_auth_headers: list[str] = []
        self.app = SimulatorApp(self)

    # --- the clock -------------------------------------------------------------------------

    def _advance(self, now: float) -> None:
        """Play every job start and end up to `now`, in time order (caller holds the lock)."""
        running = self._running
        while running and running[0][0] <= now:
            end, _, job = heapq.heappop(running)
            job.status = "failed" if job.error else "completed"
            if job.error:
                self._spent -= job.cost  # failed jobs are not billed
            self._fill(end)  # the freed slot is taken at the very instant it frees
        self._fill(now)

    def _fill(self, at: float) -> None:
        """Start queued jobs at time `at` while a worker is free."""
        running, queue = self._running, self._queue
        capacity = self.config.capacity
        while self._queued and len(running) < capacity:
            job = queue.popleft()
            if job.status != "in_queue":
                continue
            self._queued -= 1
            self._waiting.add(job.seq, -1)
            job.status = "in_progress"
            job.started = at
            job.finished = at + job.duration
            heapq.heappush(running, (job.finished, job.seq, job))

    def _iso(self, mono: float | None) -> str | None:
        if mono is None:
            return None
        stamp = datetime.fromtimestamp(self._wall0 + (mono - self._mono0), UTC)
        return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")

    # --- the API calls (answers as Reply; the app encodes them) -----------------------------

    def submit(self, model_id: str, payload: dict[str, Any], base: str) -> Reply:
        """Create a job, or refuse it like the Model API would."""
        config = self.config
        if model_id not in config.models:
            return error_reply(400, 400001, f"invalid model id: {model_id}")
        detail = validate(model_id, payload)
        if detail:
            return error_reply(422, 422001, "validation error", detail=detail)
        cost = _cost(model_id, payload)
        with self._lock:
            now = time.monotonic()
            self._advance(now)
            if self._queued + len(self._running) >= config.queue_limit:
                retry = (("Retry-After", f"{config.faults.retry_after:g}"),)
                message = f"too many queued requests (limit {config.queue_limit})"
                return error_reply(429, 429, message, headers=retry)
            if config.balance is not None and self._spent + cost > config.balance + 1e-9:
                return error_reply(402, 400002, "insufficient balance")
            # Always draw both numbers, so outcomes stay reproducible whatever the rates.
            duration = draw_duration(self._job_rng, config)
            fails = self._job_rng.random() < config.failure_rate
            error = self._job_rng.choice(FAILURE_MESSAGES) if fails else None
            request_id = str(uuid.uuid4())
            sub = Submission(request_id, model_id, payload, self._iso(now) or "")
            job = _Job(len(self._order) + 1, sub, max(0.0, duration), error, cost, now)
            self._jobs[request_id] = job
            self._order.append(job)
            self._queue.append(job)
            self._queued += 1
            self._waiting.append(1)
            self._spent += cost
            self._fill(now)
        urls = f"{base}/v1/requests/{request_id}"
        return Reply(
            200,
            {
                "request_id": request_id,
                "status": "in_queue",
                "status_url": f"{urls}/status",
                "result_url": f"{urls}/result",
                "cancel_url": f"{urls}/cancel",
            },
        )

    def status(self, request_id: str) -> Reply:
        """The status answer of a job."""
        with self._lock:
            self._advance(time.monotonic())
            job = self._jobs.get(request_id)
            if job is None:
                return _unknown(request_id)
            return Reply(200, self._status_body(job))

    def _status_body(self, job: _Job) -> dict[str, Any]:
        body: dict[str, Any] = {"request_id": job.sub.request_id, "status": job.status}
        if job.status == "in_queue":
            body["queue_position"] = self._waiting.prefix(job.seq - 1)
        return body

    def result(self, request_id: str, *, media_base: str, include_cost: bool) -> Reply:
        """The result answer of a job: its output when done, else its status."""
        with self._lock:
            self._advance(time.monotonic())
            job = self._jobs.get(request_id)
            if job is None:
                return _unknown(request_id)
            body = self._status_body(job)
            if job.status in ("in_queue", "in_progress"):
                if self.config.result_404_until_done:
                    return _unknown(request_id)
                return Reply(200, body)
            body["created_at"] = job.sub.created_at
            body["finished_at"] = self._iso(job.finished)
            if job.status == "completed":
                body["output"] = {"video": f"{media_base}/media/{request_id}.mp4"}
            elif job.status == "failed":
                body["error"] = job.error
            if include_cost:
                body["cost"] = job.cost if job.status == "completed" else 0.0
            return Reply(200, body)

    def cancel(self, request_id: str) -> Reply:
        """Cancel a queued job; running and finished jobs are not cancellable."""
        with self._lock:
            now = time.monotonic()
            self._advance(now)
            job = self._jobs.get(request_id)
            if job is None:
                return _unknown(request_id)
            if job.status == "in_queue":
                job.status = "cancelled"
                job.finished = now
                self._queued -= 1
                self._waiting.add(job.seq, -1)
                self._spent -= job.cost
            # Cancelling twice answers "cancelled" again: a client may retry a lost answer.
            outcome = "cancelled" if job.status == "cancelled" else "not_cancellable"
            return Reply(200, {"request_id": request_id, "status": job.status, "outcome": outcome})

    def model_info(self, model_id: str) -> Reply:
        """GET /v1/models/{model_id}: its price (that endpoint is UNCONFIRMED on the real API)."""
        if model_id not in self.config.models:
            return error_reply(400, 400001, f"invalid model id: {model_id}")
        body = {
            "model_id": model_id,
            "base_price_usd": _cost(model_id, {}),
            "price_unit": "per video, default inputs",
            "pricing_note": "simulated: the estimate batchgen itself uses",
        }
        return Reply(200, body)

    def media_exists(self, request_id: str) -> bool:
        """Whether /media/{request_id}.mp4 exists (the job completed)."""
        with self._lock:
            self._advance(time.monotonic())
            job = self._jobs.get(request_id)
            return job is not None and job.status == "completed"

    # --- bookkeeping used by the app ----------------------------------------------------------

    def count(self, endpoint: str, *, auth: str | None = None) -> None:
        """Count one call (and remember the Authorization header of a media request)."""
        with self._lock:
            self._stats[endpoint] += 1
            if auth is not None:
                self.media_auth_headers.append(auth)

    def take_token(self) -> float | None:
        """Whether the request limit lets a call through: None if so, else seconds to wait."""
        config = self.config
        if config.rate_limit is None:
            return None
        with self._lock:
            wait = self._bucket.take(time.monotonic(), config.rate_limit, config.rate_burst)
            if wait is not None:
                self._stats["rate_limited"] += 1
            return wait

    def answered(self, status: int) -> None:
        """Count one answer by its HTTP status (only 429s are kept)."""
        if status == 429:
            with self._lock:
                self._stats["answered_429"] += 1

    def set_limit(self, rate_limit: float | None, rate_burst: float | None) -> None:
        """Change the request limit mid-run (what a provider raising an account's limit does)."""
        with self._lock:
            self.config.rate_limit = rate_limit
            self.config.rate_burst = rate_burst

    def draw_fault(self) -> tuple[str | None, bool]:
        """Pick this call's fault (at most one exclusive kind) and whether it is slow."""
        faults = self.config.faults
        if not faults.any_exclusive() and faults.slow <= 0:
            return None, False
        with self._lock:
            kind = None
            draw, edge = self._fault_rng.random(), 0.0
            for name in EXCLUSIVE_KINDS:
                edge += getattr(faults, name)
                if draw < edge:
                    kind = name
                    break
            slow = self._fault_rng.random() < faults.slow
            if kind is not None or slow:
                self._stats["faults"] += 1
            return kind, slow

    # --- inspection for tests -----------------------------------------------------------------

    def submissions(self) -> list[Submission]:
        """Every job ever created, in order."""
        with self._lock:
            return [job.sub for job in self._order]

    def job_status(self, request_id: str) -> str:
        """The current status of a job (KeyError if unknown)."""
        with self._lock:
            self._advance(time.monotonic())
            return self._jobs[request_id].status

    def job_state(self, request_id: str) -> dict[str, Any] | None:
        """Everything known about a job, or None if unknown."""
        with self._lock:
            self._advance(time.monotonic())
            job = self._jobs.get(request_id)
            if job is None:
                return None
            state = self._status_body(job)
            state.update(
                model_id=job.sub.model_id,
                payload=job.sub.payload,
                created_at=job.sub.created_at,
                started_at=self._iso(job.started),
                finished_at=self._iso(job.finished) if job.status != "in_progress" else None,
                duration=job.duration,
                error=job.error if job.status == "failed" else None,
                planned_error=job.error,
                cost=job.cost,
                # Exact seconds since the simulator was made, for checks of the packing.
                timeline={
                    "created": job.created - self._mono0,
                    "started": None if job.started is None else job.started - self._mono0,
                    "finished": None if job.finished is None else job.finished - self._mono0,
                },
            )
            return state

    def stats(self) -> dict[str, int]:
        """Calls per endpoint, plus the number of calls that got a fault."""
        with self._lock:
            return dict(self._stats)


def _unknown(request_id: str) -> Reply:
    return error_reply(404, 404001, f"request_id not found or expired: {request_id}")
