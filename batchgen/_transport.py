"""A lean HTTP/1.1 transport under httpx: keep-alive connections on asyncio, parsed by httptools.

Why: httpcore's pool spends about 1 to 2 ms of CPU per request here (it checks every pooled
socket on each request, through several layers of anyio streams), which caps a run at about
250 requests/s on a 2-core machine. This transport keeps httpx's API, request building, error
types and timeouts, and does the exchange itself in tens of microseconds. It serves the Model
API's small JSON exchanges: whole bodies in memory, HTTP/1.1 only, no proxies, no upgrades;
anything else (another event loop, HEAD, CONNECT) goes to httpx's own transport. ApiClient
uses LeanEndpoint, which writes its requests as bytes and skips httpx's objects altogether.

Errors keep httpx's meaning, which the client relies on for "was the request sent?":
ConnectError/ConnectTimeout/PoolTimeout only before a byte of the request was written;
ReadError, ReadTimeout, RemoteProtocolError and WriteError after.
"""

from __future__ import annotations

import asyncio
import json
import re
import select
import ssl
import time
from collections import deque
from typing import Any

import httptools
import httpx

MAX_BODY = 64 << 20  # bytes; an answer larger than this is refused, not buffered
_Origin = tuple[str, str, int]


class _Answer:
    """One parsed response."""

    __slots__ = ("body", "headers", "keep_alive", "reason", "status")

    def __init__(self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body: list[bytes] = []
        self.keep_alive = False


class _Connection(asyncio.Protocol):
    """One keep-alive connection carrying one exchange at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[_Answer] | None = None
        self._writable: asyncio.Future[None] | None = None
        self._reason = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._answer: _Answer | None = None
        self._size = 0
        self._received = False
        self._framed = False  # Content-Length or chunked: the body does not end at EOF

    # -- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the transport."""
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass

    def connection_lost(self, exc: Exception | None) -> None:
        """The peer closed (or the connection broke): end any exchange in flight."""
        self.closed = True
        answer = self._answer
        if answer is not None and not self._framed and self._waiter is not None:
            answer.keep_alive = False  # the body ran to EOF: a complete answer
            self._finish(answer)
        elif self._received:
            self._fail(httpx.ReadError("the connection closed in the middle of the answer"))
        else:
            self._fail(httpx.RemoteProtocolError("Server disconnected without sending a response."))
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)

    def data_received(self, data: bytes) -> None:
        """Feed the parser; bytes with no exchange in flight make the connection unusable."""
        if self._waiter is None:
            self.close()
            return
        self._received = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(httpx.RemoteProtocolError("the server asked for a protocol upgrade"))
        except httptools.HttpParserError as exc:
            self._fail(httpx.RemoteProtocolError(f"malformed HTTP answer: {exc}"))

    def pause_writing(self) -> None:
        """The socket buffer is full: writers wait."""
        loop = asyncio.get_running_loop()
        self._writable = loop.create_future()

    def resume_writing(self) -> None:
        """The socket buffer drained."""
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)
        self._writable = None

    # -- httptools callbacks
    def on_status(self, reason: bytes) -> None:
        """The reason phrase (may come in pieces)."""
        self._reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        """One header line."""
        lowered = name.lower()
        if lowered in (b"content-length", b"transfer-encoding"):
            self._framed = True
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        """The head is read: the answer exists from here on."""
        status = self._parser.get_status_code()
        if 100 <= status < 200:  # an interim answer (100 Continue): the real one follows
            self._reason, self._headers, self._framed = b"", [], False
            return
        self._answer = _Answer(status, self._reason, self._headers)

    def on_body(self, body: bytes) -> None:
        """A piece of the body."""
        answer = self._answer
        if answer is None:
            return
        self._size += len(body)
        if self._size > MAX_BODY:
            self._fail(httpx.RemoteProtocolError(f"answer larger than {MAX_BODY} bytes"))
            return
        answer.body.append(body)

    def on_message_complete(self) -> None:
        """The answer is whole."""
        answer = self._answer
        if answer is None:
            return
        answer.keep_alive = self._parser.should_keep_alive()
        self._finish(answer)

    # -- exchanges
    async def exchange(self, data: bytes, read_timeout: float | None) -> _Answer:
        """Write one request and wait for its answer (the connection may be reused after)."""
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[_Answer] = loop.create_future()
        self._waiter, self._answer, self._reason, self._headers = waiter, None, b"", []
        self._size, self._received, self._framed = 0, False, False
        timer = None
        if read_timeout is not None:
            timer = loop.call_later(read_timeout, self._time_out)
        try:
            try:
                self.transport.write(data)
            except (OSError, RuntimeError) as exc:
                raise httpx.WriteError(f"cannot write the request: {exc}") from exc
            if self._writable is not None:
                await self._writable
            return await waiter
        except BaseException:
            self.abort()  # cancelled or failed mid-exchange: the stream's state is unknown
            raise
        finally:
            if timer is not None:
                timer.cancel()
            self._waiter = None
            self._answer = None

    def _time_out(self) -> None:
        self._fail(httpx.ReadTimeout("no answer within the read timeout"))

    def _finish(self, answer: _Answer) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(answer)

    def _fail(self, error: Exception) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(error)
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)  # a writer stalled on a full buffer hears it too
        self.abort()

    def peer_gone(self) -> bool:
        """An idle socket that is readable was closed by the peer (or got bytes unasked).

        The loop may not have read that EOF yet when the connection is taken for reuse.
        """
        sock = self.transport.get_extra_info("socket") if self.transport is not None else None
        if sock is None:
            return False  # nothing to ask: `closed` has the last word
        fd = sock.fileno()
        if fd < 0:
            return True
        if not hasattr(select, "poll"):  # Windows
            return bool(select.select([fd], [], [], 0)[0])
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        return bool(poller.poll(0))

    def abort(self) -> None:
        """Drop the socket at once, unsent bytes and all (close() would wait for them)."""
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def close(self) -> None:
        """Close the socket; the connection is never used again."""
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class LeanTransport(httpx.AsyncBaseTransport):
    """Keep-alive HTTP/1.1 connections per origin, at most `max_connections` in use at once."""

    def __init__(
        self,
        *,
        max_connections: int = 16,
        keepalive_expiry: float = 5.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.max_connections = max_connections
        self.keepalive_expiry = keepalive_expiry
        self._ssl_context = ssl_context
        self._idle: dict[_Origin, list[_Connection]] = {}
        self._in_use = 0
        self._waiting: deque[asyncio.Future[None]] = deque()
        self._fallback: httpx.AsyncHTTPTransport | None = None
        self._closed = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send `request` on a pooled connection and return the whole answer."""
        url = request.url
        if (
            request.method in ("HEAD", "CONNECT")
            or url.scheme not in ("http", "https")
            or not _on_asyncio()
        ):
            return await self._fallback_transport().handle_async_request(request)
        timeouts: dict[str, float | None] = request.extensions.get("timeout", {})
        data = await _serialise(request)
        answer = await self.round_trip(_origin(url), data, timeouts)
        return httpx.Response(
            answer.status,
            headers=answer.headers,
            stream=httpx.ByteStream(b"".join(answer.body)),
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": answer.reason},
            request=request,
        )

    async def round_trip(
        self, origin: _Origin, data: bytes, timeouts: dict[str, float | None]
    ) -> _Answer:
        """Write the request bytes `data` to `origin` on a pooled connection; the whole answer."""
        if self._closed:
            raise httpx.ConnectError("the transport is closed")
        await self._acquire_slot(timeouts.get("pool"))
        try:
            connection = self._idle_connection(origin)
            if connection is None:
                connection = await self._connect(origin, timeouts.get("connect"))
            answer = await connection.exchange(data, timeouts.get("read"))
            if answer.keep_alive and not connection.closed and not self._closed:
                connection.idle_since = time.monotonic()
                self._idle.setdefault(origin, []).append(connection)
            else:
                connection.close()
        finally:
            self._release_slot()
        return answer

    async def aclose(self) -> None:
        """Close every pooled connection."""
        self._closed = True
        for connections in self._idle.values():
            for connection in connections:
                connection.close()
        self._idle.clear()
        if self._fallback is not None:
            await self._fallback.aclose()

    def _fallback_transport(self) -> httpx.AsyncHTTPTransport:
        if self._fallback is None:
            self._fallback = httpx.AsyncHTTPTransport(
                limits=httpx.Limits(max_connections=self.max_connections)
            )
        return self._fallback

    async def _acquire_slot(self, timeout: float | None) -> None:
        if self._in_use < self.max_connections and not self._waiting:
            self._in_use += 1
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiting.append(waiter)
        try:
            await asyncio.wait_for(waiter, timeout)
        except TimeoutError as exc:
            if waiter.done() and not waiter.cancelled():
                self._release_slot()  # handed over as the timeout struck (Python 3.12+): pass it on
            raise httpx.PoolTimeout("no free connection within the pool timeout") from exc
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self._release_slot()  # it was handed over just as we gave up: pass it on
            raise
        finally:
            if waiter in self._waiting:
                self._waiting.remove(waiter)

    def _release_slot(self) -> None:
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot passes straight to the next in line
                return
        self._in_use -= 1

    def _idle_connection(self, origin: _Origin) -> _Connection | None:
        """The most recently used live connection to `origin`; expired ones are closed."""
        connections = self._idle.get(origin)
        if not connections:
            return None
        oldest_allowed = time.monotonic() - self.keepalive_expiry
        while connections and (connections[0].closed or connections[0].idle_since < oldest_allowed):
            connections.pop(0).close()
        while connections:
            connection = connections.pop()
            if not connection.closed and not connection.peer_gone():
                return connection
            connection.close()
        return None

    async def _connect(self, origin: _Origin, timeout: float | None) -> _Connection:
        scheme, host, port = origin
        loop = asyncio.get_running_loop()
        kwargs: dict[str, Any] = {}
        if scheme == "https":
            if self._ssl_context is None:
                self._ssl_context = httpx.create_ssl_context()
            kwargs = {"ssl": self._ssl_context, "server_hostname": host}
        try:
            _, connection = await asyncio.wait_for(
                loop.create_connection(_Connection, host, port, **kwargs), timeout
            )
        except TimeoutError as exc:
            raise httpx.ConnectTimeout(f"no connection to {host}:{port} in time") from exc
        except (OSError, ssl.SSLError) as exc:
            raise httpx.ConnectError(f"cannot connect to {host}:{port}: {exc}") from exc
        return connection


class LeanEndpoint:
    """Calls to one base URL with constant headers, sent as bytes: no httpx object per call.

    httpx's Request, URL, Headers and Response cost more CPU than the exchange itself; the
    request line and head are put together here the way httpx would write them.
    """

    def __init__(self, transport: LeanTransport, base_url: str, headers: httpx.Headers) -> None:
        url = httpx.URL(base_url)
        self.transport = transport
        self.base_url = base_url
        # anything unusual in the base URL (a query, another scheme) goes httpx's own way
        self.usable = url.scheme in ("http", "https") and not url.query and not url.fragment
        self.origin = _origin(url)
        self._prefix = url.raw_path.rstrip(b"/")
        lines = [(b"Host", url.netloc), *headers.raw]
        self._head = b"".join(name + b": " + value + b"\r\n" for name, value in lines)

    def ready(self) -> bool:
        """Whether this call can go the lean way (on asyncio, with a plain base URL)."""
        return self.usable and _on_asyncio()

    def target(self, path: str) -> bytes:
        """The request target of `path` under the base URL, as httpx.URL would encode it."""
        if _PLAIN_PATH.fullmatch(path) and "/." not in path:
            return self._prefix + path.encode("ascii")
        return httpx.URL(self.base_url + path).raw_path  # escapes, dot segments: httpx decides

    async def send(
        self, method: str, path: str, payload: Any, timeouts: dict[str, float | None]
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """One exchange with `payload` as JSON (None: no body): status, headers, decoded body."""
        head = [method.encode("ascii"), b" ", self.target(path), b" HTTP/1.1\r\n", self._head]
        body = b""
        if payload is not None:  # encoded as httpx encodes json=
            text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
            body = text.encode()
            head.append(b"Content-Length: %d\r\nContent-Type: application/json\r\n" % len(body))
        elif method in ("POST", "PUT", "PATCH"):
            head.append(b"Content-Length: 0\r\n")  # as httpx sends a bodiless POST
        head += [b"\r\n", body]
        answer = await self.transport.round_trip(self.origin, b"".join(head), timeouts)
        content = b"".join(answer.body)
        if any(name.lower() == b"content-encoding" for name, _ in answer.headers):
            # rare: the API is not asked to compress; httpx undoes gzip/deflate/br as before
            content = httpx.Response(answer.status, headers=answer.headers, content=content).content
        return answer.status, answer.headers, content


def header(headers: list[tuple[bytes, bytes]], name: bytes) -> str | None:
    """The value of header `name` (lower case), repeated ones joined by commas as httpx does."""
    values = [value.decode("latin-1") for key, value in headers if key.lower() == name]
    return ", ".join(values) if values else None


# a path of plain characters, sent as it is: httpx would neither escape nor normalise it
_PLAIN_PATH = re.compile(r"/[A-Za-z0-9._~/-]*(\?[A-Za-z0-9._~=&-]*)?")


def _origin(url: httpx.URL) -> _Origin:
    return (url.scheme, url.host, url.port or (443 if url.scheme == "https" else 80))


def _on_asyncio() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:  # another event loop (trio): httpx's own transport serves it
        return False
    return True


async def _serialise(request: httpx.Request) -> bytes:
    """The request's bytes on the wire: request line, headers, body with a Content-Length."""
    body = await request.aread()
    head = [request.method.encode(), b" ", request.url.raw_path, b" HTTP/1.1\r\n"]
    chunked = False
    for name, value in request.headers.raw:
        if name.lower() == b"transfer-encoding":
            chunked = True  # the body is read whole here, so it goes with a length instead
            continue
        head += [name, b": ", value, b"\r\n"]
    if chunked:
        head += [b"Content-Length: ", str(len(body)).encode(), b"\r\n"]
    head.append(b"\r\n")
    return b"".join(head) + body
