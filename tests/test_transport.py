"""LeanTransport against real loopback servers: keep-alive, framing, pool, error contract."""

from __future__ import annotations

import asyncio
import gzip
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from batchgen import _transport
from batchgen._transport import LeanTransport
from batchgen.client import NO_RETRY, ApiClient, RetryPolicy
from batchgen.errors import ApiTransientError, SubmitUncertainError
from tests.helpers import run_async

SHORT_READ = {"connect": 5.0, "read": 0.2, "write": 5.0, "pool": 5.0}


@dataclass
class Seen:
    """One request as the server read it."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    conn: int


def _answer(status: int, body: bytes = b"", *extra: str, length: bool = True) -> bytes:
    """An HTTP/1.1 answer's bytes, with a Content-Length unless told not to."""
    lines = [f"HTTP/1.1 {status} Custom Reason", "X-Served-By: loopback", *extra]
    if length:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class Server:
    """A scripted HTTP/1.1 server on 127.0.0.1; the first path segment picks its behaviour."""

    def __init__(self) -> None:
        self.port = 0
        self.accepted = 0  # connections accepted
        self.open = 0  # connections open now
        self.max_open = 0
        self.eofs = 0  # connections the client closed
        self.seen: list[Seen] = []
        self.gate = asyncio.Event()  # "/gate" answers once this is set
        self.big = 0  # size of the "/big" body
        self._changed = asyncio.Event()

    def url(self, path: str) -> str:
        """The full URL of `path` on this server."""
        return f"http://127.0.0.1:{self.port}{path}"

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def until(self, condition: Callable[[], bool], timeout: float = 5.0) -> None:
        """Wait (bounded) until `condition` holds on the server's state."""
        async with asyncio.timeout(timeout):
            while not condition():
                await self._changed.wait()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve one connection: read requests and answer until told to stop or EOF."""
        self.accepted += 1
        conn = self.accepted
        self.open += 1
        self.max_open = max(self.max_open, self.open)
        self._notify()
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    self.eofs += 1
                    break
                line, *fields = head.decode("latin-1").split("\r\n")[:-2]
                method, path, _ = line.split(" ")
                headers = {k.lower(): v.strip() for k, v in (f.split(":", 1) for f in fields)}
                body = await reader.readexactly(int(headers.get("content-length", 0)))
                self.seen.append(Seen(method, path, headers, body, conn))
                self._notify()
                if not await self._respond(path.split("/")[1], self.seen[-1], reader, writer):
                    break
        finally:
            writer.close()
            with suppress(ConnectionError):
                await writer.wait_closed()
            self.open -= 1
            self._notify()

    async def _respond(
        self, route: str, req: Seen, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        """Write the answer of `route`; False ends the connection."""
        echo = json.dumps(
            {
                "method": req.method,
                "path": req.path,
                "body": req.body.decode(),
                "conn": req.conn,
                "request_id": "r1",  # a submit's and a job status's fields, for ApiClient
                "status": "in_queue",
            }
        ).encode()
        json_type = "Content-Type: application/json"
        if route == "gate":
            await self.gate.wait()
        if route in ("echo", "gate"):
            writer.write(_answer(200, echo, json_type))
        elif route == "close":  # says close but keeps serving: only the client may end it
            writer.write(_answer(200, echo, json_type, "Connection: close"))
        elif route == "once":  # keep-alive answer, then the server drops the idle connection
            writer.write(_answer(200, echo, json_type))
            return False
        elif route == "chunked":
            writer.write(_answer(200, b"", "Transfer-Encoding: chunked", length=False))
            for piece in (b"alpha-", b"beta-" * 50, b"gamma"):
                writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                await writer.drain()
            writer.write(b"0\r\n\r\n")
        elif route == "eof":  # no length: the body runs until the server closes
            writer.write(_answer(200, b"first part|", "Connection: close", length=False))
            await writer.drain()
            writer.write(b"second part|" * 100 + b"end")
            return False
        elif route == "gzip":
            writer.write(
                _answer(200, gzip.compress(b"plain text " * 100), "Content-Encoding: gzip")
            )
        elif route == "zipped":  # a JSON answer, gzipped
            writer.write(_answer(200, gzip.compress(echo), json_type, "Content-Encoding: gzip"))
        elif route == "busy":
            busy = b'{"error_code": 429, "message": "slow down"}'
            writer.write(_answer(429, busy, json_type, "Retry-After: 7"))
        elif route == "big":
            writer.write(_answer(200, b"x" * self.big))
        elif route == "half":
            writer.write(_answer(200, b"", "Content-Length: 100", length=False) + b"0123456789")
            return False
        elif route == "garbage":
            writer.write(b"NOT HTTP\r\n\r\n")
        elif route == "hang":  # never answers; waits for the client to hang up
            await reader.read()
            self.eofs += 1
            return False
        else:  # "drop": read the request, close without a word
            return False
        await writer.drain()
        return True


@asynccontextmanager
async def serve() -> AsyncIterator[Server]:
    """A running Server for the duration of the block."""
    server = Server()
    listener = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    server.port = listener.sockets[0].getsockname()[1]
    try:
        yield server
    finally:
        server.gate.set()
        listener.close()
        await listener.wait_closed()


pytestmark = pytest.mark.usefixtures("each_event_loop")  # asyncio and uvloop


def run(main: Callable[[], Awaitable[None]], timeout: float = 20.0) -> None:
    """Run one async test body on a fresh loop of this test's kind; fail rather than hang."""
    run_async(main, timeout=timeout)


async def fetch(
    transport: LeanTransport,
    method: str,
    url: str,
    timeout: dict[str, float] | None = None,
    **kw: Any,
) -> httpx.Response:
    """One exchange through the transport, the way ApiClient._send does it."""
    extensions = {"timeout": timeout or {"connect": 5.0, "read": 5.0, "write": 5.0, "pool": 5.0}}
    request = httpx.Request(method, url, extensions=extensions, **kw)
    response = await transport.handle_async_request(request)
    await response.aread()
    return response


def free_port() -> int:
    """A loopback port with nothing listening on it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_keep_alive_reuses_one_connection_and_carries_bodies_intact() -> None:
    """Sequential POSTs share one TCP connection; bodies, status, headers and JSON are exact."""

    async def main() -> None:
        async with serve() as server, LeanTransport() as transport:
            payloads = [{"n": i, "text": "héllo ✓ " * i} for i in range(4)]
            payloads.append({"blob": "z" * (2 << 20)})  # larger than the socket buffers
            for i, payload in enumerate(payloads):
                response = await fetch(
                    transport, "POST", server.url(f"/echo/{i}?q=1"), json=payload
                )
                assert response.status_code == 200
                assert response.reason_phrase == "Custom Reason"
                assert response.headers["x-served-by"] == "loopback"
                assert response.headers["content-type"] == "application/json"
                answer = response.json()
                assert answer["method"] == "POST"
                assert answer["path"] == f"/echo/{i}?q=1"
                assert json.loads(answer["body"]) == payload
                assert server.seen[-1].body == httpx.Request("POST", "/", json=payload).content
                assert server.seen[-1].headers["host"] == f"127.0.0.1:{server.port}"
            assert server.accepted == 1
            assert {s.conn for s in server.seen} == {1}

    run(main)


def test_connection_close_answer_is_honoured_with_a_fresh_connection() -> None:
    """After `Connection: close` the transport hangs up itself; the next request connects anew."""

    async def main() -> None:
        async with serve() as server, LeanTransport() as transport:
            first = await fetch(transport, "GET", server.url("/close"))
            assert first.json()["conn"] == 1
            second = await fetch(transport, "GET", server.url("/echo"))
            assert second.json()["conn"] == 2
            await server.until(lambda: server.eofs == 1)  # the client closed connection 1
            assert server.accepted == 2

    run(main)


def test_chunked_and_until_eof_bodies_are_read_whole() -> None:
    """A chunked body (then reuse of its connection) and a body ending at EOF arrive complete."""

    async def main() -> None:
        async with serve() as server, LeanTransport() as transport:
            chunked = await fetch(transport, "GET", server.url("/chunked"))
            assert chunked.content == b"alpha-" + b"beta-" * 50 + b"gamma"
            assert (await fetch(transport, "GET", server.url("/echo"))).json()["conn"] == 1
            until_eof = await fetch(transport, "GET", server.url("/eof"))
            assert until_eof.status_code == 200
            assert until_eof.content == b"first part|" + b"second part|" * 100 + b"end"
            assert (await fetch(transport, "GET", server.url("/echo"))).json()["conn"] == 2

    run(main)


def test_gzip_answer_is_decoded_by_httpx() -> None:
    """The transport hands over raw bytes; httpx undoes Content-Encoding: gzip."""

    async def main() -> None:
        async with serve() as server, LeanTransport() as transport:
            response = await fetch(transport, "GET", server.url("/gzip"))
            assert response.headers["content-encoding"] == "gzip"
            assert response.content == b"plain text " * 100

    run(main)


def test_refused_connection_is_a_connect_error_and_frees_its_slot() -> None:
    """Nothing listening: ConnectError each time (not PoolTimeout: the slot was given back)."""

    async def main() -> None:
        async with LeanTransport(max_connections=1) as transport:
            url = f"http://127.0.0.1:{free_port()}/echo"
            for _ in range(2):
                with pytest.raises(httpx.ConnectError):
                    await fetch(transport, "POST", url, json={"a": 1}, timeout=SHORT_READ)

    run(main)


@pytest.mark.parametrize(
    ("route", "error", "message"),
    [
        ("drop", httpx.RemoteProtocolError, "without sending a response"),  # no answer at all
        ("half", httpx.ReadError, "middle of the answer"),  # Content-Length 100, 10 bytes, EOF
        ("garbage", httpx.RemoteProtocolError, "malformed"),  # b"NOT HTTP\r\n\r\n"
    ],
)
def test_failures_after_sending_are_never_connect_errors(
    route: str, error: type[httpx.TransportError], message: str
) -> None:
    """A request that reached the server fails with a post-send error; the next one reconnects."""

    async def main() -> None:
        async with serve() as server, LeanTransport(max_connections=1) as transport:
            with pytest.raises(error, match=message) as caught:
                await fetch(transport, "POST", server.url(f"/{route}"), json={"job": 1})
            assert not isinstance(caught.value, httpx.ConnectError | httpx.PoolTimeout)
            assert [s.method for s in server.seen] == ["POST"]
            await server.until(lambda: server.open == 0)  # the failed socket is gone
            assert (await fetch(transport, "GET", server.url("/echo"))).json()["conn"] == 2

    run(main)


def test_read_timeout_closes_the_connection() -> None:
    """No answer in the read timeout: ReadTimeout, the socket is closed, the next request works."""

    async def main() -> None:
        async with serve() as server, LeanTransport(max_connections=1) as transport:
            with pytest.raises(httpx.ReadTimeout):
                await fetch(transport, "GET", server.url("/hang"), timeout=SHORT_READ)
            await server.until(lambda: server.eofs == 1)
            response = await fetch(transport, "GET", server.url("/echo"), timeout=SHORT_READ)
            assert response.json()["conn"] == 2

    run(main)


def test_pool_limit_holds_and_pool_timeout_when_full() -> None:
    """Five requests on a 2-connection pool: two on the wire, a sixth times out, all five finish."""

    async def main() -> None:
        async with serve() as server, LeanTransport(max_connections=2) as transport:
            tasks = [
                asyncio.create_task(fetch(transport, "POST", server.url("/gate"), json={"i": i}))
                for i in range(5)
            ]
            await server.until(lambda: len(server.seen) == 2)
            pool_short = {"connect": 5.0, "read": 5.0, "write": 5.0, "pool": 0.2}
            with pytest.raises(httpx.PoolTimeout):
                await fetch(transport, "GET", server.url("/echo"), timeout=pool_short)
            assert (server.accepted, server.max_open, len(server.seen)) == (2, 2, 2)
            server.gate.set()
            answers = [r.json() for r in await asyncio.gather(*tasks)]
            assert sorted(json.loads(a["body"])["i"] for a in answers) == [0, 1, 2, 3, 4]
            assert (server.accepted, server.max_open) == (2, 2)
            assert [s.path for s in server.seen] == ["/gate"] * 5  # the timed-out one never left

    run(main)


def test_cancelled_request_closes_its_connection_and_frees_its_slot() -> None:
    """Cancelling mid-wait hangs up that socket; the single pool slot serves the next request."""

    async def main() -> None:
        async with serve() as server, LeanTransport(max_connections=1) as transport:
            task = asyncio.create_task(fetch(transport, "GET", server.url("/hang")))
            await server.until(lambda: len(server.seen) == 1)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await server.until(lambda: server.eofs == 1)
            pool_short = {"connect": 5.0, "read": 5.0, "write": 5.0, "pool": 1.0}
            response = await fetch(transport, "GET", server.url("/echo"), timeout=pool_short)
            assert response.json()["conn"] == 2

    run(main)


def test_idle_connection_closed_by_server_is_not_reused() -> None:
    """The server drops a keep-alive connection after answering; the next request reconnects."""

    async def main() -> None:
        async with serve() as server, LeanTransport() as transport:
            for round_ in range(5):
                first = await fetch(transport, "POST", server.url("/once"), json={"r": round_})
                assert first.json()["conn"] == 2 * round_ + 1
                await server.until(lambda: server.open == 0)  # fully closed on the server side
                second = await fetch(transport, "POST", server.url("/once"), json={"r": round_})
                assert second.json()["conn"] == 2 * round_ + 2
                await server.until(lambda: server.open == 0)
            assert len(server.seen) == 10

    run(main)


@pytest.mark.parametrize("route", ["big", "eof", "chunked"])
def test_answer_larger_than_max_body_is_refused(
    route: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over MAX_BODY is a RemoteProtocolError whatever the framing; exactly MAX_BODY passes."""
    monkeypatch.setattr(_transport, "MAX_BODY", 200)

    async def main() -> None:
        async with serve() as server, LeanTransport() as transport:
            server.big = 200
            if route == "big":
                assert len((await fetch(transport, "GET", server.url("/big"))).content) == 200
                server.big = 201
            with pytest.raises(httpx.RemoteProtocolError, match="larger than 200"):
                await fetch(transport, "GET", server.url(f"/{route}"))

    run(main)


def test_api_client_submit_dropped_after_sending_is_uncertain_and_not_retried() -> None:
    """ApiClient: a submit the server read but never answered is SubmitUncertainError, sent once."""

    async def main() -> None:
        retry = RetryPolicy(attempts=3, base=0.01, cap=0.02)
        async with serve() as server:
            client = ApiClient(base_url=server.url("/drop"), token="t", timeout=5.0, retry=retry)
            async with client:
                with pytest.raises(SubmitUncertainError):
                    await client.submit("some/model", {"prompt": "a fox"})
            assert [(s.method, s.path) for s in server.seen] == [
                ("POST", "/drop/v1/models/some/model")
            ]
            assert server.seen[0].headers["authorization"] == "Bearer t"
        refused = ApiClient(base_url=f"http://127.0.0.1:{free_port()}", token="t", retry=retry)
        async with refused:  # never connected: safe, so retried up to the policy's attempts
            with pytest.raises(ApiTransientError) as caught:
                await refused.submit("some/model", {"prompt": "a fox"})
            assert not isinstance(caught.value, SubmitUncertainError)
            assert refused.calls["submit"] == 3

    run(main)


def test_read_timeout_ends_an_upload_the_server_never_reads() -> None:
    """A body stuck in a full socket buffer still ends in ReadTimeout, not a hang."""

    async def main() -> None:
        stop = asyncio.Event()

        async def never_read(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")  # the head only: the body is left unread
            await stop.wait()
            writer.close()

        listener = await asyncio.start_server(never_read, "127.0.0.1", 0, limit=1 << 16)
        port = listener.sockets[0].getsockname()[1]
        try:
            async with LeanTransport() as transport:
                timeout = {"connect": 5.0, "read": 0.5, "write": 5.0, "pool": 5.0}
                with pytest.raises(httpx.ReadTimeout):
                    await fetch(
                        transport,
                        "POST",
                        f"http://127.0.0.1:{port}/upload",
                        timeout,
                        content=b"x" * (32 << 20),
                    )
        finally:
            stop.set()
            listener.close()
            await listener.wait_closed()

    run(main)


def test_api_client_sends_exactly_what_httpx_would() -> None:
    """ApiClient's byte-level requests match httpx.Request's: target, headers, JSON body."""

    async def main() -> None:
        async with serve() as server:
            base = server.url("/echo/base")
            async with ApiClient(base_url=base, token="tok", retry=NO_RETRY) as client:
                await client.submit("vendor/model-1", {"prompt": "héllo ✓", "n": [1.5, None]})
                await client.status("plain-id_1.2~x")
                await client.status("odd id/é")  # escaped by quote(), then as httpx does
                await client.status("..")  # a dot segment: httpx normalises it away
                await client.result("plain-id")
                assert await client.cancel("plain-id") == "in_queue"  # a POST without a body
            expected = [
                ("POST", "/v1/models/vendor/model-1", {"prompt": "héllo ✓", "n": [1.5, None]}),
                ("GET", "/v1/requests/plain-id_1.2~x/status", None),
                ("GET", "/v1/requests/odd%20id/%C3%A9/status", None),
                ("GET", "/v1/requests/../status", None),
                ("GET", "/v1/requests/plain-id/result?include_cost=true", None),
                ("POST", "/v1/requests/plain-id/cancel", None),
            ]
            assert len(server.seen) == len(expected)
            headers = {"Authorization": "Bearer tok", "User-Agent": "batchgen/0.1"}
            for seen, (method, path, payload) in zip(server.seen, expected, strict=True):
                want = httpx.Request(method, base + path, headers=headers, json=payload)
                assert (seen.method, seen.path) == (method, want.url.raw_path.decode())
                assert seen.body == want.content
                assert seen.headers == {k.lower(): v for k, v in want.headers.items()}
            assert {s.conn for s in server.seen} == {1}  # one keep-alive connection throughout

    run(main)


def test_api_client_decodes_gzip_and_reads_retry_after() -> None:
    """A gzipped JSON answer is decoded; a 429's Retry-After reaches the error."""

    async def main() -> None:
        async with serve() as server:
            zipped = ApiClient(base_url=server.url("/zipped"), token="t", retry=NO_RETRY)
            async with zipped:
                assert (await zipped.status("r1")).status == "in_queue"
            busy = ApiClient(base_url=server.url("/busy"), token="t", retry=NO_RETRY)
            async with busy:
                with pytest.raises(ApiTransientError, match="slow down") as caught:
                    await busy.status("r1")
            assert (caught.value.status_code, caught.value.retry_after) == (429, 7.0)

    run(main)
