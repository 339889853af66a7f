"""The benchmark's simulator: `python -m batchgen simulate` in a process of its own."""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

SIM_START_TIMEOUT = 30.0  # seconds for the simulator process to print its address and answer
SIM_STOP_TIMEOUT = 10.0
FETCH_BATCH = 64  # simulator records fetched concurrently


class SimulatorProcess:
    """`python -m batchgen simulate` on a free loopback port, as a context manager."""

    def __init__(
        self,
        *,
        capacity: int,
        min_duration: float,
        max_duration: float,
        seed: int = 1,
        log: Path | None = None,
        extra: tuple[str, ...] = (),
    ) -> None:
        self.args = [
            "--host",
            "127.0.0.1",
            "--port",
            "0",  # the kernel picks a free port; the simulator prints it
            "--capacity",
            str(capacity),
            "--min-duration",
            repr(float(min_duration)),
            "--max-duration",
            repr(float(max_duration)),
            "--seed",
            str(seed),
            *extra,  # further simulate flags: durations, a request limit
        ]
        self.log = log
        self.base_url = ""
        self._proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> SimulatorProcess:
        """Start the process and return once the simulator answers."""
        stderr = self.log.open("ab") if self.log is not None else subprocess.DEVNULL
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "batchgen", "simulate", *self.args],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=stderr,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        finally:
            if self.log is not None and not isinstance(stderr, int):
                stderr.close()
        try:
            self.base_url = self._read_address()
            self._wait_until_answering()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _read_address(self) -> str:
        """The base URL from the simulator's first line, within SIM_START_TIMEOUT."""
        assert self._proc is not None and self._proc.stdout is not None
        deadline = time.monotonic() + SIM_START_TIMEOUT
        buffer = b""
        with selectors.DefaultSelector() as selector:
            selector.register(self._proc.stdout, selectors.EVENT_READ)
            while b"\n" not in buffer:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RuntimeError("the simulator did not print its address in time")
                if not selector.select(min(left, 0.5)):
                    if self._proc.poll() is not None:
                        raise RuntimeError(f"the simulator exited ({self._proc.returncode})")
                    continue
                chunk = os.read(self._proc.stdout.fileno(), 4096)
                if not chunk:
                    raise RuntimeError("the simulator closed its output before starting")
                buffer += chunk
        line = buffer.split(b"\n", 1)[0].decode()
        url = line.rsplit(" ", 1)[-1].strip()
        if not url.startswith("http://127.0.0.1:"):
            raise RuntimeError(f"unexpected simulator output: {line!r}")
        return url

    def _wait_until_answering(self) -> None:
        deadline = time.monotonic() + SIM_START_TIMEOUT
        with httpx.Client(base_url=self.base_url, timeout=2.0) as client:
            while True:
                try:
                    if client.get("/_sim/stats").status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the simulator at {self.base_url} does not answer")
                time.sleep(0.05)

    def __exit__(self, *exc_info: object) -> None:
        """Stop the process: SIGTERM, then SIGKILL if it lingers."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(SIM_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(SIM_STOP_TIMEOUT)
        if proc.stdout is not None:
            proc.stdout.close()

    def stats(self) -> dict[str, int]:
        """Calls per endpoint so far, as the simulator counted them."""
        with httpx.Client(base_url=self.base_url, timeout=30.0) as client:
            return dict(client.get("/_sim/stats").json())

    def jobs(self) -> list[dict[str, Any]]:
        """The simulator's record of every job, in submission order."""
        return _fetch_jobs(self.base_url)


def _fetch_jobs(base_url: str) -> list[dict[str, Any]]:
    """GET /_sim/submissions, then /_sim/jobs/{id} for each (a few at a time)."""
    import anyio

    async def fetch() -> list[dict[str, Any]]:
        limits = httpx.Limits(max_connections=FETCH_BATCH)
        async with httpx.AsyncClient(base_url=base_url, timeout=30.0, limits=limits) as client:
            ids = [s["request_id"] for s in (await client.get("/_sim/submissions")).json()]
            states: list[dict[str, Any]] = [{} for _ in ids]

            async def one(i: int) -> None:
                states[i] = (await client.get(f"/_sim/jobs/{ids[i]}")).json()

            for start in range(0, len(ids), FETCH_BATCH):
                async with anyio.create_task_group() as group:
                    for i in range(start, min(start + FETCH_BATCH, len(ids))):
                        group.start_soon(one, i)
            return states

    return anyio.run(fetch)
