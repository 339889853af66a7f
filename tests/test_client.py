"""ApiClient against real loopback servers: what is sent and when, timeouts, TLS, proxies."""

from __future__ import annotations

import asyncio
import gzip
import json
import socket
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from email.utils import formatdate
from pathlib import Path

import httpx
import pytest
import trustme

from batchgen.client import NO_RETRY, ApiClient, RetryPolicy, set_testing
from batchgen.errors import ApiTransientError, SubmitUncertainError
from tests.helpers import run_async

JSON = "Content-Type: application/json"
QUICK_RETRY = RetryPolicy(attempts=3, base=0.01, cap=0.02)


def answer(status: int, body: bytes = b"", *headers: str) -> bytes:
    """An HTTP/1.1 answer's bytes with a Content-Length."""
    head = [f"HTTP/1.1 {status} Reason", *headers, f"Content-Length: {len(body)}"]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


@dataclass
class Seen:
    """One request as the server read it."""

    method: str
    target: str
    headers: dict[str, str]
    body: bytes


Reply = Callable[[Seen, asyncio.StreamWriter], Awaitable[bool]]


@dataclass
class Server:
    """A scripted HTTP/1.1 server on 127.0.0.1: `reply` writes each answer (False: hang up)."""

    reply: Reply
    port: int = 0
    seen: list[Seen] = field(default_factory=list)

    @property
    def url(self) -> str:
        """The server's base URL."""
        return f"http://127.0.0.1:{self.port}"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Read requests and answer them until the script or the client ends the connection."""
        with suppress(ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
                line, *lines = head.split("\r\n")[:-2]
                method, target, _ = line.split(" ")
                headers = {k.lower(): v.strip() for k, v in (h.split(":", 1) for h in lines)}
                body = await reader.readexactly(int(headers.get("content-length", 0)))
                self.seen.append(Seen(method, target, headers, body))
                if not await self.reply(self.seen[-1], writer):
                    break
                await writer.drain()
        writer.close()


@asynccontextmanager
async def serve(reply: Reply, tls: ssl.SSLContext | None = None) -> AsyncIterator[Server]:
    """A running Server for the duration of the block."""
    server = Server(reply)
    listener = await asyncio.start_server(server.handle, "127.0.0.1", 0, ssl=tls)
    server.port = listener.sockets[0].getsockname()[1]
    try:
        yield server
    finally:
        listener.close()
        with suppress(TimeoutError):
            await asyncio.wait_for(listener.wait_closed(), 5)


async def queued(req: Seen, writer: asyncio.StreamWriter) -> bool:
    """A submit's (and a status call's) answer."""
    writer.write(answer(200, b'{"request_id": "r1", "status": "in_queue"}', JSON))
    return True


async def drop(req: Seen, writer: asyncio.StreamWriter) -> bool:
    """Read the request, then close without a word."""
    return False


def free_port() -> int:
    """A loopback port with nothing listening on it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_submit_dropped_after_sending_is_uncertain_and_sent_once() -> None:
    async def main() -> None:
        async with serve(drop) as server:
            client = ApiClient(base_url=server.url + "/base", token="t", retry=QUICK_RETRY)
            async with client:
                with pytest.raises(SubmitUncertainError):
                    await client.submit("some/model", {"prompt": "a fox"})
            assert [(s.method, s.target) for s in server.seen] == [
                ("POST", "/base/v1/models/some/model")
            ]
            assert server.seen[0].headers["authorization"] == "Bearer t"
            assert json.loads(server.seen[0].body) == {"prompt": "a fox"}

    run_async(main)


def test_a_refused_connection_is_retried_by_the_policy_and_set_testing_turns_that_off() -> None:
    url = f"http://127.0.0.1:{free_port()}"

    async def submit_calls() -> int:
        async with ApiClient(base_url=url, token="t", retry=QUICK_RETRY) as client:
            with pytest.raises(ApiTransientError) as caught:  # never connected: safe to repeat
                await client.submit("some/model", {"prompt": "a fox"})
            assert not isinstance(caught.value, SubmitUncertainError)
            return client.calls["submit"]

    async def main() -> None:
        assert await submit_calls() == 3
        set_testing(True)
        try:
            assert await submit_calls() == 1
        finally:
            set_testing(False)

    run_async(main)


def test_a_gzipped_answer_is_decoded_and_retry_after_reaches_the_error() -> None:
    async def zipped(req: Seen, writer: asyncio.StreamWriter) -> bool:
        body = gzip.compress(b'{"request_id": "r1", "status": "in_progress"}')
        writer.write(answer(200, body, JSON, "Content-Encoding: gzip"))
        return True

    async def busy(req: Seen, writer: asyncio.StreamWriter) -> bool:
        writer.write(answer(429, b'{"error_code": 429, "message": "slow down"}', "Retry-After: 7"))
        return True

    async def main() -> None:
        async with serve(zipped) as server, ApiClient(base_url=server.url, token="t") as client:
            assert (await client.status("r1")).status == "in_progress"
        async with (
            serve(busy) as server,
            ApiClient(base_url=server.url, token="t", retry=NO_RETRY) as client,
        ):
            with pytest.raises(ApiTransientError, match="slow down") as caught:
                await client.status("r1")
        assert (caught.value.status_code, caught.value.retry_after) == (429, 7.0)

    run_async(main)


# HTTP sends Retry-After as whole seconds or an HTTP-date (RFC 9110); some APIs send a
# fraction, some nothing at all, and a garbled one must not break the call
@pytest.mark.parametrize(
    ("header", "low", "high"),
    [
        ("Retry-After: 3", 3.0, 3.0),
        ("Retry-After: 0.25", 0.25, 0.25),
        ("Retry-After: -2", 0.0, 0.0),
        ("Retry-After: DATE+5", 3.0, 5.0),
        ("Retry-After: Sun, 06 Nov 1994 08:49:37 GMT", 0.0, 0.0),  # long past: at once
        ("Retry-After: soon", None, None),
        ("X-Other: 1", None, None),
    ],
)
def test_retry_after_is_read_in_every_form_http_allows(
    header: str, low: float | None, high: float | None
) -> None:
    if "DATE+5" in header:
        header = "Retry-After: " + formatdate(time.time() + 5, usegmt=True)

    async def busy(req: Seen, writer: asyncio.StreamWriter) -> bool:
        writer.write(answer(429, b'{"error_code": 429, "message": "slow down"}', header))
        return True

    told: list[float | None] = []

    async def main() -> None:
        async with (
            serve(busy) as server,
            ApiClient(base_url=server.url, token="t", retry=NO_RETRY) as client,
        ):
            with pytest.raises(ApiTransientError, match="slow down") as caught:
                await client.status("r1")
        assert caught.value.status_code == 429
        told.append(caught.value.retry_after)

    run_async(main)
    (wait,) = told
    if low is None or high is None:
        assert wait is None
    else:
        assert wait is not None and low <= wait <= high


def test_the_read_timeout_is_the_gap_between_reads_as_httpx_says() -> None:
    """A body trickled over twice the read timeout arrives; a silent server times out."""
    body = b'{"request_id": "r1", "status": "in_progress", "pad": "' + b"x" * 7 + b'"}'

    async def trickle(req: Seen, writer: asyncio.StreamWriter) -> bool:
        writer.write(answer(200, body, JSON)[: -len(body)])
        for i in range(0, len(body), 8):  # a piece every 0.25 s, 2 s in all
            await writer.drain()
            await asyncio.sleep(0.25)
            writer.write(body[i : i + 8])
        return True

    async def silent(req: Seen, writer: asyncio.StreamWriter) -> bool:
        await asyncio.sleep(30)
        return False

    async def main() -> None:
        timeout = httpx.Timeout(5.0, read=1.0)
        async with (
            serve(trickle) as server,
            ApiClient(base_url=server.url, token="t", timeout=timeout) as client,
        ):
            assert (await client.status("r1")).status == "in_progress"
        async with serve(silent) as server:
            client = ApiClient(base_url=server.url, token="t", timeout=timeout, retry=NO_RETRY)
            async with client:
                with pytest.raises(SubmitUncertainError, match="ReadTimeout"):
                    await client.submit("m", {})

    run_async(main)


def test_a_redirect_is_not_followed_so_the_token_stays_with_the_api_host() -> None:
    async def elsewhere(req: Seen, writer: asyncio.StreamWriter) -> bool:
        writer.write(answer(200, b'{"request_id": "r1", "status": "completed"}', JSON))
        return True

    async def main() -> None:
        async with serve(elsewhere) as other:

            async def redirect(req: Seen, writer: asyncio.StreamWriter) -> bool:
                writer.write(answer(302, b"", f"Location: {other.url}{req.target}"))
                return True

            async with serve(redirect) as api:
                client = ApiClient(base_url=api.url, token="secret", retry=NO_RETRY)
                async with client:
                    with pytest.raises(ApiTransientError, match="302"):
                        await client.status("r1")
            assert len(api.seen) == 1 and other.seen == []

    run_async(main)


def test_a_proxy_from_the_environment_carries_the_api_calls(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy", "http_proxy"):
        monkeypatch.delenv(name, raising=False)

    async def main() -> None:
        async with serve(queued) as proxy:
            monkeypatch.setenv("HTTP_PROXY", proxy.url)
            base = "http://api.example.invalid"  # resolvable only by the proxy
            async with ApiClient(base_url=base, token="t", retry=NO_RETRY) as client:
                assert (await client.submit("m/x", {"prompt": "p"})).request_id == "r1"
            assert [(s.method, s.target) for s in proxy.seen] == [
                ("POST", "http://api.example.invalid/v1/models/m/x")
            ]

    run_async(main)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    """A certificate authority made for these tests only."""
    return trustme.CA()


def _server_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    return context


def test_https_trusts_ssl_cert_file_and_keeps_one_connection(
    ca: trustme.CA, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))  # as httpx's own clients honour it
    connections = []

    async def main() -> None:
        async def counted(req: Seen, writer: asyncio.StreamWriter) -> bool:
            connections.append(id(writer))
            return await queued(req, writer)

        async with serve(counted, _server_context(ca)) as server:
            base = f"https://127.0.0.1:{server.port}"
            async with ApiClient(base_url=base, token="secret", retry=NO_RETRY) as client:
                for _ in range(3):
                    assert (await client.submit("bytedance/x", {"prompt": "p"})).request_id
            assert [s.target for s in server.seen] == ["/v1/models/bytedance/x"] * 3
            assert len(set(connections)) == 1

    run_async(main)


def test_an_untrusted_certificate_is_a_connect_failure_and_nothing_is_sent(
    ca: trustme.CA, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)

    async def main() -> None:
        async with serve(queued, _server_context(ca)) as server:
            base = f"https://127.0.0.1:{server.port}"
            async with ApiClient(base_url=base, token="secret", retry=NO_RETRY) as client:
                with pytest.raises(ApiTransientError, match="cannot reach") as caught:
                    await client.submit("bytedance/x", {"prompt": "p"})
            assert not isinstance(caught.value, SubmitUncertainError)  # safe to submit again
            assert server.seen == []

    run_async(main)
