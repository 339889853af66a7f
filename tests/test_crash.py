"""Never lose a job, never pay twice: signals, SIGKILL at random moments, faults, locks, secrets."""

from __future__ import annotations

import json
import random
import signal
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

import pytest

from batchgen.simulator import Faults, Simulator, SimulatorServer
from tests.helpers import (
    TOKEN,
    ad_rows,
    fast_config,
    ledger_rows,
    read_csv,
    run_cli,
    start_cli,
    wait_until,
    write_csv,
)


def _payload_key(payload: dict) -> str:
    return json.dumps(payload, sort_keys=True)


def check_against_simulator(db: Path, sim: Simulator) -> Counter[str]:
    """Every job the simulator created is in the ledger with its request_id, or honestly unknown."""
    jobs = {_payload_key(json.loads(r["payload"])): r for r in ledger_rows(db)}
    per_payload = Counter(_payload_key(s.payload) for s in sim.submissions())
    assert max(per_payload.values(), default=0) <= 1, "a payload was submitted twice"
    for sub in sim.submissions():
        job = jobs[_payload_key(sub.payload)]
        # right after a SIGKILL a job may still say `submitting`; the next run calls it unknown
        assert job["request_id"] == sub.request_id or job["state"] in ("unknown", "submitting")
    return Counter(r["state"] for r in jobs.values())


def slow_sim(**overrides: object) -> SimulatorServer:
    """Jobs long enough that a run is mid-flight when the test interrupts it."""
    values: dict = {"capacity": 4, "min_duration": 0.3, "max_duration": 0.9, "seed": 3}
    values.update(overrides)
    return SimulatorServer(Simulator(fast_config(**values)))


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_stops_cleanly_records_every_answer_and_a_rerun_finishes(
    tmp_path: Path, signum: int, code: int
) -> None:
    sheet = write_csv(tmp_path / "ads.csv", ad_rows(24))
    db = tmp_path / "l.db"
    with slow_sim() as server:
        proc = start_cli(["run", sheet, "--db", db, "--concurrency", "8"], server)
        wait_until(lambda: len(server.simulator.submissions()) >= 6)
        sent = time.monotonic()
        proc.send_signal(signum)
        proc.communicate(timeout=15)
        assert proc.returncode == code
        assert time.monotonic() - sent < 10
        states = check_against_simulator(db, server.simulator)
        assert states["unknown"] == 0 and states["submitting"] == 0
        assert {r["status"] for r in read_csv(sheet)} <= {
            "pending",
            "in_queue",
            "in_progress",
            "completed",
        }

        rerun = run_cli(["run", sheet, "--db", db, "--concurrency", "8"], server)

        assert rerun.returncode == 0, rerun.stderr
        assert check_against_simulator(db, server.simulator) == Counter({"completed": 24})
        assert len(server.simulator.submissions()) == 24


def test_cancel_on_exit_cancels_jobs_still_queued(tmp_path: Path) -> None:
    sheet = write_csv(tmp_path / "ads.csv", ad_rows(12))
    db = tmp_path / "l.db"
    with slow_sim(capacity=1, min_duration=2.0, max_duration=2.0) as server:
        proc = start_cli(
            ["run", sheet, "--db", db, "--concurrency", "6", "--cancel-on-exit"], server
        )
        wait_until(lambda: len(server.simulator.submissions()) >= 6)
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=15)
        assert proc.returncode == 143
        states = Counter(r["state"] for r in ledger_rows(db))
        assert states["cancelled"] >= 4
        sim_states = Counter(
            server.simulator.job_status(s.request_id) for s in server.simulator.submissions()
        )
        assert sim_states["cancelled"] == states["cancelled"]


def test_sigkill_at_random_moments_loses_nothing_and_pays_once(tmp_path: Path) -> None:
    rng = random.Random(20261125)
    sheet = write_csv(tmp_path / "ads.csv", ad_rows(40))
    db = tmp_path / "l.db"
    with slow_sim(capacity=6, min_duration=0.1, max_duration=0.5) as server:
        sim = server.simulator
        for _ in range(4):
            before = len(sim.submissions())
            if before >= 40:
                break
            target = min(before + rng.randint(1, 8), 40)
            proc = start_cli(["run", sheet, "--db", db, "--concurrency", "10"], server)
            wait_until(lambda p=proc, t=target: len(sim.submissions()) >= t or p.poll() is not None)
            time.sleep(rng.uniform(0, 0.05))  # a random instant, not synchronisation
            killed_at = time.time()
            proc.kill()
            proc.communicate(timeout=10)
            states = check_against_simulator(db, sim)
            # a job left without its request_id was really in flight at the kill: an answer
            # that arrived well before it is in the ledger (the bound leaves room for a
            # machine slowed by other work; a lost answer would be minutes old)
            in_doubt = {
                _payload_key(json.loads(r["payload"]))
                for r in ledger_rows(db)
                if r["state"] in ("unknown", "submitting")
            }
            for sub in sim.submissions()[before:]:
                if _payload_key(sub.payload) in in_doubt:
                    created = datetime.fromisoformat(sub.created_at.replace("Z", "+00:00"))
                    assert killed_at - created.timestamp() < 5.0
            assert sum(states.values()) == 40
        final = run_cli(["run", sheet, "--db", db, "--concurrency", "10"], server)
        states = check_against_simulator(db, sim)
        assert states["completed"] + states["unknown"] == 40
        assert states["submitting"] == 0
        assert final.returncode == (0 if states["unknown"] == 0 else 1)
        if states["unknown"]:
            assert "--resubmit-unknown" in final.stdout


def test_unknown_jobs_are_resubmitted_only_when_asked(tmp_path: Path) -> None:
    sheet = write_csv(tmp_path / "ads.csv", ad_rows(6))
    db = tmp_path / "l.db"
    with SimulatorServer(Simulator(fast_config(faults=Faults(drop_after=1.0)))) as server:
        first = run_cli(["run", sheet, "--db", db], server)
        assert first.returncode == 1
        assert {r["status"] for r in read_csv(sheet)} == {"unknown"}
        assert "--resubmit-unknown" in first.stdout
        assert len(server.simulator.submissions()) == 6
        server.simulator.config.faults = Faults()
        assert run_cli(["run", sheet, "--db", db], server).returncode == 1
        assert len(server.simulator.submissions()) == 6
        resubmitted = run_cli(["run", sheet, "--db", db, "--resubmit-unknown"], server)
        assert resubmitted.returncode == 0, resubmitted.stderr
        assert len(server.simulator.submissions()) == 12
        assert {r["status"] for r in read_csv(sheet)} == {"completed"}


def test_one_call_in_five_failing_still_ends_every_row_honestly(tmp_path: Path) -> None:
    sheet = write_csv(tmp_path / "ads.csv", ad_rows(30))
    db = tmp_path / "l.db"
    config = fast_config(faults=Faults.spread(0.2), seed=11, failure_rate=0.1)
    with SimulatorServer(Simulator(config)) as server:
        result = run_cli(["run", sheet, "--db", db, "--concurrency", "8"], server)
        assert result.returncode in (0, 1), result.stderr
        assert "Traceback" not in result.stderr
        states = check_against_simulator(db, server.simulator)
        assert set(states) <= {"completed", "failed", "unknown"}
        for row in read_csv(sheet):
            assert row["status"] in ("completed", "failed", "unknown")
            if row["status"] == "completed":
                assert server.simulator.job_status(row["request_id"]) == "completed"
            if row["status"] == "failed":
                assert row["error"]


def test_insufficient_balance_stops_submitting_and_says_so(tmp_path: Path) -> None:
    sheet = write_csv(tmp_path / "ads.csv", ad_rows(10))
    with SimulatorServer(Simulator(fast_config(balance=0.35))) as server:
        result = run_cli(["run", sheet, "--concurrency", "2"], server)
        assert result.returncode == 1
        assert "balance" in result.stderr
        statuses = Counter(r["status"] for r in read_csv(sheet))
        assert statuses["completed"] == len(server.simulator.submissions()) >= 1
        assert statuses["pending"] == 10 - statuses["completed"]


def test_rate_limits_are_survived(tmp_path: Path) -> None:
    sheet = write_csv(tmp_path / "ads.csv", ad_rows(12))
    faults = Faults(rate_limit_429=0.3, retry_after=0.02)
    with SimulatorServer(Simulator(fast_config(faults=faults))) as server:
        result = run_cli(["run", sheet, "--concurrency", "6", "--rate", "200"], server)
        assert result.returncode == 0, result.stderr
        assert len(server.simulator.submissions()) == 12


def test_a_second_run_of_the_same_sheet_refuses_with_75(tmp_path: Path) -> None:
    sheet = write_csv(tmp_path / "ads.csv", ad_rows(8))
    db = tmp_path / "l.db"
    with slow_sim(capacity=1, min_duration=1.0, max_duration=1.0) as server:
        first = start_cli(["run", sheet, "--db", db], server)
        wait_until(lambda: len(server.simulator.submissions()) >= 1)
        second = run_cli(["run", sheet, "--db", db], server)
        assert second.returncode == 75
        assert "already being run" in second.stderr and str(first.pid) in second.stderr
        status = run_cli(["status", sheet, "--db", db], server)
        assert status.returncode == 0 and f"process {first.pid}" in status.stdout
        first.kill()
        first.communicate(timeout=10)
        # the lock left by the killed process is taken over
        third = run_cli(["run", sheet, "--db", db, "--concurrency", "8"], server)
        assert third.returncode == 0, third.stderr


def test_the_token_never_lands_in_files_logs_or_output(
    tmp_path: Path, sim: SimulatorServer
) -> None:
    sheet = write_csv(tmp_path / "ads.csv", ad_rows(4))
    log = tmp_path / "run.log"
    result = run_cli(
        ["run", sheet, "--verbose", "--log-file", log, "--download", tmp_path / "videos"], sim
    )
    assert result.returncode == 0, result.stderr
    assert TOKEN not in result.stdout + result.stderr
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path
    assert sim.simulator.media_auth_headers == []
    assert len(list((tmp_path / "videos").glob("*.mp4"))) == 4


def test_a_stuck_job_is_reported_not_dropped(tmp_path: Path) -> None:
    sheet = write_csv(tmp_path / "ads.csv", ad_rows(2))
    with slow_sim(capacity=1, min_duration=30, max_duration=30) as server:
        result = run_cli(["run", sheet, "--job-timeout", "1"], server)
        assert result.returncode == 1
        rows = read_csv(sheet)
        assert all(r["request_id"] for r in rows)
        assert all("after" in r["error"] for r in rows)


def test_jobs_left_in_flight_by_a_crash_are_followed_again_past_the_job_timeout(
    tmp_path: Path,
) -> None:
    sheet = write_csv(tmp_path / "ads.csv", ad_rows(3))
    db = tmp_path / "l.db"
    with slow_sim(capacity=3, min_duration=1.5, max_duration=1.5) as server:
        proc = start_cli(["run", sheet, "--db", db], server)
        wait_until(lambda: sum(1 for r in ledger_rows(db) if r["request_id"]) == 3)
        proc.kill()
        proc.communicate(timeout=10)
        wait_until(
            lambda: all(
                server.simulator.job_status(s.request_id) == "completed"
                for s in server.simulator.submissions()
            )
        )
        # the jobs are older than the timeout, yet this run looks at them and finds them done
        rerun = run_cli(["run", sheet, "--db", db, "--job-timeout", "1"], server)

        assert rerun.returncode == 0, rerun.stdout + rerun.stderr
        assert {r["status"] for r in read_csv(sheet)} == {"completed"}
        assert len(server.simulator.submissions()) == 3


def test_a_stop_leaves_submits_that_never_left_pending_not_unknown(tmp_path: Path) -> None:
    sheet = write_csv(tmp_path / "ads.csv", ad_rows(8))
    db = tmp_path / "l.db"
    with slow_sim() as server:
        proc = start_cli(["run", sheet, "--db", db, "--concurrency", "8", "--rate", "2"], server)
        wait_until(lambda: len(server.simulator.submissions()) >= 2)
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=15)

        assert proc.returncode == 130
        states = check_against_simulator(db, server.simulator)
        assert states["unknown"] == 0 and states["submitting"] == 0
        assert states["pending"] == 8 - len(server.simulator.submissions())


def test_two_sheets_sharing_one_ledger_never_pay_twice_for_the_same_job(tmp_path: Path) -> None:
    rows = ad_rows(12)
    first = write_csv(tmp_path / "a.csv", rows)
    second = write_csv(tmp_path / "b.csv", rows)
    shared = str(tmp_path / "shared.db")
    with slow_sim(capacity=8, min_duration=0.2, max_duration=0.4) as server:
        procs = [
            start_cli(["run", sheet, "--concurrency", "12"], server, BATCHGEN_DB=shared)
            for sheet in (first, second)
        ]
        for proc in procs:
            _, err = proc.communicate(timeout=60)
            assert proc.returncode in (0, 1), err
        assert len(server.simulator.submissions()) == 12
        # a rerun of either sheet shows every job, whoever paid for it
        for sheet in (first, second):
            assert run_cli(["run", sheet], server, BATCHGEN_DB=shared).returncode == 0
            assert {r["status"] for r in read_csv(sheet)} == {"completed"}
        assert len(server.simulator.submissions()) == 12
