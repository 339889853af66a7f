"""What the team typed is never overwritten: their own Status or request_id columns are kept."""

from __future__ import annotations

from pathlib import Path

import xlsxwriter
from openpyxl import load_workbook

from batchgen.simulator import SimulatorServer
from tests.helpers import IMAGE, ad_rows, read_csv, run_cli, write_csv

TEAM_STATUS = ["approved", "draft", "on hold"]


def test_a_teams_own_status_and_request_id_columns_are_left_alone(
    tmp_path: Path, sim: SimulatorServer
) -> None:
    rows = ad_rows(3)
    for row, status in zip(rows, TEAM_STATUS, strict=True):
        row["Status"] = status
        row["Request ID"] = f"REQ-{TEAM_STATUS.index(status) + 1}"
    sheet = write_csv(tmp_path / "ads.csv", rows)

    checked = run_cli(["check", sheet], sim)
    result = run_cli(["run", sheet], sim)
    again = run_cli(["run", sheet], sim)

    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "results go to 'batchgen request_id' (new), 'batchgen status' (new)" in checked.stdout
    assert "'Request ID', 'Status' hold(s) what the team typed" in checked.stdout
    assert result.returncode == 0, result.stderr
    assert "left as they are" in result.stderr
    assert again.returncode == 0, again.stderr
    assert len(sim.simulator.submissions()) == 3  # REQ-1 is not a job of ours: all three paid once
    out = read_csv(sheet)
    assert [r["Status"] for r in out] == TEAM_STATUS
    assert [r["Request ID"] for r in out] == ["REQ-1", "REQ-2", "REQ-3"]
    assert [r["batchgen status"] for r in out] == ["completed"] * 3
    assert all(len(r["batchgen request_id"]) == 36 for r in out)
    header = sheet.read_text().splitlines()[0].split(",")
    assert header.count("batchgen status") == 1 and "status" not in header


def test_columns_batchgen_wrote_before_are_reused(tmp_path: Path, sim: SimulatorServer) -> None:
    sheet = write_csv(tmp_path / "ads.csv", ad_rows(2))
    assert run_cli(["run", sheet], sim).returncode == 0
    rows = read_csv(sheet)
    rows.append({"prompt": "A new row", "first_frame_image_url": IMAGE})
    write_csv(sheet, rows)

    result = run_cli(["run", sheet], sim)

    assert result.returncode == 0, result.stderr
    out = read_csv(sheet)
    assert [r["status"] for r in out] == ["completed"] * 3
    assert not any(k.startswith("batchgen ") for k in out[0])
    assert len(sim.simulator.submissions()) == 3


def test_an_xlsx_status_column_in_capitals_with_team_values_is_kept(
    tmp_path: Path, sim: SimulatorServer
) -> None:
    path = tmp_path / "ads.xlsx"
    book = xlsxwriter.Workbook(str(path))
    ws = book.add_worksheet("Ads")
    ws.write_row(0, 0, ["prompt", "first_frame_image_url", "STATUS", "Error"])
    for i, status in enumerate(TEAM_STATUS):
        ws.write_row(i + 1, 0, [f"Shoe {i}", IMAGE, status, "typo in brief" if i == 0 else ""])
    book.close()

    result = run_cli(["run", path], sim)

    assert result.returncode == 0, result.stderr
    ws2 = load_workbook(path)["Ads"]
    header = [c.value for c in ws2[1]]
    assert header[:4] == ["prompt", "first_frame_image_url", "STATUS", "Error"]
    assert header[4:8] == [
        "batchgen request_id",
        "batchgen status",
        "batchgen video_url",
        "batchgen error",
    ]
    assert [ws2.cell(r, 3).value for r in (2, 3, 4)] == TEAM_STATUS
    assert ws2.cell(2, 4).value == "typo in brief"
    assert [ws2.cell(r, 6).value for r in (2, 3, 4)] == ["completed"] * 3


def test_an_array_formula_in_an_output_column_is_found_before_anything_is_paid(
    tmp_path: Path, sim: SimulatorServer
) -> None:
    path = tmp_path / "ads.xlsx"
    book = xlsxwriter.Workbook(str(path))
    ws = book.add_worksheet("Ads")
    ws.write_row(0, 0, ["prompt", "first_frame_image_url", "status"])
    for i in range(3):
        ws.write_row(i + 1, 0, [f"Shoe {i}", IMAGE, "pending"])
    # a formula showing batchgen's own word: the column is batchgen's, but a cell of an
    # array formula cannot be overwritten alone
    ws.write_array_formula(1, 2, 1, 2, '{=IF(A2<>"","pending","")}', None, "pending")
    book.close()
    before = path.read_bytes()

    checked = run_cli(["check", path], sim)
    refused = run_cli(["run", path], sim)

    assert checked.returncode == 1, checked.stdout + checked.stderr
    assert "a run could not write its results back" in checked.stdout
    assert "shared or array formula" in checked.stdout
    assert refused.returncode == 2, refused.stderr
    assert "shared or array formula" in refused.stderr
    assert sim.simulator.submissions() == []
    assert path.read_bytes() == before
