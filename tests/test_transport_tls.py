"""LeanTransport over TLS, as against the real API: certificates, SNI, keep-alive."""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from pathlib import Path

import httpx
import pytest
import trustme

from batchgen._transport import LeanTransport
from batchgen.client import ApiClient, RetryPolicy
from tests.helpers import run_async

TIMEOUTS = {"connect": 5.0, "read": 5.0, "write": 5.0, "pool": 5.0}


class TlsServer:
    """A JSON echo server over TLS on 127.0.0.1 that counts connections and requests."""

    def __init__(self) -> None:
        self.port = 0
        self.accepted = 0
        self.requests: list[tuple[str, str, bytes]] = []  # method, path, body

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Answer requests on one connection until the client hangs up."""
        self.accepted += 1
        with suppress(ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
                method, path, _ = head.split("\r\n", 1)[0].split(" ")
                length = next(
                    (
                        int(v)
                        for k, _, v in (ln.partition(":") for ln in head.split("\r\n"))
                        if k.lower() == "content-length"
                    ),
                    0,
                )
                body = await reader.readexactly(length)
                self.requests.append((method, path, body))
                answer = json.dumps({"request_id": "tls-1", "status": "in_queue"}).encode()
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (len(answer), answer)
                )
                await writer.drain()
        writer.close()


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    """A certificate authority made for these tests only."""
    return trustme.CA()


@asynccontextmanager
async def serve_tls(ca: trustme.CA) -> AsyncIterator[TlsServer]:
    """A TlsServer with a certificate for 127.0.0.1 issued by `ca`."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    server = TlsServer()
    listener = await asyncio.start_server(server.handle, "127.0.0.1", 0, ssl=context)
    server.port = listener.sockets[0].getsockname()[1]
    try:
        yield server
    finally:
        listener.close()
        with suppress(asyncio.TimeoutError):
            await asyncio.wait_for(listener.wait_closed(), 5)


pytestmark = pytest.mark.usefixtures("each_event_loop")  # asyncio and uvloop


def run(main: Callable[[], Awaitable[None]]) -> None:
    """Run an async test body on a fresh loop of this test's kind, bounded."""
    run_async(main)


def test_https_requests_verify_the_certificate_and_share_one_connection(
    ca: trustme.CA,
) -> None:
    async def main() -> None:
        client_context = ssl.create_default_context()
        ca.configure_trust(client_context)
        async with serve_tls(ca) as server, LeanTransport(ssl_context=client_context) as t:
            for n in range(3):
                url = f"https://127.0.0.1:{server.port}/v1/models/m"
                request = httpx.Request(
                    "POST", url, json={"n": n}, extensions={"timeout": TIMEOUTS}
                )
                response = await t.handle_async_request(request)
                await response.aread()
                assert response.status_code == 200 and response.json()["request_id"] == "tls-1"
            assert server.accepted == 1
            assert [json.loads(body)["n"] for _, _, body in server.requests] == [0, 1, 2]

    run(main)


def test_an_untrusted_certificate_is_a_connect_error_and_nothing_is_sent(
    ca: trustme.CA,
) -> None:
    async def main() -> None:
        async with (
            serve_tls(ca) as server,
            LeanTransport(
                ssl_context=ssl.create_default_context()  # the system's CAs: not ours
            ) as t,
        ):
            request = httpx.Request(
                "POST",
                f"https://127.0.0.1:{server.port}/v1/models/m",
                json={},
                extensions={"timeout": TIMEOUTS},
            )
            with pytest.raises(httpx.ConnectError):
                await t.handle_async_request(request)
            assert server.requests == []

    run(main)


def test_the_api_client_speaks_https_and_trusts_ssl_cert_file(
    ca: trustme.CA, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))  # as httpx's own clients honour it

    async def main() -> None:
        async with serve_tls(ca) as server:
            client = ApiClient(
                base_url=f"https://127.0.0.1:{server.port}",
                token="secret",
                retry=RetryPolicy(attempts=1),
            )
            async with client:
                submitted = await client.submit("bytedance/x", {"prompt": "p"})
            assert submitted.request_id == "tls-1"
            assert [(m, p) for m, p, _ in server.requests] == [("POST", "/v1/models/bytedance/x")]

    run(main)
