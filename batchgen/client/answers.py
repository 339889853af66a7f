"""What the Model API's answers mean: statuses, results and errors, as batchgen's types."""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

from batchgen.errors import (
    ApiError,
    ApiPermanentError,
    ApiTransientError,
    AuthError,
    BalanceError,
    NotFoundError,
)

FINAL_STATUSES = frozenset({"completed", "succeeded", "failed", "cancelled"})
_QUEUED_ALIASES = frozenset({"pending", "queued", "starting", "in_queue"})


@dataclass(frozen=True)
class Submitted:
    """The answer to a submit."""

    request_id: str
    status: str


@dataclass(frozen=True)
class JobStatus:
    """The answer to a status or result call."""

    status: str
    queue_position: int | None = None
    video_url: str | None = None
    error: str | None = None
    cost: float | None = None
    created_at: float | None = None  # the server's clock, epoch seconds
    finished_at: float | None = None

    @property
    def server_turnaround(self) -> float | None:
        """Submit → finish by the server's own clock, when it says both."""
        if self.created_at is None or self.finished_at is None:
            return None
        return self.finished_at - self.created_at


def text(value: Any) -> str:
    """Text from the API as any file or database can hold it.

    JSON may carry a lone surrogate ("\\ud83d", an emoji cut in half), which no UTF-8 file
    or SQLite ledger can store: it becomes "?".
    """
    result = str(value)
    if result.isascii():
        return result
    return result.encode("utf-8", "replace").decode("utf-8")


def message(body: Any, fallback: str) -> str:
    """The error message an answer's JSON body carries, else `fallback`."""
    if isinstance(body, dict):
        for key in ("error_message", "message", "error", "detail"):
            value = body.get(key)
            if value:
                return text(value) if isinstance(value, str) else json.dumps(value)[:500]
    return fallback


def retry_after(value: str | None, now: float | None = None) -> float | None:
    """A Retry-After header in seconds from `now` (Unix time; default: the clock's).

    HTTP sends whole seconds or an HTTP-date (RFC 9110); seconds with a fraction are taken
    too. None when it is absent or unreadable; a date in the past is 0.
    """
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # an HTTP-date is always GMT
            when = when.replace(tzinfo=UTC)
        seconds = when.timestamp() - (time.time() if now is None else now)
    return max(seconds, 0.0) if math.isfinite(seconds) else None


def brief(exc: BaseException) -> str:
    """`ConnectError: [Errno 111] Connection refused`: an exception on one line."""
    words = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {words}" if words else type(exc).__name__


def raise_for_answer(code: int, wait: float | None, body: Any, what: str) -> None:
    """Turn an HTTP error or an error_code in the body into the right ApiError."""
    error_code = body.get("error_code") if isinstance(body, dict) else None
    if code < 400 and not error_code:
        return
    said = message(body, f"HTTP {code}")
    label = f"{what}: {said}" + (f" (error_code {error_code})" if error_code else f" (HTTP {code})")
    kind: type[ApiError] = ApiPermanentError
    if code in (401, 403) or error_code in (403001, 400004):
        kind, label = AuthError, f"the API rejected the token ({said})"
    elif code == 402 or error_code == 400002:
        kind, label = BalanceError, f"insufficient balance on the RunComfy account ({said})"
    elif code == 404 or error_code == 404001:
        kind = NotFoundError
    elif code == 429 or code >= 500 or str(error_code).startswith("5") or code < 400:
        # (an error_code with HTTP 200 that we do not know counts as passing)
        kind = ApiTransientError
    number = error_code if isinstance(error_code, int) else None
    raise kind(label, status_code=code, error_code=number, retry_after=wait)


def job_status(data: Any) -> JobStatus:
    """A status or result answer as a JobStatus; ApiTransientError if it has no status."""
    if not isinstance(data, dict) or not data.get("status"):
        raise ApiTransientError("the API answer has no status")
    status = text(data["status"]).lower()
    if status == "succeeded":
        status = "completed"
    output = data.get("output") or {}
    video = None
    if isinstance(output, dict):
        video = output.get("video") or next(iter(output.get("videos") or []), None)
    error = data.get("error")
    if error is not None:
        error = text(error) if isinstance(error, str) else message(error, json.dumps(error)[:500])
    position = data.get("queue_position")
    cost = data.get("cost")
    return JobStatus(
        status=status,
        queue_position=int(position) if isinstance(position, int | float) else None,
        video_url=text(video) if video else None,
        error=error,
        cost=float(cost) if isinstance(cost, int | float) else None,
        created_at=_epoch(data.get("created_at")),
        finished_at=_epoch(data.get("finished_at")),
    )


def _epoch(value: Any) -> float | None:
    """An ISO-8601 time or epoch number as epoch seconds; None if absent or unreadable."""
    if isinstance(value, int | float):
        return float(value)
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def normalise_status(status: str) -> str:
    """An API status word as one of batchgen's (unknown words count as in progress)."""
    status = status.lower()
    if status in ("completed", "succeeded", "success"):
        return "completed"
    if status in ("failed", "error"):
        return "failed"
    if status in ("cancelled", "canceled"):
        return "cancelled"
    if status in _QUEUED_ALIASES:
        return "in_queue"
    return "in_progress"
