"""Plain data of the simulator: its settings, the faults it injects, and what it records."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from batchgen.models import available_models

DISTRIBUTIONS = ("uniform", "lognormal", "mixture")  # how job durations may be drawn
# How the request limit's 429 says when to come back: "seconds" is HTTP's delay-seconds (a
# whole number, rounded up, as RFC 9110 has it); "fractional" the exact seconds to the next
# token, to 1 ms; "date" an HTTP-date (whole seconds); "none" no Retry-After at all.
RETRY_AFTER_FORMATS = ("seconds", "fractional", "date", "none")

# The fault kinds that exclude each other, in the order their probabilities are stacked.
EXCLUSIVE_KINDS = (
    "error_500",
    "rate_limit_429",
    "drop_before",
    "drop_after",
    "truncated_json",
    "error_code_200",
)


@dataclass
class Faults:
    """Per-call probabilities (0..1) of faults injected into submit/status/result/cancel."""

    # The first six kinds exclude each other: one uniform draw per call picks at most one of
    # them, so each fires with exactly its probability (as long as they sum to at most 1).
    error_500: float = 0.0  # 500 + error body; submit creates no job
    rate_limit_429: float = 0.0  # 429 + Retry-After; submit creates no job
    drop_before: float = 0.0  # connection closed with no answer at all; nothing is done
    drop_after: float = 0.0  # the call is done (submit creates the job), then the answer is cut
    truncated_json: float = 0.0  # the call is done; the answer's JSON body is cut in half
    error_code_200: float = 0.0  # HTTP 200 with an error_code body; submit creates no job
    # Drawn separately, so it can add latency on top of any of the above.
    slow: float = 0.0  # answer normally, but only after slow_seconds
    slow_seconds: float = 0.5
    retry_after: float = 0.05  # seconds, sent in Retry-After on 429 answers

    @classmethod
    def spread(cls, rate: float, **options: float) -> Faults:
        """Faults where a call fails with probability `rate`, split evenly over the kinds."""
        share = min(max(rate, 0.0), 1.0) / len(EXCLUSIVE_KINDS)
        return cls(**dict.fromkeys(EXCLUSIVE_KINDS, share), **options)

    def any_exclusive(self) -> bool:
        """Whether any of the mutually exclusive fault kinds can fire."""
        return any(getattr(self, kind) > 0 for kind in EXCLUSIVE_KINDS)


@dataclass
class SimulatorConfig:
    """How the simulated provider behaves; read afresh on every request, so tests may edit it."""

    capacity: int = 4  # jobs processed at once; others wait in a FIFO queue
    queue_limit: int = 1000  # queued+running jobs at which submit answers 429
    min_duration: float = 0.2  # seconds each job runs, uniform in [min, max] (see durations)
    max_duration: float = 0.6
    failure_rate: float = 0.0  # fraction of jobs that end "failed"
    token: str | None = None  # None: any non-empty Bearer token is accepted
    seed: int | None = None  # makes durations, failures and faults reproducible
    faults: Faults = field(default_factory=Faults)
    # every shipped model, each held to its own schema
    models: tuple[str, ...] = field(default_factory=lambda: tuple(available_models()))
    # How long jobs run: "uniform" in [min_duration, max_duration]; "lognormal" with the given
    # median and sigma (a long tail, as real renders have); "mixture": uniform, except that a
    # share of jobs (long_share) runs long_factor times longer.
    durations: str = "uniform"
    median_duration: float = 1.0
    duration_sigma: float = 1.0
    long_share: float = 0.1
    long_factor: float = 5.0
    # A token bucket over every API call (submit, status, result and cancel): at most
    # rate_limit calls a second on average, rate_burst at once; beyond it, 429 + Retry-After.
    # None: no limit. Read on every call, so a test may change it mid-run.
    rate_limit: float | None = None
    rate_burst: float | None = None  # None: one second's worth of calls (at least 1)
    retry_after_format: str = "seconds"  # one of RETRY_AFTER_FORMATS
    balance: float | None = None  # dollars; None = unlimited
    media_host: str = "localhost"  # a different host name than the API's, to catch token leaks
    # Some APIs answer 404 to a result that is not ready yet; the client must cope with both.
    result_404_until_done: bool = False


@dataclass(frozen=True)
class Submission:
    """One job as the simulator received it."""

    request_id: str
    model_id: str
    payload: dict[str, Any]
    created_at: str  # ISO-8601 UTC, the same text the result answer carries


@dataclass(frozen=True, slots=True)
class Reply:
    """An API answer before it is encoded: HTTP status, JSON body, extra headers."""

    status: int
    body: dict[str, Any]
    headers: tuple[tuple[str, str], ...] = ()


def error_reply(
    status: int, code: int, message: str, *, headers: tuple[tuple[str, str], ...] = (), **extra: Any
) -> Reply:
    """An error answer shaped like the Model API's."""
    return Reply(status, {"error_code": code, "error_message": message, **extra}, headers)
