"""The Model API client: the only httpx code, and the one place that maps transport errors."""

from __future__ import annotations

import json
import os
import random
import time
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import anyio
import httpx

from batchgen._transport import LeanEndpoint, LeanTransport, header
from batchgen.errors import (
    ApiError,
    ApiPermanentError,
    ApiTransientError,
    AuthError,
    BalanceError,
    ConfigError,
    NotFoundError,
    SubmitUncertainError,
)

DEFAULT_BASE_URL = "https://model-api.runcomfy.net"
FINAL_STATUSES = frozenset({"completed", "succeeded", "failed", "cancelled"})
_QUEUED_ALIASES = frozenset({"pending", "queued", "starting", "in_queue"})
T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter for calls that are safe to repeat."""

    attempts: int = 6
    base: float = 0.25
    cap: float = 20.0

    def wait(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number `attempt` (1-based)."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.cap)
        return random.uniform(0, min(self.cap, self.base * 2 ** (attempt - 1)))


NO_RETRY = RetryPolicy(attempts=1)


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


class RateLimiter:
    """A token bucket shared by every call: at most `rate` requests per second."""

    def __init__(self, rate: float | None) -> None:
        self.rate = rate
        self._next = 0.0
        self._lock = anyio.Lock()

    async def acquire(self) -> None:
        """Wait for the next free slot."""
        if not self.rate:
            return
        async with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + 1.0 / self.rate
        if start > now:
            await anyio.sleep(start - now)


def token_from_env() -> str:
    """The API token from RUNCOMFY_API_TOKEN, or a ConfigError."""
    token = os.environ.get("RUNCOMFY_API_TOKEN", "").strip()
    if not token:
        raise ConfigError("no API token: set RUNCOMFY_API_TOKEN to your RunComfy API key")
    return token


def _message(body: Any, fallback: str) -> str:
    if isinstance(body, dict):
        for key in ("error_message", "message", "error", "detail"):
            value = body.get(key)
            if value:
                return _text(value) if isinstance(value, str) else json.dumps(value)[:500]
    return fallback


def _text(value: Any) -> str:
    """Text from the API as any file or database can hold it.

    JSON may carry a lone surrogate ("\\ud83d", an emoji cut in half), which no UTF-8 file
    or SQLite ledger can store: it becomes "?".
    """
    text = str(value)
    if text.isascii():
        return text
    return text.encode("utf-8", "replace").decode("utf-8")


def _retry_after(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _raise_for_answer(code: int, retry_after: float | None, body: Any, what: str) -> None:
    """Turn an HTTP error or an error_code in the body into the right ApiError."""
    error_code = body.get("error_code") if isinstance(body, dict) else None
    if code < 400 and not error_code:
        return
    text = _message(body, f"HTTP {code}")
    label = f"{what}: {text}" + (f" (error_code {error_code})" if error_code else f" (HTTP {code})")
    kwargs = {"status_code": code, "error_code": error_code, "retry_after": retry_after}
    if code in (401, 403) or error_code in (403001, 400004):
        raise AuthError(f"the API rejected the token ({text})", **kwargs)
    if code == 402 or error_code == 400002:
        raise BalanceError(f"insufficient balance on the RunComfy account ({text})", **kwargs)
    if code == 404 or error_code == 404001:
        raise NotFoundError(label, **kwargs)
    if code == 429 or code >= 500 or (error_code and str(error_code).startswith("5")):
        raise ApiTransientError(label, **kwargs)
    if code < 400:
        # an error_code with HTTP 200 that we do not know: treat as passing
        raise ApiTransientError(label, **kwargs)
    raise ApiPermanentError(label, **kwargs)


class ApiClient:
    """Async client of the Model API with connection limits, a rate cap and retries."""

    def __init__(
        self,
        *,
        base_url: str,
        token: str,
        max_connections: int = 16,
        timeout: float = 30.0,
        retry: RetryPolicy = RetryPolicy(),
        rate: float | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.retry = retry
        self._max_connections = max_connections
        self._slots: anyio.Semaphore | None = None
        self.limiter = RateLimiter(rate)
        self.calls: dict[str, int] = {"submit": 0, "status": 0, "result": 0, "cancel": 0}
        self.on_rate_limited: Callable[[], None] | None = None
        self._headers = httpx.Headers(
            {"Authorization": f"Bearer {token}", "User-Agent": "batchgen/0.1"}
        )
        connect = min(timeout, 10.0)
        self._timeouts = {"connect": connect, "read": timeout, "write": timeout, "pool": None}
        # requests go straight to the lean transport: the API needs none of the client's
        # cookie, auth or redirect handling, which cost more CPU than the exchange itself;
        # a proxy from the environment gets httpx's own client and transport instead
        transport = _api_transport(self.base_url, max_connections)
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout, connect=connect, pool=None),
            limits=httpx.Limits(max_connections=max_connections),
            follow_redirects=False,  # a redirect must never carry the token to another host
            transport=transport,
        )
        self._lean = LeanEndpoint(transport, self.base_url, self._headers) if transport else None
        # Media lives on other hosts: a separate client that never holds the token, made
        # on first use (its TLS set-up costs time that most runs need not spend)
        self._media: httpx.AsyncClient | None = None

    async def aclose(self) -> None:
        """Close both connection pools."""
        await self._http.aclose()
        if self._media is not None:
            await self._media.aclose()

    async def __aenter__(self) -> ApiClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def _call(
        self,
        kind: str,
        method: str,
        path: str,
        body: Any = None,
        *,
        on_send: Callable[[], None] | None = None,
    ) -> Any:
        """One HTTP exchange; transport failures become ApiTransientError (submit: uncertain)."""
        await self.limiter.acquire()
        if self._slots is None:  # made here: anyio primitives need the running loop
            # fast_acquire: a free slot is taken without a trip round the event loop
            self._slots = anyio.Semaphore(self._max_connections, fast_acquire=True)
        self.calls[kind] += 1
        try:
            # a slot per connection, taken before on_send: "sent" then means really leaving
            async with self._slots:
                if on_send is not None:
                    on_send()
                status, content, retry_after = await self._send(method, path, body)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            # the request never left: safe to repeat, even a submit
            raise ApiTransientError(
                f"{kind}: cannot reach {self.base_url} ({_brief(exc)})"
            ) from exc
        except (httpx.TransportError, httpx.DecodingError) as exc:
            error = SubmitUncertainError if kind == "submit" else ApiTransientError
            raise error(f"{kind}: connection failed after sending ({_brief(exc)})") from exc
        try:
            data = json.loads(content)
        except (json.JSONDecodeError, UnicodeDecodeError):
            data = None
        if status == 429 and self.on_rate_limited is not None:
            self.on_rate_limited()
        if data is None and status < 400:
            error = SubmitUncertainError if kind == "submit" else ApiTransientError
            raise error(f"{kind}: the API answered HTTP {status} without valid JSON")
        _raise_for_answer(status, retry_after, data, kind)
        return data

    async def _send(self, method: str, path: str, body: Any) -> tuple[int, bytes, float | None]:
        """One exchange: the status, the (decoded) body and its Retry-After header."""
        if self._lean and self._lean.ready():  # httpx's objects cost more than the exchange
            status, headers, content = await self._lean.send(method, path, body, self._timeouts)
            return status, content, _retry_after(header(headers, b"retry-after"))
        request = httpx.Request(
            method,
            self.base_url + path,
            headers=self._headers,
            json=body,
            extensions={"timeout": self._timeouts},
        )
        response = await self._http.send(request)  # a proxy or another event loop: httpx's way
        retry_after = response.headers.get("retry-after")
        return response.status_code, response.content, _retry_after(retry_after)

    async def _retrying(self, call: Callable[[], Awaitable[T]]) -> T:
        for attempt in range(1, self.retry.attempts + 1):
            try:
                return await call()
            except SubmitUncertainError:
                raise  # a job may exist: repeating the submit could pay twice
            except ApiTransientError as exc:
                if attempt >= self.retry.attempts:
                    raise
                await anyio.sleep(self.retry.wait(attempt, exc.retry_after))
        raise AssertionError("unreachable")

    async def submit(
        self,
        model_id: str,
        payload: dict[str, Any],
        *,
        on_send: Callable[[], None] | None = None,
    ) -> Submitted:
        """POST a job; retried only when the failure proves no job was created.

        `on_send` is called just before the request leaves (after rate limits and waits).
        """

        async def once() -> Submitted:
            try:
                path = f"/v1/models/{model_id}"
                data = await self._call("submit", "POST", path, payload, on_send=on_send)
            except SubmitUncertainError:
                raise
            except ApiTransientError as exc:
                # only "never connected" and 429 prove that no job was created
                if exc.status_code is None or exc.status_code == 429:
                    raise
                raise SubmitUncertainError(str(exc), status_code=exc.status_code) from exc
            request_id = data.get("request_id") if isinstance(data, dict) else None
            if not request_id:
                raise SubmitUncertainError("submit: the answer has no request_id")
            return Submitted(_text(request_id), _text(data.get("status") or "in_queue"))

        return await self._retrying(once)

    async def status(self, request_id: str) -> JobStatus:
        """Current status (and queue position) of a request."""
        data = await self._retrying(
            lambda: self._call("status", "GET", f"/v1/requests/{quote(request_id)}/status")
        )
        return _job_status(data)

    async def result(self, request_id: str) -> JobStatus:
        """The outcome of a finished request (or its current status if not finished)."""
        path = f"/v1/requests/{quote(request_id)}/result?include_cost=true"
        data = await self._retrying(lambda: self._call("result", "GET", path))
        return _job_status(data)

    async def cancel(self, request_id: str) -> str:
        """Ask to cancel a request; returns the outcome (`cancelled`, `not_cancellable`, ...)."""
        data = await self._retrying(
            lambda: self._call("cancel", "POST", f"/v1/requests/{quote(request_id)}/cancel")
        )
        outcome = str(data.get("outcome") or data.get("status") or "")
        return (
            "cancelled" if outcome == "cancelled" or data.get("status") == "cancelled" else outcome
        )

    async def download(self, url: str, dest: Path) -> int:
        """Download `url` to `dest` atomically (no token is sent); returns the byte count."""
        part = dest.with_name(dest.name + ".part")
        for attempt in range(1, self.retry.attempts + 1):
            try:
                size = 0
                if self._media is None:
                    self._media = httpx.AsyncClient(
                        timeout=httpx.Timeout(120.0, connect=10.0), follow_redirects=True
                    )
                async with self._media.stream("GET", url) as response:
                    response.raise_for_status()
                    with part.open("wb") as handle:
                        async for chunk in response.aiter_bytes(1 << 16):
                            handle.write(chunk)
                            size += len(chunk)
                        handle.flush()
                        os.fsync(handle.fileno())
                os.replace(part, dest)
                return size
            except (httpx.HTTPError, httpx.InvalidURL, OSError) as exc:
                part.unlink(missing_ok=True)
                if attempt >= self.retry.attempts:
                    raise ApiTransientError(f"download of {url} failed: {_brief(exc)}") from exc
                await anyio.sleep(self.retry.wait(attempt))
        raise AssertionError("unreachable")


async def stream_prefix(
    url: str, feed: Callable[[bytes], bool], *, timeout: float = 20.0
) -> int | None:
    """GET `url` without credentials, handing chunks to `feed` until it returns True.

    Returns the Content-Length the server announced (None if it did not say); raises
    ApiTransientError (unreachable) or ApiPermanentError (HTTP error) with one clear line.
    """
    async with httpx.AsyncClient(timeout=timeout, follow_redirects=True) as media:
        try:
            async with media.stream("GET", url) as response:
                if response.status_code >= 400:
                    raise ApiPermanentError(
                        f"HTTP {response.status_code}", status_code=response.status_code
                    )
                length = response.headers.get("content-length")
                async for chunk in response.aiter_bytes(1 << 14):
                    if feed(chunk):
                        break
                return int(length) if length and length.isdigit() else None
        except httpx.TransportError as exc:
            raise ApiTransientError(f"cannot fetch it ({_brief(exc)})") from exc


def _api_transport(base_url: str, max_connections: int) -> LeanTransport | None:
    """The lean transport, unless a proxy from the environment applies (httpx's own handles it)."""
    host = httpx.URL(base_url).host
    proxies = urllib.request.getproxies()
    if any(key in proxies for key in ("http", "https", "all")) and not urllib.request.proxy_bypass(
        host
    ):
        return None
    return LeanTransport(max_connections=max_connections)


def _brief(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _job_status(data: Any) -> JobStatus:
    if not isinstance(data, dict) or not data.get("status"):
        raise ApiTransientError("the API answer has no status")
    status = _text(data["status"]).lower()
    if status == "succeeded":
        status = "completed"
    output = data.get("output") or {}
    video = None
    if isinstance(output, dict):
        video = output.get("video") or next(iter(output.get("videos") or []), None)
    error = data.get("error")
    if error is not None:
        error = _text(error) if isinstance(error, str) else _message(error, json.dumps(error)[:500])
    position = data.get("queue_position")
    cost = data.get("cost")
    return JobStatus(
        status=status,
        queue_position=int(position) if isinstance(position, int | float) else None,
        video_url=_text(video) if video else None,
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


__all__ = [
    "DEFAULT_BASE_URL",
    "FINAL_STATUSES",
    "NO_RETRY",
    "ApiClient",
    "ApiError",
    "JobStatus",
    "RetryPolicy",
    "Submitted",
    "normalise_status",
    "token_from_env",
]
