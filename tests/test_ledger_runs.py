"""Real runs against a ledger someone else uses: another process holding its write lock, another
run sharing it."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from batchgen.simulator import Faults, Simulator, SimulatorServer
from tests.helpers import (
    ad_rows,
    fast_config,
    ledger_rows,
    read_csv,
    run_cli,
    start_cli,
    wait_until,
    write_csv,
)

# Takes a SQLite ledger's write lock (BEGIN IMMEDIATE), says so, and holds it until told to go.
HOLD_WRITE_LOCK = r"""
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], timeout=60, isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.readline()
conn.execute("COMMIT")
print("released", flush=True)
"""


@contextmanager
def write_lock_held(db: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process holding `db`'s write lock until the block ends."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_WRITE_LOCK, str(db)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "locked"
        yield holder
    finally:
        if holder.poll() is None:
            holder.communicate("go\n", timeout=30)


class Lines:
    """A background reader of a process's stderr: the lines so far, read while it runs."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._thread.start()

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            self.lines.append(line)

    def since(self, start: int) -> list[str]:
        """The lines read after the first `start` ones."""
        return self.lines[start:]

    def text(self) -> str:
        """Everything read so far."""
        self._thread.join(timeout=0)
        return "".join(self.lines)


def _polls(server: SimulatorServer) -> int:
    stats = server.simulator.stats()
    return stats.get("status", 0) + stats.get("result", 0)


def test_a_held_ledger_write_lock_freezes_neither_polls_nor_progress_nor_signals(
    tmp_path: Path,
) -> None:
    concurrency = 4
    sheet = write_csv(tmp_path / "ads.csv", ad_rows(8))
    db = tmp_path / "ads.csv.batchgen.db"
    # jobs that outlast the lock's first seconds: while new submits wait for the lock, the
    # jobs in flight are still checked, and finish
    config = fast_config(capacity=concurrency, min_duration=2.0, max_duration=4.0)
    with SimulatorServer(Simulator(config)) as server:
        run = start_cli(
            ["run", sheet, "--concurrency", str(concurrency), "--verbose"],
            server,
        )
        out = Lines(run)
        # the first jobs' request_ids committed: from then on they are followed
        wait_until(lambda: sum(bool(r["request_id"]) for r in ledger_rows(db)) >= concurrency)
        with write_lock_held(db):
            # every write of the run now waits for the lock (the busy timeout is 15 s)
            polls, lines = _polls(server), len(out.lines)
            # a frozen loop could deliver at most the checks already under way, one a job
            wait_until(
                lambda: (
                    _polls(server) > polls + 2 * concurrency
                    and any(" → " in line for line in out.since(lines))
                ),
                timeout=12,
            )
            run.send_signal(signal.SIGTERM)
            wait_until(lambda: "SIGTERM received" in out.text(), timeout=10)
            assert run.poll() is None  # it waits for its writes to reach the ledger
        assert run.wait(timeout=30) == 143, out.text()
    requests = [s.request_id for s in server.simulator.submissions()]
    assert len(requests) == len(set(requests))


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_resubmit_unknown_leaves_the_claims_of_a_live_run_sharing_the_ledger(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    db = str(tmp_path / "shared.db") if kind == "sqlite" else request.getfixturevalue("pg_url")
    rows = ad_rows(6)
    sheet_a, sheet_b = (write_csv(tmp_path / f"{name}.csv", rows) for name in ("a", "b"))
    # every answer comes late: run A's submits reach the API, and their answers are awaited
    config = fast_config(capacity=6, faults=Faults(slow=1.0, slow_seconds=12.0))
    with SimulatorServer(Simulator(config)) as server:
        run_a = start_cli(["run", sheet_a, "--concurrency", "6", "--db", db], server)
        wait_until(lambda: len(server.simulator.submissions()) == 6)
        # A's six claims are `submitting`, and A is alive: B must neither call them
        # unknown nor submit them again
        run_b = run_cli(["run", sheet_b, "--db", db, "--resubmit-unknown"], server)
        assert run_b.returncode in (0, 1), run_b.stderr
        assert "6 job(s) are being submitted by another run" in run_b.stderr
        assert len(server.simulator.submissions()) == 6
        server.simulator.config.faults.slow = 0.0
        _, err = run_a.communicate(timeout=120)
        assert run_a.returncode == 0, err
        again = run_cli(["run", sheet_b, "--db", db, "--resubmit-unknown"], server)
        assert again.returncode == 0, again.stderr
        assert {r["status"] for r in read_csv(sheet_b)} == {"completed"}
    assert len(server.simulator.submissions()) == 6
