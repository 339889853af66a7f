"""Reruns: what a run reads back from the ledger about jobs an earlier run finished."""

from __future__ import annotations

import json
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


def test_moved_rows_keep_their_own_videos_and_the_ledger_follows_them(
    tmp_path: Path, sim: SimulatorServer
) -> None:
    rows = ad_rows(5)
    sheet = write_csv(tmp_path / "ads.csv", rows)
    db = tmp_path / "l.db"
    assert run_cli(["run", sheet, "--db", db], sim).returncode == 0
    video_of = {r["prompt"]: r["video_url"] for r in read_csv(sheet)}
    assert len(set(video_of.values())) == 5

    write_csv(sheet, list(reversed(rows)))  # every row moves but the middle one
    rerun = run_cli(["run", sheet, "--db", db, "--json", "--quiet"], sim)

    assert rerun.returncode == 0, rerun.stderr
    assert json.loads(rerun.stdout)["counts"] == {"completed": 5}
    assert len(sim.simulator.submissions()) == 5
    after = read_csv(sheet)
    assert [r["prompt"] for r in after] == [r["prompt"] for r in reversed(rows)]
    assert all(r["video_url"] == video_of[r["prompt"]] for r in after)
    row_of = {json.loads(j["payload"])["prompt"]: j["sheet_row"] for j in ledger_rows(db)}
    assert row_of == {r["prompt"]: number for number, r in enumerate(after, start=2)}


def test_max_cost_counts_the_sheets_finished_jobs_and_not_rows_deleted_since(
    tmp_path: Path, sim: SimulatorServer
) -> None:
    # each job: 720p, 5 s, no audio = $0.13
    rows = ad_rows(6, resolution="720p", generate_audio="no")
    sheet = write_csv(tmp_path / "ads.csv", rows[:4])
    db = tmp_path / "l.db"
    assert run_cli(["run", sheet, "--db", db], sim).returncode == 0

    # two finished rows deleted, two new ones: $0.26 already spent on this sheet's rows,
    # so a $0.45 cap leaves room for exactly one more job
    write_csv(sheet, rows[:2] + rows[4:])
    capped = run_cli(["run", sheet, "--db", db, "--max-cost", "0.45"], sim)

    assert capped.returncode == 1, capped.stderr
    assert len(sim.simulator.submissions()) == 5
    statuses = [r["status"] for r in read_csv(sheet)]
    assert statuses[:2] == ["completed", "completed"]
    assert sorted(statuses[2:]) == ["completed", "pending"]


def test_the_first_checkpoint_of_a_rerun_writes_the_finished_rows_too(
    tmp_path: Path, sim: SimulatorServer
) -> None:
    rows = ad_rows(3)
    sheet = write_csv(tmp_path / "ads.csv", rows[:2])
    db = tmp_path / "l.db"
    assert run_cli(["run", sheet, "--db", db], sim).returncode == 0
    finished = read_csv(sheet)

    write_csv(sheet, rows)
    # the new row's job outlasts the test: the sheet must be written mid-run, by a checkpoint
    slow = Simulator(fast_config(min_duration=600.0, max_duration=600.0))
    with SimulatorServer(slow) as server:
        run = start_cli(["run", sheet, "--db", db], server)
        wait_until(lambda: len(read_csv(sheet)[2].get("status", "")) > 0, timeout=60)

        during = read_csv(sheet)
        assert during[2]["status"] in {"pending", "in_queue", "in_progress"}
        for before, now in zip(finished, during[:2], strict=True):
            assert (now["status"], now["video_url"]) == ("completed", before["video_url"])
        run.terminate()
        _, err = run.communicate(timeout=60)
        assert run.returncode == 143, err
    after = read_csv(sheet)
    assert [r["status"] for r in after[:2]] == ["completed", "completed"]
    assert after[2]["request_id"] and after[2]["status"] in {"in_queue", "in_progress"}


def test_a_sheet_sharing_the_ledger_that_moves_rows_makes_the_next_rerun_look_again(
    tmp_path: Path, sim: SimulatorServer
) -> None:
    rows = ad_rows(3)
    first = write_csv(tmp_path / "first.csv", rows)
    second = write_csv(tmp_path / "second.csv", list(reversed(rows)))  # the same jobs
    db = tmp_path / "shared.db"
    assert run_cli(["run", first, "--db", db], sim).returncode == 0
    assert run_cli(["run", first, "--db", db], sim).returncode == 0  # unchanged: a marked rerun

    assert run_cli(["run", second, "--db", db], sim).returncode == 0  # moves every row
    row_of = {json.loads(j["payload"])["prompt"]: j["sheet_row"] for j in ledger_rows(db)}
    assert row_of == {r["prompt"]: n for n, r in enumerate(reversed(rows), start=2)}
    assert run_cli(["run", first, "--db", db], sim).returncode == 0

    row_of = {json.loads(j["payload"])["prompt"]: j["sheet_row"] for j in ledger_rows(db)}
    assert row_of == {r["prompt"]: n for n, r in enumerate(rows, start=2)}
    assert len(sim.simulator.submissions()) == 3
    assert [r["status"] for r in read_csv(first)] == ["completed"] * 3
