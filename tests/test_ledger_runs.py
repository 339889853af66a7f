"""Real runs against a ledger someone else uses: another process holding its write lock, another
run sharing it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from batchgen.errors import SheetLockedError
from batchgen.sheetlock import SheetLock, lock_dir
from batchgen.simulator import Faults, Simulator, SimulatorServer
from tests.helpers import (
    ad_rows,
    cli_env,
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
    rows = ad_rows(4)  # as many as a run sends at once
    sheet_a, sheet_b = (write_csv(tmp_path / f"{name}.csv", rows) for name in ("a", "b"))
    # every answer comes late: run A's submits reach the API, and their answers are awaited
    config = fast_config(capacity=4, faults=Faults(slow=1.0, slow_seconds=15.0))
    with SimulatorServer(Simulator(config)) as server:
        run_a = start_cli(["run", sheet_a, "--concurrency", "4", "--db", db], server)
        wait_until(lambda: len(server.simulator.submissions()) == 4)
        # A, alive but paused before any answer: its four claims stay `submitting` for as
        # long as run B takes to start, however slow the machine
        run_a.send_signal(signal.SIGSTOP)
        try:
            run_b = run_cli(["run", sheet_b, "--db", db, "--resubmit-unknown"], server)
        finally:
            run_a.send_signal(signal.SIGCONT)
        assert run_b.returncode in (0, 1), run_b.stderr
        assert "4 job(s) are being submitted by another run" in run_b.stderr
        assert len(server.simulator.submissions()) == 4
        server.simulator.config.faults.slow = 0.0
        _, err = run_a.communicate(timeout=120)
        assert run_a.returncode == 0, err
        again = run_cli(["run", sheet_b, "--db", db, "--resubmit-unknown"], server)
        assert again.returncode == 0, again.stderr
        assert {r["status"] for r in read_csv(sheet_b)} == {"completed"}
    assert len(server.simulator.submissions()) == 4


def _second_run(
    spelling: str, sheet: Path, server: SimulatorServer
) -> subprocess.CompletedProcess[str]:
    """`batchgen run` of `sheet` spelled another way, while a first run holds it."""
    folder = sheet.parent
    if spelling == "relative path":
        return subprocess.run(
            [sys.executable, "-m", "batchgen", "run", f"./{sheet.name}"],
            cwd=folder,
            env=cli_env(server),
            capture_output=True,
            text=True,
            timeout=120,
            stdin=subprocess.DEVNULL,
        )
    if spelling == "job file with its own db":
        target = folder / "nightly.toml"
        target.write_text(f'sheet = "{sheet.name}"\ndb = "team.batchgen.db"\n', encoding="utf-8")
    else:
        target = folder / f"{spelling.replace(' ', '-')}.csv"
        if spelling == "symlink":
            target.symlink_to(sheet)
        else:
            os.link(sheet, target)
    return run_cli(["run", target], server)


@pytest.mark.parametrize(
    "spelling", ["symlink", "hard link", "relative path", "job file with its own db"]
)
def test_one_sheet_file_by_another_spelling_is_locked_out_with_exit_75(
    spelling: str, tmp_path: Path
) -> None:
    sheet = write_csv(tmp_path / "ads.csv", ad_rows(6))
    # jobs that outlast any second run's start-up: the first run is stopped by the test
    config = fast_config(capacity=6, min_duration=600.0, max_duration=600.0)
    with SimulatorServer(Simulator(config)) as server:
        first = start_cli(["run", sheet, "--concurrency", "6"], server)
        wait_until(lambda: len(server.simulator.submissions()) == 6)
        second = _second_run(spelling, sheet, server)
        assert second.returncode == 75, second.stderr
        assert "is already being run by process" in second.stderr
        first.send_signal(signal.SIGTERM)
        _, err = first.communicate(timeout=60)
        assert first.returncode == 143, err
    requests = [s.request_id for s in server.simulator.submissions()]
    payloads = {json.dumps(s.payload, sort_keys=True) for s in server.simulator.submissions()}
    assert len(requests) == len(payloads) == 6  # each job paid for once


def test_the_sheet_lock_follows_the_file_write_back_puts_in_its_place(tmp_path: Path) -> None:
    sheet = write_csv(tmp_path / "ads.csv", ad_rows(2))
    os.link(sheet, tmp_path / "linked-before.csv")
    held = SheetLock.acquire(sheet)
    try:
        # write-back: a new file (a new inode) replaces the sheet, then the run follows it;
        # the old file, still reachable by its hard link, stays locked too
        write_csv(tmp_path / ".ads.csv.tmp", ad_rows(3))
        os.replace(tmp_path / ".ads.csv.tmp", sheet)
        held.follow()
        os.link(sheet, tmp_path / "linked-after.csv")
        for name in ("ads.csv", "linked-after.csv", "linked-before.csv"):
            with pytest.raises(SheetLockedError, match="already being run by process"):
                SheetLock.acquire(tmp_path / name)
    finally:
        held.release()
    SheetLock.acquire(tmp_path / "linked-after.csv").release()  # released with the run
    folder = lock_dir()
    assert folder is not None
    assert not [p for p in folder.iterdir() if str(tmp_path) in _text(p)]  # removed


def test_an_inode_number_a_replaced_sheet_freed_and_a_new_file_took_is_not_locked(
    tmp_path: Path,
) -> None:
    sheet = write_csv(tmp_path / "ads.csv", ad_rows(2))
    other = tmp_path / "other.csv"
    os.link(sheet, other)  # stands for a new file given the replaced sheet's inode number
    held = SheetLock.acquire(sheet)
    try:
        # a person saves the sheet (a new file) mid-run; the run has not followed it yet
        write_csv(tmp_path / ".saved.csv", ad_rows(3))
        os.replace(tmp_path / ".saved.csv", sheet)
        with pytest.raises(SheetLockedError):  # written before the run: maybe its file
            SheetLock.acquire(other)
        later = time.time() + 5
        os.utime(other, (later, later))  # written after the run started: another file
        SheetLock.acquire(other).release()
        with pytest.raises(SheetLockedError):  # the sheet's own path stays locked
            SheetLock.acquire(sheet)
    finally:
        held.release()


def _text(path: Path) -> str:
    """A file's text, or "" if another run removed it meanwhile."""
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return ""


def test_a_ledger_deleted_during_a_run_is_noticed_and_the_rerun_pays_for_nothing_again(
    tmp_path: Path,
) -> None:
    sheet = write_csv(tmp_path / "ads.csv", ad_rows(8))
    db = tmp_path / "ads.csv.batchgen.db"
    config = fast_config(capacity=8, min_duration=2.0, max_duration=3.0)
    with SimulatorServer(Simulator(config)) as server:
        run = start_cli(["run", sheet, "--concurrency", "8"], server)
        # every job submitted and its request_id committed: none is cut off mid-submit when
        # the run stops (it would be `unknown`, and wait for --resubmit-unknown)
        wait_until(lambda: sum(bool(r["request_id"]) for r in ledger_rows(db)) == 8)
        for path in tmp_path.glob("ads.csv.batchgen.db*"):  # with its -wal and -shm
            path.unlink()
        _, err = run.communicate(timeout=120)
        assert run.returncode == 1, err
        assert f"the ledger {db} was deleted or replaced during the run" in err
        paid = len(server.simulator.submissions())
        shown = {r["request_id"] for r in read_csv(sheet) if r["request_id"]}
        assert shown and shown <= {s.request_id for s in server.simulator.submissions()}

        again = run_cli(["run", sheet], server)
        assert again.returncode == 0, again.stderr
        assert "rebuilt the ledger from the sheet" in again.stderr
        assert {r["status"] for r in read_csv(sheet)} == {"completed"}
    # every job the first run paid for was followed by its id, not paid for again
    payloads = [json.dumps(s.payload, sort_keys=True) for s in server.simulator.submissions()]
    assert len(payloads) == len(set(payloads)) == 8
    assert paid <= 8
