"""The simulator's ASGI app: routing, auth, fault injection and the encoding of answers."""

from __future__ import annotations

import asyncio
import json
import logging
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.responses import FileResponse
from starlette.types import Receive, Scope, Send

from batchgen.simulator._limits import retry_after_header
from batchgen.simulator._types import Reply, error_reply

if TYPE_CHECKING:
    from batchgen.simulator._state import Simulator

SAMPLE_VIDEO = Path(__file__).resolve().parent.parent / "assets" / "sample.mp4"
_JSON = (b"content-type", b"application/json")
# Returning a non-None value from an ASGI app makes uvicorn close the connection without
# writing a byte; leaving a response unfinished makes it close the connection mid-body.
_DROP = "batchgen-simulator: drop the connection"
# Set in the request's task while it drops a connection on purpose, so that the error uvicorn
# logs about the "misbehaving" app can be told apart from a real one and left out.
_DROPPING: ContextVar[bool] = ContextVar("batchgen_simulator_dropping", default=False)
_API_CALLS = {"status": "GET", "result": "GET", "cancel": "POST"}


class _DropLogFilter(logging.Filter):
    """Hides uvicorn's complaints about connections the simulator drops on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Keep the record unless it was logged for a deliberate drop."""
        return not _DROPPING.get()


def install_drop_log_filter() -> None:
    """Add the filter to uvicorn's error logger once."""
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _DropLogFilter) for f in logger.filters):
        logger.addFilter(_DropLogFilter())


def _encode(body: Any) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


async def _send(send: Send, reply: Reply, body: bytes | None = None) -> None:
    """Send a complete JSON answer (body defaults to the reply's encoded body)."""
    data = _encode(reply.body) if body is None else body
    headers = [_JSON, (b"content-length", str(len(data)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in reply.headers]
    await send({"type": "http.response.start", "status": reply.status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


async def _read_body(receive: Receive) -> bytes | None:
    """The whole request body, or None if the client went away."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _headers(scope: Scope) -> tuple[str | None, str | None]:
    """The Authorization and Host header values of a request."""
    auth = host = None
    for name, value in scope["headers"]:
        if name == b"authorization":
            auth = value.decode("latin-1")
        elif name == b"host":
            host = value.decode("latin-1")
    return auth, host


class SimulatorApp:
    """ASGI app of one Simulator."""

    def __init__(self, simulator: Simulator) -> None:
        self._sim = simulator
        install_drop_log_filter()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> Any:
        """Route one request (the return value is non-None only to drop a connection)."""
        kind = scope["type"]
        if kind == "lifespan":
            return await self._lifespan(receive, send)
        if kind != "http":
            return None
        path: str = scope["path"]
        method: str = scope["method"]
        if path.startswith("/v1/requests/"):
            request_id, _, action = path[len("/v1/requests/") :].partition("/")
            if action in _API_CALLS:
                if method != _API_CALLS[action]:
                    return await _send(send, _not_allowed(method))
                return await self._api(action, scope, receive, send, request_id)
        elif path.startswith("/v1/models/") and len(path) > len("/v1/models/"):
            model_id = path[len("/v1/models/") :]
            if method == "POST":
                return await self._api("submit", scope, receive, send, model_id)
            if method == "GET":
                return await self._model_info(scope, send, model_id)
            return await _send(send, _not_allowed(method))
        elif path.startswith("/media/") and path.endswith(".mp4"):
            return await self._media(scope, receive, send, path[len("/media/") : -len(".mp4")])
        elif path == "/_sim/limit" and method == "POST":
            return await self._set_limit(receive, send)
        elif path.startswith("/_sim/") and method == "GET":
            return await self._control(send, path[len("/_sim/") :])
        return await _send(send, error_reply(404, 404, f"not found: {path}"))

    async def _api(self, call: str, scope: Scope, receive: Receive, send: Send, target: str) -> Any:
        """One Model API call, with its injected fault if one is drawn."""
        sim = self._sim
        sim.count(call)
        wait = sim.take_token()
        if wait is not None:  # over the request limit: refused before any work or fault
            await _read_body(receive)
            sim.answered(429)
            retry = retry_after_header(wait, sim.config.retry_after_format)
            return await _send(send, error_reply(429, 429, "rate limit exceeded", headers=retry))
        fault, slow = sim.draw_fault()
        faults = sim.config.faults
        if fault == "drop_before":
            # the whole request read first: closing on unread bytes would make the kernel
            # reset the connection, and the client see a reset rather than a closed socket
            await _read_body(receive)
            _DROPPING.set(True)
            return _DROP
        if fault == "error_500":
            reply = error_reply(500, 500001, "internal error, please retry later")
        elif fault == "rate_limit_429":
            retry = (("Retry-After", f"{faults.retry_after:g}"),)
            reply = error_reply(429, 429, "rate limit exceeded", headers=retry)
        elif fault == "error_code_200":
            reply = error_reply(200, 500001, "internal error")
        else:
            answer = await self._call(call, scope, receive, target)
            if answer is None:  # the client disconnected while sending its body
                return None
            reply = answer
        sim.answered(reply.status)
        if slow:  # after the work is done: a client that gives up early leaves its job behind
            await asyncio.sleep(faults.slow_seconds)
        body = _encode(reply.body)
        if fault == "truncated_json":
            return await _send(send, reply, body[: len(body) // 2])
        if fault == "drop_after":
            # Promise the whole body, send half of it, and return: uvicorn closes the socket.
            headers = [_JSON, (b"content-length", str(len(body)).encode())]
            await send({"type": "http.response.start", "status": reply.status, "headers": headers})
            part = body[: len(body) // 2]
            await send({"type": "http.response.body", "body": part, "more_body": True})
            _DROPPING.set(True)
            return None
        return await _send(send, reply, body)

    async def _call(self, call: str, scope: Scope, receive: Receive, target: str) -> Reply | None:
        """Do one authenticated API call and return its answer."""
        auth, host = _headers(scope)
        denied = self._check_token(auth)
        if call == "submit":
            raw = await _read_body(receive)  # read even when denied, to keep the connection sane
            if raw is None:
                return None
            if denied is not None:
                return denied
            try:
                payload = json.loads(raw)
            except (ValueError, UnicodeDecodeError):
                return error_reply(422, 422001, "request body is not valid JSON", detail=[])
            if not isinstance(payload, dict):
                message = "request body must be a JSON object"
                return error_reply(422, 422001, message, detail=[])
            return self._sim.submit(target, payload, self._base(scope, host))
        if denied is not None:
            return denied
        if call == "status":
            return self._sim.status(target)
        if call == "result":
            query = scope.get("query_string", b"").lower()
            include_cost = b"include_cost=true" in query or b"include_cost=1" in query
            port = self._port(scope, host)
            media_base = f"http://{self._sim.config.media_host}:{port}"
            return self._sim.result(target, media_base=media_base, include_cost=include_cost)
        return self._sim.cancel(target)

    def _check_token(self, auth: str | None) -> Reply | None:
        """A 401 answer unless the Authorization header carries an accepted Bearer token."""
        scheme, _, token = (auth or "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return error_reply(401, 401, "missing or malformed Authorization: Bearer header")
        expected = self._sim.config.token
        if expected is not None and token != expected:
            return error_reply(401, 401, "invalid API token")
        return None

    @staticmethod
    def _base(scope: Scope, host: str | None) -> str:
        """The API's own base URL as this client reached it."""
        if host:
            return f"http://{host}"
        server_host, server_port = scope.get("server") or ("127.0.0.1", 80)
        return f"http://{server_host}:{server_port}"

    @staticmethod
    def _port(scope: Scope, host: str | None) -> int:
        """The port this server answers on."""
        server = scope.get("server")
        if server and server[1]:
            return int(server[1])
        _, _, port = (host or "").rpartition(":")
        return int(port) if port.isdigit() else 80

    async def _model_info(self, scope: Scope, send: Send, model_id: str) -> None:
        """GET /v1/models/{model_id}: price information (UNCONFIRMED on the real API)."""
        auth, _ = _headers(scope)
        denied = self._check_token(auth)
        if denied is not None:
            return await _send(send, denied)
        return await _send(send, self._sim.model_info(model_id))

    async def _media(self, scope: Scope, receive: Receive, send: Send, request_id: str) -> None:
        """GET /media/{request_id}.mp4: the sample video for every completed job."""
        auth, _ = _headers(scope)
        self._sim.count("media", auth=auth)
        if scope["method"] not in ("GET", "HEAD"):
            return await _send(send, _not_allowed(scope["method"]))
        if not self._sim.media_exists(request_id):
            return await _send(send, error_reply(404, 404, "no such file"))
        response = FileResponse(SAMPLE_VIDEO, media_type="video/mp4")
        await response(scope, receive, send)
        return None

    async def _control(self, send: Send, what: str) -> None:
        """Read-only /_sim endpoints for tests that run the simulator in another process."""
        sim = self._sim
        if what == "submissions":
            body: Any = [
                {
                    "request_id": s.request_id,
                    "model_id": s.model_id,
                    "payload": s.payload,
                    "created_at": s.created_at,
                }
                for s in sim.submissions()
            ]
        elif what == "stats":
            body = {**sim.stats(), "media_with_auth": len(sim.media_auth_headers)}
        elif what.startswith("jobs/"):
            body = sim.job_state(what[len("jobs/") :])
            if body is None:
                return await _send(send, error_reply(404, 404001, "request_id not found"))
        else:
            return await _send(send, error_reply(404, 404, f"not found: /_sim/{what}"))
        data = _encode(body)
        headers = [_JSON, (b"content-length", str(len(data)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": data})
        return None

    async def _set_limit(self, receive: Receive, send: Send) -> None:
        """POST /_sim/limit {"rate_limit": R, "rate_burst": B}: change the request limit."""
        raw = await _read_body(receive)
        try:
            body = json.loads(raw or b"")
            rate, burst = body.get("rate_limit"), body.get("rate_burst")
            for value in (rate, burst):
                if value is not None and (isinstance(value, bool) or float(value) <= 0):
                    raise ValueError(value)
        except (ValueError, TypeError, AttributeError):
            message = 'expected {"rate_limit": R or null, "rate_burst": B or null}, R and B > 0'
            return await _send(send, error_reply(422, 422001, message))
        self._sim.set_limit(
            None if rate is None else float(rate), None if burst is None else float(burst)
        )
        reply = Reply(200, {"rate_limit": self._sim.config.rate_limit, "rate_burst": burst})
        return await _send(send, reply)

    @staticmethod
    async def _lifespan(receive: Receive, send: Send) -> None:
        """Accept lifespan events (uvicorn runs us with lifespan off, others may not)."""
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return


def _not_allowed(method: str) -> Reply:
    return error_reply(405, 405, f"method {method} not allowed")
