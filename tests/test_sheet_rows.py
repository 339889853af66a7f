"""Rows that are not jobs: an Excel Table's totals row, and rows hidden by hand or a filter."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import pytest
import xlsxwriter
from openpyxl import load_workbook

from batchgen.simulator import Simulator, SimulatorServer
from tests.helpers import IMAGE, fast_config, run_cli, start_cli, wait_until

FILES = Path(__file__).parent / "files"


def prompts_sent(sim: SimulatorServer) -> list[str]:
    """The prompt of every job the simulator received, in order."""
    return [sub.payload["prompt"] for sub in sim.simulator.submissions()]


def table_sheet(path: Path, rows: int, *, status_column: bool = False) -> Path:
    """An Excel Table (XlsxWriter) of `rows` ads with a totals row: `Total` under prompt, a
    SUBTOTAL count under the image column (and under `status`, when the table has one)."""
    book = xlsxwriter.Workbook(str(path))
    ws = book.add_worksheet("Ads")
    data: list[list[Any]] = [[f"Shoe {i} on a pedestal", IMAGE] for i in range(rows)]
    columns: list[dict[str, Any]] = [
        {"header": "prompt", "total_string": "Total"},
        {"header": "first_frame_image_url", "total_function": "count"},
    ]
    if status_column:
        columns.append({"header": "status", "total_function": "count"})
        for row in data:
            row.append(None)
    ws.add_table(
        0, 0, rows + 1, len(columns) - 1, {"data": data, "total_row": True, "columns": columns}
    )
    book.close()
    return path


def test_an_excel_tables_totals_row_is_not_a_job(tmp_path: Path, sim: SimulatorServer) -> None:
    sheet = table_sheet(tmp_path / "ads.xlsx", 3)

    checked = run_cli(["check", sheet], sim)
    result = run_cli(["run", sheet], sim)

    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "row 5 is the totals row of table 'Table1': not a job" in checked.stdout
    assert "3 rows, 3 jobs" in checked.stdout and "all rows valid" in checked.stdout
    assert result.returncode == 0, result.stderr
    assert sorted(prompts_sent(sim)) == [f"Shoe {i} on a pedestal" for i in range(3)]
    ws = load_workbook(sheet)["Ads"]
    assert [ws.cell(r, 4).value for r in (2, 3, 4)] == ["completed"] * 3
    assert ws.cell(5, 1).value == "Total"
    assert ws.cell(5, 2).value == "=SUBTOTAL(103,[first_frame_image_url])"
    assert [ws.cell(5, c).value for c in (3, 4, 5, 6)] == [None] * 4  # never written


def test_a_totals_row_count_under_status_does_not_make_it_the_teams_column(
    tmp_path: Path, sim: SimulatorServer
) -> None:
    # the totals row's SUBTOTAL under `status` is not a value the team typed into it
    sheet = table_sheet(tmp_path / "ads.xlsx", 2, status_column=True)

    result = run_cli(["run", sheet], sim)

    assert result.returncode == 0, result.stderr
    ws = load_workbook(sheet)["Ads"]
    header = [c.value for c in ws[1]]
    assert "batchgen status" not in header
    assert [ws.cell(r, 3).value for r in (2, 3)] == ["completed"] * 2
    assert ws.cell(4, 3).value == "=SUBTOTAL(103,[status])"
    assert len(sim.simulator.submissions()) == 2


def filtered_sheet(path: Path) -> Path:
    """Six ads (XlsxWriter): an AutoFilter on Status showing `ok` (rows 3 and 6 hidden by
    it, as Excel leaves them), and row 5 hidden by hand."""
    book = xlsxwriter.Workbook(str(path))
    ws = book.add_worksheet("Ads")
    ws.write_row(0, 0, ["prompt", "first_frame_image_url", "Status"])
    for i in range(6):
        status = "on hold" if i in (1, 4) else "ok"
        ws.write_row(i + 1, 0, [f"Ad {i + 2}", IMAGE, status])
        if status != "ok" or i == 3:
            ws.set_row(i + 1, None, None, {"hidden": True})
    ws.autofilter(0, 0, 6, 2)
    ws.filter_column(2, "Status == ok")
    book.close()
    return path


def test_hidden_rows_are_set_aside_until_include_hidden(
    tmp_path: Path, sim: SimulatorServer
) -> None:
    sheet = filtered_sheet(tmp_path / "ads.xlsx")

    checked = run_cli(["check", sheet], sim)
    as_json = run_cli(["check", sheet, "--json"], sim)
    result = run_cli(["run", sheet], sim)
    sent_first = prompts_sent(sim)
    ws = load_workbook(sheet)["Ads"]
    cells_first = {r: ws.cell(r, 5).value for r in range(2, 8)}
    with_hidden = run_cli(["run", sheet, "--include-hidden"], sim)

    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert (
        "3 rows hidden (2 by the filter on column 'Status', 1 by hand): not run, their cells "
        "left as they are; --include-hidden runs them" in checked.stdout
    )
    assert "hidden rows: 3, 5, 6" in checked.stdout
    assert "3 rows, 3 jobs" in checked.stdout
    report = json.loads(as_json.stdout)
    assert report["hidden_rows"] == {
        "3": "by the filter on column 'Status'",
        "5": "by hand",
        "6": "by the filter on column 'Status'",
    }
    assert result.returncode == 0, result.stderr
    assert "hidden rows, not run (--include-hidden runs them): 3, 5, 6" in result.stdout
    assert sorted(sent_first) == ["Ad 2", "Ad 4", "Ad 7"]
    assert cells_first == {
        2: "completed",
        3: None,
        4: "completed",
        5: None,
        6: None,
        7: "completed",
    }
    assert with_hidden.returncode == 0, with_hidden.stderr
    assert sorted(prompts_sent(sim)[3:]) == ["Ad 3", "Ad 5", "Ad 6"]  # the rest, once
    ws = load_workbook(sheet)["Ads"]
    assert [ws.cell(r, 5).value for r in range(2, 8)] == ["completed"] * 6
    assert ws.row_dimensions[3].hidden and not ws.row_dimensions[4].hidden


def test_a_job_file_runs_hidden_rows_with_include_hidden(
    tmp_path: Path, sim: SimulatorServer
) -> None:
    filtered_sheet(tmp_path / "ads.xlsx")
    job = tmp_path / "ads.toml"
    job.write_text('sheet = "ads.xlsx"\ninclude_hidden = true\n')
    bad = tmp_path / "bad.toml"
    bad.write_text('sheet = "ads.xlsx"\ninclude_hidden = "yes"\n')

    checked = run_cli(["check", job], sim)
    refused = run_cli(["check", bad], sim)
    result = run_cli(["run", job], sim)

    assert "3 rows hidden (2 by the filter on column 'Status', 1 by hand): run" in checked.stdout
    assert "6 rows, 6 jobs" in checked.stdout
    assert refused.returncode == 2 and "include_hidden must be true or false" in refused.stderr
    assert result.returncode == 0, result.stderr
    assert len(sim.simulator.submissions()) == 6


def test_hiding_a_row_never_changes_another_rows_job(tmp_path: Path, sim: SimulatorServer) -> None:
    # two identical rows are two jobs told apart by their order: hiding the first must not
    # make the second take its identity (and be paid for again once the first is shown)
    path = tmp_path / "ads.xlsx"

    def write(hide_first: bool) -> None:
        book = xlsxwriter.Workbook(str(path))
        ws = book.add_worksheet("Ads")
        ws.write_row(0, 0, ["prompt", "first_frame_image_url"])
        for r in (1, 2):
            ws.write_row(r, 0, ["The same shoe", IMAGE])
        if hide_first:
            ws.set_row(1, None, None, {"hidden": True})
        book.close()

    write(hide_first=True)
    first = run_cli(["run", path], sim)
    ws = load_workbook(path)["Ads"]
    status_then = [ws.cell(r, 4).value for r in (2, 3)]
    request_then = ws.cell(3, 3).value
    write(hide_first=False)  # shown again (batchgen's cells go with the rewrite)
    second = run_cli(["run", path], sim)

    assert first.returncode == 0, first.stderr
    assert status_then == [None, "completed"]
    assert second.returncode == 0, second.stderr
    assert len(sim.simulator.submissions()) == 2  # each row once
    ws = load_workbook(path)["Ads"]
    assert ws.cell(3, 3).value == request_then
    assert [ws.cell(r, 4).value for r in (2, 3)] == ["completed"] * 2


def test_a_row_hidden_after_it_was_submitted_is_followed_never_retried(
    tmp_path: Path,
) -> None:
    path = tmp_path / "ads.xlsx"
    book = xlsxwriter.Workbook(str(path))
    ws = book.add_worksheet("Ads")
    ws.write_row(0, 0, ["prompt", "first_frame_image_url"])
    for r in (1, 2, 3):
        ws.write_row(r, 0, [f"Ad {r + 1}", IMAGE])
    book.close()
    with SimulatorServer(Simulator(fast_config(failure_rate=1.0))) as server:
        failed = run_cli(["run", path], server)
        wb = load_workbook(path)
        wb["Ads"].row_dimensions[3].hidden = True  # the team hides a failed row
        wb.save(path)
        server.simulator.config.failure_rate = 0.0
        retried = run_cli(["run", path, "--retry-failed"], server)
        ws2 = load_workbook(path)["Ads"]
        after_retry = [ws2.cell(r, 4).value for r in (2, 3, 4)]
        checked = run_cli(["check", path], server)
        shown = run_cli(["run", path, "--retry-failed", "--include-hidden"], server)
        sent = [sub.payload["prompt"] for sub in server.simulator.submissions()]

    assert failed.returncode == 1, failed.stderr
    assert retried.returncode == 1, retried.stderr  # the hidden row is still failed
    assert sorted(sent[3:5]) == ["Ad 2", "Ad 4"]  # retried; the hidden row 3 is not
    assert after_retry == ["completed", "failed", "completed"]
    assert "1 row hidden (1 by hand)" in checked.stdout
    assert shown.returncode == 0, shown.stderr
    assert sent[5:] == ["Ad 3"]
    assert load_workbook(path)["Ads"].cell(3, 4).value == "completed"


def test_workbooks_saved_by_libreoffice(tmp_path: Path, sim: SimulatorServer) -> None:
    # saved by LibreOffice 7.4 (tests/files/README.md): its XML, not XlsxWriter's
    table = tmp_path / "table.xlsx"
    table.write_bytes((FILES / "libreoffice_table_totals.xlsx").read_bytes())
    filtered = tmp_path / "filtered.xlsx"
    filtered.write_bytes((FILES / "libreoffice_filtered.xlsx").read_bytes())

    checked = [run_cli(["check", path], sim) for path in (table, filtered)]
    results = [run_cli(["run", path], sim) for path in (table, filtered)]

    assert "row 6 is the totals row of table 'Table1': not a job" in checked[0].stdout
    assert "1 row hidden (1 by hand)" in checked[0].stdout
    assert "2 rows hidden (2 by the filter on column 'Region')" in checked[1].stdout
    assert all(r.returncode == 0 for r in results), [r.stderr for r in results]
    assert sorted(prompts_sent(sim)) == [
        "Filtered ad 1",
        "Filtered ad 3",
        "Filtered ad 5",
        "LibreOffice ad 1",
        "LibreOffice ad 2",
        "LibreOffice ad 4",
    ]
    ws = load_workbook(table)["Ads"]
    assert [ws.cell(r, 5).value for r in range(2, 7)] == [
        "completed",
        "completed",
        None,
        "completed",
        None,
    ]
    assert ws.cell(6, 1).value == "Total"


def test_rows_in_a_collapsed_group_are_hidden_rows(tmp_path: Path, sim: SimulatorServer) -> None:
    path = tmp_path / "ads.xlsx"
    book = xlsxwriter.Workbook(str(path))
    ws = book.add_worksheet("Ads")
    ws.write_row(0, 0, ["prompt", "first_frame_image_url"])
    for r in (1, 2, 3):
        ws.write_row(r, 0, [f"Grouped ad {r + 1}", IMAGE])
    for r in (2, 3):  # an outline group, collapsed
        ws.set_row(r, None, None, {"level": 1, "hidden": True})
    ws.set_row(4, None, None, {"collapsed": True})
    book.close()

    checked = run_cli(["check", path, "--include-hidden"], sim)

    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "2 rows hidden (2 in a collapsed group): run, as --include-hidden asks" in checked.stdout
    assert "3 rows, 3 jobs" in checked.stdout


def test_a_totals_row_outside_a_table_is_not_a_job(tmp_path: Path, sim: SimulatorServer) -> None:
    # no Excel Table: a row of only 'Total' and aggregate formulas is a totals row; a row
    # whose prompt is built by a formula (and whose duration is a SUM) is an ad like any other
    path = tmp_path / "ads.xlsx"
    book = xlsxwriter.Workbook(str(path))
    ws = book.add_worksheet("Ads")
    ws.write_row(0, 0, ["prompt", "first_frame_image_url", "duration"])
    ws.write_row(1, 0, ["Shoe on sand", IMAGE, 5])
    ws.write_formula(2, 0, '=CONCATENATE("Shoe ","on snow")', None, "Shoe on snow")
    ws.write_string(2, 1, IMAGE)
    ws.write_formula(2, 2, "=SUM(5,1)", None, 6)
    ws.write_string(3, 0, "Total:")
    ws.write_formula(3, 1, "=COUNTA(B2:B3)", None, 2)
    ws.write_formula(3, 2, "=SUM(C2:C3)", None, 11)
    ws.write_formula(5, 2, "=SUBTOTAL(109,C2:C3)", None, 11)  # a lone sum below, no label
    book.close()

    checked = run_cli(["check", path], sim)
    result = run_cli(["run", path], sim)

    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert (
        "rows 4, 6 hold only aggregate formulas (SUM, SUBTOTAL, …) and labels such as 'Total': "
        "a totals row, not a job" in checked.stdout
    )
    assert "2 rows, 2 jobs" in checked.stdout
    assert result.returncode == 0, result.stderr
    sent = sorted((s.payload["prompt"], s.payload["duration"]) for s in sim.simulator.submissions())
    assert sent == [("Shoe on sand", 5), ("Shoe on snow", 6)]
    ws2 = load_workbook(path)["Ads"]
    assert [ws2.cell(r, 5).value for r in (2, 3, 4, 6)] == ["completed", "completed", None, None]
    assert ws2.cell(4, 3).value == "=SUM(C2:C3)"


@pytest.mark.parametrize("ledger", ["kept", "lost"])
def test_a_row_hidden_while_its_job_runs_is_followed_and_written(
    tmp_path: Path, ledger: str
) -> None:
    # paid for before it was hidden: the rerun follows it by its request_id (from the
    # ledger, or from the sheet's cells when the ledger is lost) and writes its cells
    path = tmp_path / "ads.xlsx"
    db = tmp_path / "ads.db"
    book = xlsxwriter.Workbook(str(path))
    ws = book.add_worksheet("Ads")
    ws.write_row(0, 0, ["prompt", "first_frame_image_url"])
    for r in (1, 2, 3):
        ws.write_row(r, 0, [f"Ad {r + 1}", IMAGE])
    book.close()
    with SimulatorServer(Simulator(fast_config(min_duration=1.5, max_duration=2.0))) as server:
        proc = start_cli(["run", path, "--db", db], server)
        wait_until(lambda: len(server.simulator.submissions()) == 3)
        proc.send_signal(signal.SIGTERM)  # the sheet is written as the run stops
        proc.communicate(timeout=15)
        wb = load_workbook(path)
        in_flight = [wb["Ads"].cell(r, 4).value for r in (2, 3, 4)]
        wb["Ads"].row_dimensions[3].hidden = True
        wb.save(path)
        if ledger == "lost":
            db.unlink()
        rerun = run_cli(["run", path, "--db", db], server)
        submitted = len(server.simulator.submissions())

    assert set(in_flight) <= {"in_queue", "in_progress"}, in_flight
    assert rerun.returncode == 0, rerun.stderr
    assert submitted == 3  # nothing paid again
    assert "1 row hidden (1 by hand)" in rerun.stderr
    assert "1 submitted before being hidden: followed and written" in rerun.stderr
    ws2 = load_workbook(path)["Ads"]
    assert [ws2.cell(r, 4).value for r in (2, 3, 4)] == ["completed"] * 3
    assert ws2.row_dimensions[3].hidden


def test_a_hidden_invalid_row_is_set_aside_not_invalid(
    tmp_path: Path, sim: SimulatorServer
) -> None:
    path = tmp_path / "ads.xlsx"
    book = xlsxwriter.Workbook(str(path))
    ws = book.add_worksheet("Ads")
    ws.write_row(0, 0, ["prompt", "first_frame_image_url", "duration"])
    ws.write_row(1, 0, ["Shoe on sand", IMAGE, 5])
    ws.write_row(2, 0, ["Draft idea", IMAGE, 99])  # invalid, and put aside by the team
    ws.set_row(2, None, None, {"hidden": True})
    book.close()

    checked = run_cli(["check", path], sim)
    strict = run_cli(["run", path, "--strict"], sim)
    shown = run_cli(["check", path, "--include-hidden"], sim)

    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "all rows valid" in checked.stdout
    assert strict.returncode == 0, strict.stderr
    assert prompts_sent(sim) == ["Shoe on sand"]
    assert load_workbook(path)["Ads"].cell(3, 5).value is None  # no 'invalid' written
    assert shown.returncode == 1 and "1 invalid row(s)" in shown.stdout
