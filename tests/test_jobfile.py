"""For the people who run it: job files, cron output, status, cancel, downloads, the cost cap."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

from openpyxl import load_workbook

from batchgen.simulator import Simulator, SimulatorServer
from tests.helpers import (
    IMAGE,
    ad_rows,
    fast_config,
    ledger_rows,
    read_csv,
    run_cli,
    start_cli,
    wait_until,
    write_csv,
)

REPO = Path(__file__).resolve().parent.parent


def test_the_shipped_job_file_runs_the_team_sheet_with_mapped_headers_and_defaults(
    tmp_path: Path, sim: SimulatorServer
) -> None:
    shutil.copytree(REPO / "jobs", tmp_path / "jobs")
    shutil.copytree(REPO / "sample_sheets", tmp_path / "sample_sheets")
    jobfile = tmp_path / "jobs" / "nightly.toml"

    checked = run_cli(["check", jobfile], sim)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    result = run_cli(["run", jobfile], sim)

    assert result.returncode == 0, result.stderr
    sent = [s.payload for s in sim.simulator.submissions()]
    assert len(sent) == 8
    assert all(p["resolution"] == "720p" and p["duration"] == 6 for p in sent)
    assert sorted(p.get("ratio", "-") for p in sent) == [
        "-",
        "-",
        "1:1",
        "1:1",
        "1:1",
        "9:16",
        "9:16",
        "9:16",
    ]
    assert (tmp_path / "jobs" / "team.batchgen.db").is_file()
    assert len(list((tmp_path / "jobs" / "videos").glob("*.mp4"))) == 8
    ws = load_workbook(tmp_path / "sample_sheets" / "team.xlsx")["Briefs"]
    headers = [c.value for c in ws[1]]
    assert headers[:4] == ["Creative brief", "Hero image", "Format", "Status note"]
    status_col = headers.index("status") + 1
    assert all(ws.cell(r, status_col).value == "completed" for r in range(2, 10))

    status = run_cli(["status", jobfile, "--json"], sim)
    assert status.returncode == 0
    assert json.loads(status.stdout)["counts"] == {"completed": 8}


def test_a_flag_overrides_the_job_file(tmp_path: Path, sim: SimulatorServer) -> None:
    write_csv(tmp_path / "ads.csv", ad_rows(2))
    jobfile = tmp_path / "batch.toml"
    jobfile.write_text('sheet = "ads.csv"\ndb = "one.db"\nconcurrency = 2\n')

    assert run_cli(["run", jobfile, "--db", tmp_path / "two.db"], sim).returncode == 0

    assert (tmp_path / "two.db").is_file() and not (tmp_path / "one.db").exists()


def test_a_bad_job_file_gets_one_line(tmp_path: Path) -> None:
    jobfile = tmp_path / "bad.toml"
    jobfile.write_text('sheet = "ads.csv"\nconcurency = 2\n')

    result = run_cli(["run", jobfile], None)

    assert result.returncode == 2 and "concurency" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_cron_output_for_hundreds_of_jobs_stays_short(tmp_path: Path) -> None:
    sheet = write_csv(tmp_path / "ads.csv", ad_rows(300))
    config = fast_config(capacity=64, min_duration=0.01, max_duration=0.05, failure_rate=0.02)
    with SimulatorServer(Simulator(config)) as server:
        result = run_cli(["run", sheet, "--concurrency", "64"], server)
    assert result.returncode == 1
    lines = (result.stdout + result.stderr).strip().splitlines()
    assert len(lines) <= 40, "\n".join(lines)
    failed_rows = [i + 2 for i, r in enumerate(read_csv(sheet)) if r["status"] == "failed"]
    assert failed_rows
    assert f"failed rows: {', '.join(map(str, failed_rows))}" in result.stdout


def test_json_summary_on_stdout(tmp_path: Path, sim: SimulatorServer) -> None:
    sheet = write_csv(tmp_path / "ads.csv", ad_rows(3))

    result = run_cli(["run", sheet, "--json", "--quiet"], sim)

    summary = json.loads(result.stdout)
    assert summary["counts"] == {"completed": 3} and summary["exit_code"] == 0
    assert summary["api_calls"]["submit"] == 3


def test_max_cost_submits_within_the_cap_and_a_larger_cap_continues(
    tmp_path: Path, sim: SimulatorServer
) -> None:
    sheet = write_csv(tmp_path / "ads.csv", ad_rows(10, resolution="720p", generate_audio="no"))
    # each job: 720p, 5 s, no audio = $0.13

    capped = run_cli(["run", sheet, "--max-cost", "0.5"], sim)

    assert capped.returncode == 1
    statuses = Counter(r["status"] for r in read_csv(sheet))
    assert statuses == Counter({"completed": 3, "pending": 7})
    assert all("--max-cost" in r["error"] for r in read_csv(sheet) if r["status"] == "pending")
    more = run_cli(["run", sheet, "--max-cost", "2"], sim)
    assert more.returncode == 0
    assert len(sim.simulator.submissions()) == 10


def test_cancel_stops_queued_jobs_and_the_running_run_writes_it(tmp_path: Path) -> None:
    sheet = write_csv(tmp_path / "ads.csv", ad_rows(6))
    db = tmp_path / "l.db"
    with SimulatorServer(
        # long jobs: the cancel (a second CLI process) must reach the provider before the
        # first two finish and free a slot, even on a machine slowed by other work
        Simulator(fast_config(capacity=2, min_duration=12.0, max_duration=12.0))
    ) as server:
        run = start_cli(["run", sheet, "--db", db, "--concurrency", "6"], server)
        wait_until(lambda: len(server.simulator.submissions()) == 6)
        wait_until(lambda: sum(1 for r in ledger_rows(db) if r["request_id"]) == 6)

        cancelled = run_cli(["cancel", sheet, "--db", db], server)

        assert cancelled.returncode == 0, cancelled.stderr
        assert "cancelled 4 queued job(s)" in cancelled.stdout
        assert "2 job(s) already running cannot be cancelled" in cancelled.stdout
        _, err = run.communicate(timeout=60)
        assert run.returncode == 1, err
        assert Counter(r["status"] for r in read_csv(sheet)) == Counter(
            {"cancelled": 4, "completed": 2}
        )


def test_downloads_are_stable_safe_names_and_skipped_when_complete(
    tmp_path: Path, sim: SimulatorServer
) -> None:
    rows = ad_rows(2, variant=lambda i: f"Spring / Hero #{i}")
    sheet = write_csv(tmp_path / "ads.csv", rows)
    videos = tmp_path / "videos"

    assert run_cli(["run", sheet, "--download", videos], sim).returncode == 0
    names = sorted(p.name for p in videos.iterdir())
    assert len(names) == 2 and all(
        n.endswith(".mp4") and "/" not in n and " " not in n for n in names
    )
    assert names[0].startswith("row00002_Spring-Hero-0")
    assert all((videos / n).read_bytes()[4:8] == b"ftyp" for n in names)
    media_before = sim.simulator.stats()["media"]

    assert run_cli(["run", sheet, "--download", videos], sim).returncode == 0
    assert sorted(p.name for p in videos.iterdir()) == names
    assert sim.simulator.stats()["media"] == media_before


def test_image_url_must_be_a_link_in_job_file_defaults_too(tmp_path: Path) -> None:
    (tmp_path / "ads.csv").write_text("prompt\nA shoe\n", encoding="utf-8")
    jobfile = tmp_path / "batch.toml"
    jobfile.write_text(f'sheet = "ads.csv"\n[defaults]\nfirst_frame_image_url = "{IMAGE}"\n')

    assert run_cli(["check", jobfile], None).returncode == 0
