"""The Model API client: httpx's AsyncClient with a sized pool, a rate cap and retries."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import anyio
import httpx

from batchgen import __version__
from batchgen.client.answers import (
    JobStatus,
    Submitted,
    brief,
    job_status,
    message,
    raise_for_answer,
    retry_after,
    text,
)
from batchgen.client.media import MediaClient
from batchgen.client.retry import RetryPolicy
from batchgen.errors import (
    ApiTransientError,
    ConfigError,
    EndpointError,
    NotFoundError,
    SubmitUncertainError,
)
from batchgen.requestrate import RequestRate

DEFAULT_BASE_URL = "https://model-api.runcomfy.net"
# httpx's meaning: connect is the TCP (and TLS) set-up, read and write the longest gap
# between two reads or writes, pool the wait for a free connection
DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=10.0)
USER_AGENT = f"batchgen/{__version__}"
T = TypeVar("T")

# httpx errors raised before a byte of the request left: even a submit may be repeated
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


def token_from_env() -> str:
    """The API token from RUNCOMFY_API_TOKEN, checked (see check_token), or a ConfigError."""
    return check_token(os.environ.get("RUNCOMFY_API_TOKEN", ""))


def check_token(token: str) -> str:
    """`token` if it can go in a header as it is: printable ASCII, no whitespace.

    Anything else is a ConfigError that says what is wrong and never shows the token: a
    line break would start a header of its own, and no RunComfy key holds such characters.
    """
    if not token.strip():
        raise ConfigError("no API token: set RUNCOMFY_API_TOKEN to your RunComfy API key")
    for at, char in enumerate(token):
        if "!" <= char <= "~":
            continue
        if char in "\r\n":
            what = "a line break (a file saved with Windows line endings?)"
        elif char.isspace():
            what = "a space or tab"
        elif not char.isprintable():
            what = "a control character"
        else:
            what = "a character outside ASCII"
        where = "at its start" if at == 0 else "at its end" if at == len(token) - 1 else "inside"
        raise ConfigError(
            f"RUNCOMFY_API_TOKEN holds {what} {where}; a RunComfy API key is printable ASCII "
            "without spaces: set it again (the token is not shown)"
        )
    return token


# what a request_id may hold: RunComfy's are UUIDs; anything else could turn a path
# such as /v1/requests/{id}/status into another one ("../", "?", "#", "%2F")
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


REQUEST_ID_RULE = "letters, digits and . _ : - only, at most 128, not . or .."


def is_request_id(request_id: str) -> bool:
    """Whether `request_id` is one the API could have given (see _REQUEST_ID)."""
    return bool(_REQUEST_ID.fullmatch(request_id)) and request_id not in (".", "..")


def request_path(request_id: str, action: str) -> str:
    """`/v1/requests/{request_id}/{action}`, the id checked and quoted as one path segment.

    An id the API could not have given is a NotFoundError naming it: the request is never
    sent, so no other job's answer can be taken for it.
    """
    if not is_request_id(request_id):
        raise NotFoundError(
            f"request_id {request_id[:60]!r} is not one the API gives ({REQUEST_ID_RULE}); "
            "it was not sent"
        )
    return f"/v1/requests/{quote(request_id, safe='')}/{action}"


class ApiClient:
    """Async client of the Model API with connection limits, a rate cap and retries.

    The token goes only to `base_url`: redirects are never followed, and media on other
    hosts is fetched by `media`, a separate client that never holds it.
    """

    def __init__(
        self,
        *,
        base_url: str,
        token: str,
        max_connections: int = 16,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        rate: float | None = None,
    ) -> None:
        token = check_token(token)
        self.base_url = base_url.rstrip("/")
        self.retry = retry or RetryPolicy()
        self._max_connections = max_connections
        self._slots: anyio.Semaphore | None = None
        self.limiter = RequestRate(rate)  # --rate, and the provider's rate learned from 429s
        self.calls: dict[str, int] = {"submit": 0, "status": 0, "result": 0, "cancel": 0}
        if not isinstance(timeout, httpx.Timeout):
            timeout = httpx.Timeout(timeout, connect=min(timeout, 10.0))
        limits = httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        )
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {token}", "User-Agent": USER_AGENT},
            timeout=timeout,
            # httpx makes its own transport (AsyncHTTPTransport) with these limits, and one
            # per proxy from the environment (an explicit transport= would turn those off)
            limits=limits,
            follow_redirects=False,  # a redirect must never carry the token to another host
        )
        self.media = MediaClient(retry=self.retry)

    async def aclose(self) -> None:
        """Close both connection pools."""
        await self._http.aclose()
        await self.media.aclose()

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
        response, sent = await self._exchange(kind, method, path, body, on_send)
        try:
            data = json.loads(response.content)
        except (json.JSONDecodeError, UnicodeDecodeError):
            data = None
        status = response.status_code
        told = retry_after(response.headers.get("retry-after"))
        if status != 429:
            self.limiter.accepted_call(kind)
        else:
            self.limiter.refused_call(kind, told, sent)
        if kind == "submit":
            self._check_endpoint(response, data)
        if data is None and status < 400:
            error = SubmitUncertainError if kind == "submit" else ApiTransientError
            raise error(f"{kind}: the API answered HTTP {status} without valid JSON")
        raise_for_answer(status, told, data, kind)
        return data

    def _check_endpoint(self, response: httpx.Response, data: Any) -> None:
        """Refuse a submit's answer that proves the base URL leads elsewhere (no job was made).

        The Model API answers a submit with JSON; a redirect, or a 404/405 that names no job
        (no request_id, not error_code 404001), comes from a proxy, a web server or a
        mistyped path, which created nothing.
        """
        status = response.status_code
        if 300 <= status < 400:
            where = response.headers.get("location")
            what = f"a redirect to {where[:200]}" if where else "a redirect"
        elif status in (404, 405):
            names_job = isinstance(data, dict) and (
                data.get("request_id") or data.get("error_code") == 404001
            )
            if names_job:
                return
            what = message(data, response.reason_phrase or "no such route")[:200]
        else:
            return
        raise EndpointError(
            f"the base URL {self.base_url} does not lead to the Model API: POST "
            f"{response.request.url} got HTTP {status} ({what}), so nothing was submitted and "
            "the jobs stay pending: check --base-url, $RUNCOMFY_BASE_URL or the job file's "
            "base_url",
            status_code=status,
        )

    async def _exchange(
        self, kind: str, method: str, path: str, body: Any, on_send: Callable[[], None] | None
    ) -> tuple[httpx.Response, float]:
        """Send one request and read its whole answer, under the rate cap and a pool slot;
        the answer, and when the rate cap let it go."""
        sent = await self.limiter.acquire()
        if self._slots is None:  # made here: anyio primitives need the running loop
            # fast_acquire: a free slot is taken without a trip round the event loop
            self._slots = anyio.Semaphore(self._max_connections, fast_acquire=True)
        self.calls[kind] += 1
        try:
            # a slot per connection, taken before on_send: "sent" then means really leaving
            async with self._slots:
                if on_send is not None:
                    on_send()
                return await self._http.request(method, path, json=body), sent
        except _NOT_SENT as exc:
            raise ApiTransientError(f"{kind}: cannot reach {self.base_url} ({brief(exc)})") from exc
        except httpx.RequestError as exc:
            # it may have reached the server: a submit's job may exist
            error = SubmitUncertainError if kind == "submit" else ApiTransientError
            raise error(f"{kind}: connection failed after sending ({brief(exc)})") from exc

    async def _retrying(self, call: Callable[[], Awaitable[T]]) -> T:
        attempts = self.retry.attempt_count()
        for attempt in range(1, attempts + 1):
            try:
                return await call()
            except SubmitUncertainError:
                raise  # a job may exist: repeating the submit could pay twice
            except ApiTransientError as exc:
                if attempt >= attempts:
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
            if not is_request_id(text(request_id)):
                # a job may exist, but following it could read another job's answers
                raise SubmitUncertainError(
                    f"submit: the answer's request_id {text(request_id)[:60]!r} is not one "
                    f"batchgen can follow safely ({REQUEST_ID_RULE})"
                )
            return Submitted(text(request_id), text(data.get("status") or "in_queue"))

        return await self._retrying(once)

    async def status(self, request_id: str) -> JobStatus:
        """Current status (and queue position) of a request."""
        path = request_path(request_id, "status")
        return job_status(await self._retrying(lambda: self._call("status", "GET", path)))

    async def result(self, request_id: str) -> JobStatus:
        """The outcome of a finished request (or its current status if not finished)."""
        path = request_path(request_id, "result") + "?include_cost=true"
        return job_status(await self._retrying(lambda: self._call("result", "GET", path)))

    async def cancel(self, request_id: str) -> str:
        """Ask to cancel a request; returns the outcome (`cancelled`, `not_cancellable`, ...)."""
        path = request_path(request_id, "cancel")
        data = await self._retrying(lambda: self._call("cancel", "POST", path))
        outcome = str(data.get("outcome") or data.get("status") or "")
        return (
            "cancelled" if outcome == "cancelled" or data.get("status") == "cancelled" else outcome
        )

    async def download(self, url: str, dest: Path) -> int:
        """Download a result video to `dest` atomically (no token is sent); the byte count."""
        return await self.media.download(url, dest)
