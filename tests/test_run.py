"""The spine: `batchgen run` end to end against the simulator over HTTP, with real files."""

from __future__ import annotations

from pathlib import Path

import pytest
from openpyxl import load_workbook

from batchgen.simulator import Simulator, SimulatorServer
from tests.helpers import (
    TOKEN,
    ad_rows,
    fast_config,
    ledger_rows,
    read_csv,
    run_cli,
    write_csv,
    write_xlsx,
)


def test_csv_of_30_rows_runs_end_to_end_and_a_rerun_submits_nothing(
    tmp_path: Path, sim: SimulatorServer
) -> None:
    sheet = write_csv(tmp_path / "ads.csv", ad_rows(30, owner=lambda i: f"owner {i}"))
    db = tmp_path / "ledger.db"

    first = run_cli(["run", sheet, "--db", db, "--concurrency", "6"], sim)

    assert first.returncode == 0, first.stderr
    rows = read_csv(sheet)
    submitted = {s.request_id: s.payload for s in sim.simulator.submissions()}
    assert len(submitted) == 30
    for i, row in enumerate(rows):
        assert row["owner"] == f"owner {i}"
        assert row["status"] == "completed"
        assert row["request_id"] in submitted
        assert submitted[row["request_id"]]["prompt"] == row["prompt"]
        assert row["video_url"].endswith(f"/media/{row['request_id']}.mp4")
        assert row["error"] == ""
    results = read_csv(tmp_path / "ads.results.csv")
    assert len(results) == 30 and {r["status"] for r in results} == {"completed"}

    again = run_cli(["run", sheet, "--db", db], sim)

    assert again.returncode == 0, again.stderr
    assert len(sim.simulator.submissions()) == 30
    assert read_csv(sheet) == rows


def test_xlsx_keeps_worksheets_and_formatting_and_gets_a_results_sheet(
    tmp_path: Path, sim: SimulatorServer
) -> None:
    sheet = write_xlsx(tmp_path / "ads.xlsx", ad_rows(20, variant=lambda i: f"v{i}"))

    result = run_cli(["run", sheet], sim)

    assert result.returncode == 0, result.stderr
    assert (tmp_path / "ads.xlsx.batchgen.db").is_file()
    wb = load_workbook(sheet)
    assert wb.sheetnames == ["Ads", "Notes", "batchgen_results"]
    ws = wb["Ads"]
    assert ws["A1"].font.bold and ws.column_dimensions["A"].width == 42
    assert wb["Notes"]["A1"].value == "keep me"
    headers = [c.value for c in ws[1]]
    assert headers[-4:] == ["request_id", "status", "video_url", "error"]
    ids = {s.request_id for s in sim.simulator.submissions()}
    for r in range(2, 22):
        row = dict(zip(headers, (c.value for c in ws[r]), strict=True))
        assert row["variant"] == f"v{r - 2}"
        assert row["status"] == "completed" and row["request_id"] in ids
        assert row["video_url"].startswith("http")
    assert wb["batchgen_results"].max_row == 21

    rerun = run_cli(["run", sheet], sim)

    assert rerun.returncode == 0 and len(sim.simulator.submissions()) == 20


def test_expansion_and_takes_make_one_job_per_combination_with_one_line_each(
    tmp_path: Path, sim: SimulatorServer
) -> None:
    rows = ad_rows(2)
    rows[0].update(ratio="9:16|1:1", takes=2)
    rows[1].update(ratio="16:9", takes="")
    sheet = write_csv(tmp_path / "ads.csv", rows)

    result = run_cli(["run", sheet], sim)

    assert result.returncode == 0, result.stderr
    payloads = [s.payload for s in sim.simulator.submissions()]
    assert sorted(p["ratio"] for p in payloads) == ["16:9", "1:1", "1:1", "9:16", "9:16"]
    first = read_csv(sheet)[0]
    names = ["9:16, take 1", "9:16, take 2", "1:1, take 1", "1:1, take 2"]
    assert first["status"].split("\n") == [f"{n}: completed" for n in names]
    ids = [line.split(": ", 1) for line in first["request_id"].split("\n")]
    assert [n for n, _ in ids] == names and len({i for _, i in ids}) == 4
    assert read_csv(sheet)[1]["status"] == "completed"  # a row's only job: a bare line


def test_empty_cells_leave_fields_out_and_excel_numbers_and_booleans_are_coerced(
    tmp_path: Path, sim: SimulatorServer
) -> None:
    rows = ad_rows(3)
    rows[0].update(duration=5.0, generate_audio="TRUE", camera_fixed="no", resolution="")
    rows[1].update(duration="", generate_audio="0", camera_fixed="Yes", resolution="720p")
    rows[2].update(duration=7, generate_audio=False, camera_fixed=1, resolution="1080P")
    sheet = write_xlsx(tmp_path / "ads.xlsx", rows)

    assert run_cli(["run", sheet], sim).returncode == 0
    sent = sorted((s.payload for s in sim.simulator.submissions()), key=lambda p: p["prompt"])
    assert sent[0]["duration"] == 5 and isinstance(sent[0]["duration"], int)
    assert sent[0]["generate_audio"] is True and sent[0]["camera_fixed"] is False
    assert "resolution" not in sent[0] and "duration" not in sent[1]
    assert sent[1]["generate_audio"] is False and sent[1]["camera_fixed"] is True
    assert sent[2]["resolution"] == "1080p" and sent[2]["camera_fixed"] is True


def test_editing_one_prompt_resubmits_that_row_only_and_reordering_resubmits_nothing(
    tmp_path: Path, sim: SimulatorServer
) -> None:
    rows = ad_rows(5, note=lambda i: f"n{i}")
    sheet = write_csv(tmp_path / "ads.csv", rows)
    db = tmp_path / "l.db"
    assert run_cli(["run", sheet, "--db", db], sim).returncode == 0

    reordered = list(reversed(rows))
    reordered.insert(2, reordered[0] | {"prompt": "A brand new prompt"})
    reordered[-1] = reordered[-1] | {"prompt": "Edited prompt"}
    write_csv(sheet, reordered)
    assert run_cli(["run", sheet, "--db", db], sim).returncode == 0

    prompts = [s.payload["prompt"] for s in sim.simulator.submissions()]
    assert len(prompts) == 7
    assert prompts[5:] == ["A brand new prompt", "Edited prompt"] or sorted(prompts[5:]) == sorted(
        ["A brand new prompt", "Edited prompt"]
    )
    assert all(r["status"] == "completed" for r in read_csv(sheet))


def test_failed_jobs_show_the_error_and_are_retried_only_with_retry_failed(
    tmp_path: Path,
) -> None:
    sheet = write_csv(tmp_path / "ads.csv", ad_rows(3))
    with SimulatorServer(Simulator(fast_config(failure_rate=1.0))) as server:
        failed = run_cli(["run", sheet], server)
        assert failed.returncode == 1
        rows = read_csv(sheet)
        assert {r["status"] for r in rows} == {"failed"}
        assert all(r["error"] for r in rows)
        assert "failed rows: 2, 3, 4" in failed.stdout
        assert run_cli(["run", sheet], server).returncode == 1
        assert len(server.simulator.submissions()) == 3
    with SimulatorServer(Simulator(fast_config())) as healthy:
        retried = run_cli(["run", sheet, "--retry-failed"], healthy)
        assert retried.returncode == 0, retried.stderr
        assert len(healthy.simulator.submissions()) == 3
        assert {r["status"] for r in read_csv(sheet)} == {"completed"}


def test_output_flag_leaves_the_sheet_untouched(tmp_path: Path, sim: SimulatorServer) -> None:
    sheet = write_csv(tmp_path / "ads.csv", ad_rows(2))
    before = sheet.read_bytes()
    out = tmp_path / "out" / "done.csv"
    out.parent.mkdir()

    assert run_cli(["run", sheet, "--output", out], sim).returncode == 0

    assert sheet.read_bytes() == before
    assert [r["status"] for r in read_csv(out)] == ["completed", "completed"]


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["run", "missing.csv"], {}, "missing.csv"),
        (["run", "{sheet}"], {"RUNCOMFY_API_TOKEN": ""}, "RUNCOMFY_API_TOKEN"),
        (["run", "{sheet}", "--db", "/nonexistent/dir/l.db"], {}, "/nonexistent/dir"),
        (["run", "{sheet}", "--model", "acme/nope"], {}, "unknown model"),
        (["run", "{sheet}", "--concurrency", "0"], {}, "concurrency"),
    ],
)
def test_nothing_can_start_exits_2_with_one_line(
    tmp_path: Path, sim: SimulatorServer, args: list[str], env: dict[str, str], message: str
) -> None:
    sheet = write_csv(tmp_path / "ads.csv", ad_rows(2))
    before = sheet.read_bytes()
    argv = [a.replace("{sheet}", str(sheet)) for a in args]

    result = run_cli(argv, sim, **env)

    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert sheet.read_bytes() == before
    assert sim.simulator.submissions() == []


def test_a_rejected_token_stops_at_once_with_exit_2_and_marks_nothing_failed(
    tmp_path: Path,
) -> None:
    sheet = write_csv(tmp_path / "ads.csv", ad_rows(4))
    db = tmp_path / "l.db"
    with SimulatorServer(Simulator(fast_config(token="the-right-one"))) as server:
        result = run_cli(["run", sheet, "--db", db], server)
        assert result.returncode == 2
        assert "token" in result.stderr and TOKEN not in result.stderr + result.stdout
        assert {r["state"] for r in ledger_rows(db)} == {"pending"}
        fixed = run_cli(["run", sheet, "--db", db], server, RUNCOMFY_API_TOKEN="the-right-one")
        assert fixed.returncode == 0, fixed.stderr


def test_the_demo_runs_and_says_where_the_results_are(tmp_path: Path) -> None:
    result = run_cli(["demo", "--dir", tmp_path / "demo"], None, RUNCOMFY_API_TOKEN="")

    assert result.returncode == 0, result.stderr
    assert "demo_ads.xlsx" in result.stdout
    wb = load_workbook(tmp_path / "demo" / "demo_ads.xlsx")
    ws = wb["Ads"]
    column = next(c.column_letter for c in ws[1] if c.value == "status")
    statuses = [str(c.value) for c in ws[column][1:]]
    # every line names its model (the demo compares two), and every job completed
    assert statuses and all(
        line.endswith(": completed") for s in statuses for line in s.split("\n")
    )
    assert any("kling-3.0-pro-i2v" in s for s in statuses)
    page = (tmp_path / "demo" / "report.html").read_text(encoding="utf-8")
    assert 'class="compare"' in page


def test_with_a_job_id_adding_takes_later_keeps_the_job_that_already_ran(
    tmp_path: Path, sim: SimulatorServer
) -> None:
    rows = ad_rows(2, job_id=lambda i: f"hero-{i}")
    sheet = write_csv(tmp_path / "ads.csv", rows)
    assert run_cli(["run", sheet], sim).returncode == 0
    first_ids = [r["request_id"] for r in read_csv(sheet)]

    rows[0]["takes"] = 3
    write_csv(sheet, rows)
    result = run_cli(["run", sheet, "--quiet"], sim)

    assert result.returncode == 0, result.stderr
    assert len(sim.simulator.submissions()) == 4
    out = read_csv(sheet)
    assert out[0]["request_id"].split("\n")[0] == f"take 1: {first_ids[0]}"
    assert out[1]["request_id"] == first_ids[1]
    # --quiet still prints the final summary
    assert "4/4 done: 4 completed" in result.stdout


def test_an_api_that_answers_404_to_early_results_is_polled_by_status(tmp_path: Path) -> None:
    sheet = write_csv(tmp_path / "ads.csv", ad_rows(4))
    config = fast_config(result_404_until_done=True, min_duration=0.3, max_duration=0.5)
    with SimulatorServer(Simulator(config)) as server:
        result = run_cli(["run", sheet], server)

        assert result.returncode == 0, result.stdout + result.stderr
        assert {r["status"] for r in read_csv(sheet)} == {"completed"}
        assert server.simulator.stats()["status"] > 0


def test_a_sheet_that_cannot_be_written_is_refused_before_anything_is_submitted(
    tmp_path: Path, sim: SimulatorServer
) -> None:
    missing = tmp_path / "no such folder" / "out.csv"
    sheet = write_csv(tmp_path / "ads.csv", ad_rows(2))
    book = tmp_path / "ads.xlsx"
    write_xlsx(book, ad_rows(2))
    wb = load_workbook(book)
    wb["Ads"].title = "batchgen_results"  # the sheet run is the one results would replace
    wb.save(book)
    before = book.read_bytes()

    to_missing = run_cli(["run", sheet, "--output", missing], sim)
    into_itself = run_cli(["run", book, "--sheet", "batchgen_results"], sim)

    for result, message in ((to_missing, "cannot write into"), (into_itself, "being processed")):
        assert result.returncode == 2, result.stderr
        assert message in result.stderr and "Traceback" not in result.stderr
    assert book.read_bytes() == before
    assert sim.simulator.submissions() == []
