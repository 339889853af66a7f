"""Running a Simulator under uvicorn: in a background thread, or in the foreground."""

from __future__ import annotations

import signal
import socket
import threading
from types import FrameType, TracebackType

import uvicorn

from batchgen.simulator._app import install_drop_log_filter
from batchgen.simulator._state import Simulator
from batchgen.simulator._types import SimulatorConfig

START_TIMEOUT = 10.0  # seconds for uvicorn to bind and accept connections
STOP_TIMEOUT = 5.0  # seconds for a graceful stop before uvicorn is told to force it


class _Server(uvicorn.Server):
    """A uvicorn server that signals when its startup is over, successful or not."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = threading.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        """Start as usual, then wake whoever waits for the server."""
        try:
            await super().startup(sockets=sockets)
        finally:
            self.ready.set()

    def run_in_thread(self) -> None:
        """Thread target: run until told to exit; never leave a waiter hanging."""
        # Let the main thread take SIGINT/SIGTERM: a signal delivered to this thread would
        # only be seen there once its blocking wait times out.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        try:
            self.run()
        except SystemExit:  # uvicorn exits this way when it cannot bind; `started` tells
            pass
        finally:
            self.ready.set()


class SimulatorServer:
    """Runs a Simulator under uvicorn on 127.0.0.1 in a background thread; a context manager."""

    def __init__(
        self, simulator: Simulator | None = None, *, port: int = 0, host: str = "127.0.0.1"
    ) -> None:
        self.simulator = simulator if simulator is not None else Simulator()
        self.base_url = ""
        self._host = host
        self._port = port
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> SimulatorServer:
        """Start serving; returns once the server accepts connections."""
        config = uvicorn.Config(
            self.simulator.app,
            host=self._host,
            port=self._port,
            log_config=None,  # leave the host program's logging alone
            log_level="warning",
            access_log=False,
            lifespan="off",
            proxy_headers=False,
            server_header=False,
            backlog=4096,  # the benchmark opens many connections at once
            timeout_graceful_shutdown=2,
        )
        server = _Server(config)
        install_drop_log_filter()
        thread = threading.Thread(target=server.run_in_thread, name="batchgen-simulator")
        thread.daemon = True
        thread.start()
        server.ready.wait(START_TIMEOUT)
        if not server.started:
            server.should_exit = True
            thread.join(STOP_TIMEOUT)
            raise RuntimeError(f"the simulator did not start on {self._host}:{self._port}")
        self._server, self._thread = server, thread
        port = server.servers[0].sockets[0].getsockname()[1]
        host = "127.0.0.1" if self._host in ("0.0.0.0", "") else self._host
        self.base_url = f"http://{host}:{port}"
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop serving, within a bounded time."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        server.should_exit = True
        thread.join(STOP_TIMEOUT)
        if thread.is_alive():
            server.force_exit = True
            thread.join(STOP_TIMEOUT)
        self._server = self._thread = None

    @property
    def running(self) -> bool:
        """Whether the server thread is alive."""
        return self._thread is not None and self._thread.is_alive()


def banner(base_url: str, *, token: str | None = None) -> list[str]:
    """What `batchgen simulate` prints as it starts: how to aim a run at it, token, images."""
    accepted = (
        "only the token given with --token is accepted"
        if token
        else "any non-empty token is accepted"
    )
    return [
        # the address ends the first line: `batchgen bench` reads it there
        f"batchgen simulator (Ctrl-C stops it): a stand-in for RunComfy's Model API on {base_url}",
        "aim batchgen at it from another shell with",
        f"  export RUNCOMFY_BASE_URL={base_url}",
        f"  export RUNCOMFY_API_TOKEN={'<your --token>' if token else 'simulated'}",
        f"or per command: batchgen run SHEET --base-url {base_url}",
        f"token: {accepted} (RUNCOMFY_API_TOKEN, as Authorization: Bearer)",
        "image URLs: any http:// or https:// address; the simulator never fetches images "
        "(batchgen check --images does, from wherever the URL points)",
    ]


def serve(
    *, host: str = "127.0.0.1", port: int = 8787, config: SimulatorConfig | None = None
) -> None:
    """Run the simulator in the foreground until SIGINT/SIGTERM (for `batchgen simulate`)."""
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    # Our own handlers (uvicorn's run in its thread are skipped), so a signal ends this call
    # normally instead of being re-raised after shutdown.
    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with SimulatorServer(Simulator(config), port=port, host=host) as server:
            print(
                "\n".join(banner(server.base_url, token=config.token if config else None)),
                flush=True,
            )
            while server.running and not stop.wait(0.5):
                pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
