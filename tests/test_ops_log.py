"""--log-file (and `log_file` in a job file) tells the whole run: outcome, stop, fatal errors."""

from __future__ import annotations

import re
import signal
from pathlib import Path

from batchgen.simulator import Simulator, SimulatorServer
from tests.helpers import (
    ad_rows,
    fast_config,
    ledger_rows,
    run_cli,
    start_cli,
    wait_until,
    write_csv,
)

STAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (INFO|WARNING|ERROR) ")


def _log(path: Path) -> str:
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    assert lines, "the log file is empty"
    assert all(STAMP.match(line) for line in lines), text  # every line dated
    return text


def _slow() -> SimulatorServer:
    return SimulatorServer(Simulator(fast_config(capacity=1, min_duration=30, max_duration=30)))


def test_the_log_of_a_run_with_failed_rows_holds_its_whole_outcome(tmp_path: Path) -> None:
    sheet = write_csv(tmp_path / "ads.csv", ad_rows(4))
    log = tmp_path / "nightly.log"
    with SimulatorServer(Simulator(fast_config(failure_rate=1.0))) as server:
        result = run_cli(["run", sheet, "--log-file", log], server)

    assert result.returncode == 1, result.stderr
    text = _log(log)
    assert re.search(r" INFO run \S*ads\.csv: 4 rows, 0/4 done: 4 pending\n", text)
    for row in range(2, 6):
        assert f"row {row} failed: " in text
    # the final summary the terminal got on stdout, line for line
    for line in result.stdout.strip().splitlines():
        assert line in text
    assert "failed rows: 2, 3, 4, 5" in text
    assert "--retry-failed" in text
    assert text.rstrip().endswith("exit 1")


def test_the_log_of_a_stopped_run_says_why_and_how_to_continue(tmp_path: Path) -> None:
    sheet = write_csv(tmp_path / "ads.csv", ad_rows(3))
    db, log = tmp_path / "l.db", tmp_path / "nightly.log"
    with _slow() as server:
        run = start_cli(["run", sheet, "--db", db, "--log-file", log], server)
        wait_until(lambda: sum(1 for r in ledger_rows(db) if r["request_id"]) == 3)
        run.send_signal(signal.SIGTERM)
        _, err = run.communicate(timeout=30)

    assert run.returncode == 143, err
    text = _log(log)
    assert "SIGTERM received" in text
    assert "stopped by SIGTERM; rerun the same command to continue" in text
    assert "0/3 done: 3 in_queue" in text and "in_queue rows: 2, 3, 4" in text
    assert text.rstrip().endswith("exit 143")


def test_the_log_of_a_locked_out_run_names_the_holder(tmp_path: Path) -> None:
    sheet = write_csv(tmp_path / "ads.csv", ad_rows(2))
    db, log = tmp_path / "l.db", tmp_path / "second.log"
    with _slow() as server:
        first = start_cli(["run", sheet, "--db", db], server)
        wait_until(lambda: any(r["request_id"] for r in ledger_rows(db)))

        second = run_cli(["run", sheet, "--db", db, "--log-file", log], server)

        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=30)
    assert second.returncode == 75
    text = _log(log)
    assert f"is already being run by process {first.pid}" in text
    assert "ERROR" in text and text.rstrip().endswith("exit 75")


def test_the_log_of_a_run_without_a_token_says_so(tmp_path: Path) -> None:
    sheet = write_csv(tmp_path / "ads.csv", ad_rows(2))
    log = tmp_path / "nightly.log"

    result = run_cli(["run", sheet, "--log-file", log], None, RUNCOMFY_API_TOKEN="")

    assert result.returncode == 2
    text = _log(log)
    assert "no API token" in text and text.rstrip().endswith("exit 2")


def test_the_log_of_a_run_whose_token_is_rejected_says_so(tmp_path: Path) -> None:
    sheet = write_csv(tmp_path / "ads.csv", ad_rows(2))
    log = tmp_path / "nightly.log"
    with SimulatorServer(Simulator(fast_config(token="the-real-one"))) as server:
        result = run_cli(["run", sheet, "--log-file", log], server)

    assert result.returncode == 2, result.stderr
    text = _log(log)
    assert "invalid API token" in text and text.rstrip().endswith("exit 2")
    assert "test-token" not in text  # the token never lands in a log


def test_log_file_in_a_job_file_is_relative_to_the_job_file(
    tmp_path: Path, sim: SimulatorServer
) -> None:
    (tmp_path / "sheets").mkdir()
    (tmp_path / "jobs").mkdir()
    write_csv(tmp_path / "sheets" / "ads.csv", ad_rows(2))
    jobfile = tmp_path / "jobs" / "nightly.toml"
    jobfile.write_text('sheet = "../sheets/ads.csv"\nlog_file = "nightly.log"\n')

    result = run_cli(["run", jobfile], sim)

    assert result.returncode == 0, result.stderr
    text = _log(tmp_path / "jobs" / "nightly.log")
    assert "2/2 done: 2 completed" in text and text.rstrip().endswith("exit 0")


def test_the_terminal_gets_the_first_20_problem_lines_and_the_log_every_one(tmp_path: Path) -> None:
    rows = ad_rows(50)
    for row in rows[25:]:
        row["duration"] = "99"  # 25 invalid rows
    sheet = write_csv(tmp_path / "ads.csv", rows)
    log = tmp_path / "nightly.log"
    config = fast_config(capacity=25, min_duration=0.01, max_duration=0.02, failure_rate=1.0)
    with SimulatorServer(Simulator(config)) as server:
        result = run_cli(["run", sheet, "--concurrency", "25", "--log-file", log], server)

    assert result.returncode == 1
    text = _log(log)
    for kind in ("invalid", "failed"):
        line = re.compile(rf" row \d+ {kind}: ")
        assert len(line.findall(text)) == 25 and len(line.findall(result.stderr)) == 20
    assert "more failures follow" in result.stderr
