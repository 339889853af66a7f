"""`batchgen cancel` stops the spending: a run in progress learns of it through the ledger."""

from __future__ import annotations

import json
import signal
from collections import Counter
from pathlib import Path

from batchgen.simulator import Simulator, SimulatorServer
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


def _provider() -> SimulatorServer:
    # one job at a time, each long enough that none ends before the run hears of the cancel
    # (even on a loaded machine, where starting `batchgen cancel` takes seconds)
    return SimulatorServer(Simulator(fast_config(capacity=1, min_duration=10, max_duration=10)))


def _at_provider(sim: Simulator) -> dict[str, str]:
    """What the simulator says happened to each job it was sent: request_id -> status."""
    return {s.request_id: sim.job_status(s.request_id) for s in sim.submissions()}


def _cancel_a_run_in_progress(tmp_path: Path, db: str) -> None:
    sheet = write_csv(tmp_path / "ads.csv", ad_rows(10))
    with _provider() as server:
        sim = server.simulator
        run = start_cli(["run", sheet, "--db", db, "--concurrency", "4"], server)
        wait_until(lambda: len(sim.submissions()) == 4)

        cancel = run_cli(["cancel", sheet, "--db", db], server)

        assert cancel.returncode == 0, cancel.stdout + cancel.stderr
        assert "the run in progress (process" in cancel.stdout
        assert "submits nothing more" in cancel.stdout
        out, err = run.communicate(timeout=60)
        assert run.returncode == 1, err
        assert "cancelled by `batchgen cancel`" in out + err
        # nothing was submitted after the cancel, and the running job was followed to its end.
        # Which of the four submits the provider runs first is its own choice (they go out
        # at once), so each row is checked against what the simulator says befell its job.
        assert len(sim.submissions()) == 4
        provider = _at_provider(sim)
        queued = sorted(r for r, s in provider.items() if s == "cancelled")
        ran = sorted(r for r, s in provider.items() if s == "completed")
        # one worker: one job was running when the cancel came, the others still queued
        assert len(ran) == 1 and len(queued) == 3, provider
        assert f"cancelled {len(queued)} queued job(s)" in cancel.stdout
        assert "1 job(s) already running cannot be cancelled" in cancel.stdout
        rows = read_csv(sheet)
        sent = {r["request_id"]: r["status"] for r in rows if r["request_id"]}
        assert sent == provider
        never_sent = [r for r in rows if not r["request_id"]]
        assert len(never_sent) == 6
        assert all(r["status"] == "cancelled" for r in never_sent)
        assert all("--retry-cancelled" in r["error"] for r in never_sent)

        again = run_cli(["run", sheet, "--db", db], server)
        assert again.returncode == 1 and len(sim.submissions()) == 4
        assert "--retry-cancelled" in again.stdout

    with SimulatorServer(Simulator(fast_config())) as fast:
        retried = run_cli(["run", sheet, "--db", db, "--retry-cancelled"], fast)
        assert retried.returncode == 0, retried.stderr
        assert len(fast.simulator.submissions()) == 9
        assert Counter(r["status"] for r in read_csv(sheet)) == Counter({"completed": 10})


def test_cancel_stops_a_run_in_progress_on_a_sqlite_ledger(tmp_path: Path) -> None:
    _cancel_a_run_in_progress(tmp_path, str(tmp_path / "l.db"))


def test_cancel_stops_a_run_in_progress_on_a_postgresql_ledger(tmp_path: Path, pg_url: str) -> None:
    _cancel_a_run_in_progress(tmp_path, pg_url)


def test_cancel_without_a_run_cancels_what_is_queued(tmp_path: Path) -> None:
    sheet = write_csv(tmp_path / "ads.csv", ad_rows(5))
    db = tmp_path / "l.db"
    with _provider() as server:
        run = start_cli(["run", sheet, "--db", db, "--concurrency", "3"], server)
        wait_until(lambda: sum(1 for r in ledger_rows(db) if r["request_id"]) == 3)
        run.send_signal(signal.SIGTERM)
        run.communicate(timeout=30)
        assert run.returncode == 143

        cancel = run_cli(["cancel", sheet, "--db", db, "--json"], server)

        assert cancel.returncode == 0, cancel.stderr
        summary = json.loads(cancel.stdout)
        assert summary["run_in_progress"] is None
        # the three submits go out at once: which one the provider runs first is its choice,
        # so each row is checked against what the simulator says befell its job
        provider = _at_provider(server.simulator)
        rows = read_csv(sheet)
        row_of = {r["request_id"]: n for n, r in enumerate(rows, start=2) if r["request_id"]}
        assert set(row_of) == set(provider)
        queued = sorted(row_of[r] for r, s in provider.items() if s == "cancelled")
        running = sorted(
            row_of[r] for r, s in provider.items() if s in ("in_progress", "completed")
        )
        assert len(running) == 1 and len(queued) == 2, provider
        assert summary["cancelled_rows"] == queued
        assert summary["not_cancellable_rows"] == running
        assert all(rows[n - 2]["status"] == "cancelled" for n in queued)
        # rows never submitted are left for the next run; only the provider's queue is cancelled
        assert [r["status"] for r in rows if not r["request_id"]] == ["pending", "pending"]


def test_cancel_without_a_token_is_exit_2(tmp_path: Path) -> None:
    sheet = write_csv(tmp_path / "ads.csv", ad_rows(1))

    result = run_cli(["cancel", sheet], None, RUNCOMFY_API_TOKEN="")

    assert result.returncode == 2 and "no API token" in result.stderr
