"""The sheet is a second ledger: what it shows as submitted is never paid for again."""

from __future__ import annotations

import shutil
import signal
from pathlib import Path

import pytest
from openpyxl import load_workbook

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
    write_xlsx,
)


def _lose(db: Path, how: str) -> None:
    """Delete the ledger (and its WAL files) or empty it to 0 bytes."""
    for extra in (Path(f"{db}-wal"), Path(f"{db}-shm")):
        extra.unlink(missing_ok=True)
    if how == "deleted":
        db.unlink()
    else:
        db.write_bytes(b"")


def _sheet(tmp_path: Path, kind: str, rows: list[dict]) -> Path:
    if kind == "csv":
        return write_csv(tmp_path / "ads.csv", rows)
    return write_xlsx(tmp_path / "ads.xlsx", rows)


@pytest.mark.parametrize("kind", ["csv", "xlsx"])
@pytest.mark.parametrize("how", ["deleted", "emptied"])
def test_a_lost_ledger_is_rebuilt_from_the_sheet_and_nothing_is_paid_again(
    tmp_path: Path, sim: SimulatorServer, kind: str, how: str
) -> None:
    sheet = _sheet(tmp_path, kind, ad_rows(10, ratio=lambda i: "9:16|1:1" if i == 3 else "16:9"))
    db = tmp_path / "ads.db"
    first = run_cli(["run", sheet, "--db", db], sim)
    assert first.returncode == 0, first.stderr
    assert len(sim.simulator.submissions()) == 11
    _lose(db, how)

    rerun = run_cli(["run", sheet, "--db", db], sim)

    assert rerun.returncode == 0, rerun.stderr
    assert len(sim.simulator.submissions()) == 11  # nothing paid twice
    assert "rebuilt the ledger from the sheet: 11 job(s)" in rerun.stderr
    ids = {s.request_id for s in sim.simulator.submissions()}
    rows = ledger_rows(db)
    assert {r["request_id"] for r in rows} == ids
    assert {r["state"] for r in rows} == {"completed"}


def test_jobs_shown_in_flight_are_followed_by_their_id(tmp_path: Path) -> None:
    sheet = write_csv(tmp_path / "ads.csv", ad_rows(6))
    db = tmp_path / "ads.db"
    with SimulatorServer(Simulator(fast_config(min_duration=1.5, max_duration=2.0))) as server:
        proc = start_cli(["run", sheet, "--db", db, "--concurrency", "6"], server)
        wait_until(lambda: len(server.simulator.submissions()) == 6)
        proc.send_signal(signal.SIGTERM)  # the sheet is written as the run stops
        proc.communicate(timeout=15)
        assert {r["status"] for r in read_csv(sheet)} <= {"in_queue", "in_progress"}
        _lose(db, "deleted")

        rerun = run_cli(["run", sheet, "--db", db], server)

        assert rerun.returncode == 0, rerun.stderr
        assert len(server.simulator.submissions()) == 6
        assert "rebuilt the ledger from the sheet: 6 job(s)" in rerun.stderr
        rows = read_csv(sheet)
        assert [r["status"] for r in rows] == ["completed"] * 6
        ids = {s.request_id for s in server.simulator.submissions()}
        assert {r["request_id"] for r in rows} == ids
        assert all(r["video_url"] for r in rows)


def test_a_ledger_deleted_during_a_run_costs_nothing_on_the_rerun(tmp_path: Path) -> None:
    sheet = write_xlsx(tmp_path / "ads.xlsx", ad_rows(12))
    db = tmp_path / "ads.db"
    with SimulatorServer(Simulator(fast_config(min_duration=0.3, max_duration=1.2))) as server:
        proc = start_cli(["run", sheet, "--db", db, "--concurrency", "3"], server)
        wait_until(lambda: len(server.simulator.submissions()) >= 3)
        _lose(db, "deleted")
        proc.communicate(timeout=60)

        rerun = run_cli(["run", sheet, "--db", db], server)

        assert rerun.returncode == 0, rerun.stderr
        assert len(server.simulator.submissions()) == 12
        assert "rebuilt the ledger from the sheet" in rerun.stderr


def test_a_ledger_replaced_by_an_older_copy_costs_nothing(
    tmp_path: Path, sim: SimulatorServer
) -> None:
    sheet = write_csv(tmp_path / "ads.csv", ad_rows(4))
    db = tmp_path / "ads.db"
    assert run_cli(["run", sheet, "--db", db], sim).returncode == 0
    old = tmp_path / "old.db"
    shutil.copyfile(db, old)  # a backup holding the first 4 jobs
    write_csv(sheet, read_csv(sheet) + ad_rows(7)[4:])  # three rows added
    assert run_cli(["run", sheet, "--db", db], sim).returncode == 0
    assert len(sim.simulator.submissions()) == 7
    for extra in (Path(f"{db}-wal"), Path(f"{db}-shm")):
        extra.unlink(missing_ok=True)
    shutil.copyfile(old, db)  # someone restores the backup

    rerun = run_cli(["run", sheet, "--db", db], sim)

    assert rerun.returncode == 0, rerun.stderr
    assert len(sim.simulator.submissions()) == 7
    assert "rebuilt the ledger from the sheet: 3 job(s)" in rerun.stderr


def test_an_edited_prompt_is_a_new_job_not_the_old_request_id(
    tmp_path: Path, sim: SimulatorServer
) -> None:
    sheet = write_csv(tmp_path / "ads.csv", ad_rows(3))
    db = tmp_path / "ads.db"
    assert run_cli(["run", sheet, "--db", db], sim).returncode == 0
    rows = read_csv(sheet)
    rows[1]["prompt"] = "A new brief for the second product"
    write_csv(sheet, rows)  # the row still shows the old job's request_id

    with_ledger = run_cli(["run", sheet, "--db", db], sim)

    assert with_ledger.returncode == 0, with_ledger.stderr
    prompts = [s.payload["prompt"] for s in sim.simulator.submissions()]
    assert prompts.count("A new brief for the second product") == 1
    assert "rebuilt" not in with_ledger.stderr

    # and with the ledger lost, the results file says whose id that row shows
    rows = read_csv(sheet)
    rows[2]["prompt"] = "A new brief for the third product"
    write_csv(sheet, rows)
    _lose(db, "deleted")

    without = run_cli(["run", sheet, "--db", db], sim)

    assert without.returncode == 0, without.stderr
    prompts = [s.payload["prompt"] for s in sim.simulator.submissions()]
    assert len(prompts) == 5 and prompts[-1] == "A new brief for the third product"
    assert "rebuilt the ledger from the sheet: 2 job(s)" in without.stderr


@pytest.mark.parametrize("kind", ["csv", "xlsx"])
def test_the_results_table_alone_is_enough(tmp_path: Path, sim: SimulatorServer, kind: str) -> None:
    sheet = _sheet(tmp_path, kind, ad_rows(5))
    db = tmp_path / "ads.db"
    assert run_cli(["run", sheet, "--db", db], sim).returncode == 0
    if kind == "csv":  # someone clears the output columns of the sheet itself
        rows = read_csv(sheet)
        write_csv(sheet, [{**r, "request_id": "", "status": ""} for r in rows])
    else:
        wb = load_workbook(sheet)
        ws = wb["Ads"]
        headers = [c.value for c in ws[1]]
        for name in ("request_id", "status", "video_url"):
            for r in range(2, 7):
                ws.cell(r, headers.index(name) + 1).value = None
        wb.save(sheet)
    _lose(db, "deleted")

    rerun = run_cli(["run", sheet, "--db", db], sim)

    assert rerun.returncode == 0, rerun.stderr
    assert len(sim.simulator.submissions()) == 5
    assert "rebuilt the ledger from the sheet: 5 job(s)" in rerun.stderr


def test_a_sheet_brought_to_a_new_postgresql_ledger_pays_nothing_again(
    tmp_path: Path, sim: SimulatorServer, pg_url: str
) -> None:
    sheet = write_csv(tmp_path / "ads.csv", ad_rows(5))
    assert run_cli(["run", sheet, "--db", tmp_path / "local.db"], sim).returncode == 0

    moved = run_cli(["run", sheet, "--db", pg_url], sim)

    assert moved.returncode == 0, moved.stderr
    assert len(sim.simulator.submissions()) == 5
    assert "rebuilt the ledger from the sheet: 5 job(s)" in moved.stderr
    status = run_cli(["status", sheet, "--db", pg_url], sim)
    assert "5/5 done: 5 completed" in status.stdout


@pytest.mark.parametrize("kind", ["csv", "xlsx"])
def test_with_output_the_output_files_results_table_counts(
    tmp_path: Path, sim: SimulatorServer, kind: str
) -> None:
    sheet = _sheet(tmp_path, kind, ad_rows(4))
    out = tmp_path / f"results.{kind}"
    db = tmp_path / "ads.db"
    assert run_cli(["run", sheet, "--db", db, "--output", out], sim).returncode == 0
    _lose(db, "deleted")

    rerun = run_cli(["run", sheet, "--db", db, "--output", out], sim)

    assert rerun.returncode == 0, rerun.stderr
    assert len(sim.simulator.submissions()) == 4
    assert "rebuilt the ledger from the sheet: 4 job(s)" in rerun.stderr
