"""The header row and headers as their author meant them, in workbooks made by XlsxWriter."""

from __future__ import annotations

from pathlib import Path

import xlsxwriter
from openpyxl import load_workbook

from batchgen.simulator import SimulatorServer
from tests.helpers import IMAGE, read_csv, run_cli, write_csv

PROMPTS = ["Sneaker on a running track", "Coffee cup by the window", "Watch on a wrist"]


def team_workbook(path: Path, *, cover: bool = True) -> Path:
    """A cover sheet, then a merged title row and group headers above the real header."""
    book = xlsxwriter.Workbook(str(path))
    if cover:
        readme = book.add_worksheet("Read me")
        readme.write(0, 0, "How to fill in the Ads sheet")
        readme.write(1, 0, "One row per video; the team's columns are on the right.")
    ads = book.add_worksheet("Ads")
    bold = book.add_format({"bold": True})
    ads.merge_range(0, 0, 0, 4, "Summer campaign 2026", bold)
    ads.merge_range(2, 0, 2, 2, "Model inputs", bold)
    ads.write(2, 3, "Team", bold)
    for col, header in enumerate(["prompt", "first_frame_image_url", "ratio", "Owner", "Notes"]):
        ads.write(3, col, header, bold)
    for i, prompt in enumerate(PROMPTS):
        ads.write_row(4 + i, 0, [prompt, IMAGE, "9:16", "ana", f"note {i}"])
    book.close()
    return path


def test_the_header_is_found_below_a_title_and_group_headers(
    tmp_path: Path, sim: SimulatorServer
) -> None:
    sheet = team_workbook(tmp_path / "ads.xlsx")

    first = run_cli(["check", sheet], sim)  # the cover sheet is the first worksheet
    assert first.returncode == 2
    message = first.stderr.strip().splitlines()[-1]
    assert "missing required columns 'prompt', 'first_frame_image_url'" in message
    assert "row 1 was read as the header: 'How to fill in the Ads sheet'" in message
    assert "other worksheets: 'Ads'" in message

    checked = run_cli(["check", sheet, "--sheet", "Ads"], sim)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "3 rows, 3 jobs" in checked.stdout

    result = run_cli(["run", sheet, "--sheet", "Ads"], sim)
    assert result.returncode == 0, result.stderr
    assert sorted(s.payload["prompt"] for s in sim.simulator.submissions()) == sorted(PROMPTS)
    ws = load_workbook(sheet)["Ads"]
    assert ws["A1"].value == "Summer campaign 2026" and ws["D3"].value == "Team"
    header = [c.value for c in ws[4]]
    assert header[5:9] == ["request_id", "status", "video_url", "error"]
    assert [ws.cell(r, 7).value for r in (5, 6, 7)] == ["completed"] * 3
    assert ws.cell(3, 7).value is None  # nothing written above the header


def test_header_row_in_a_job_file_overrides_the_search(
    tmp_path: Path, sim: SimulatorServer
) -> None:
    team_workbook(tmp_path / "ads.xlsx", cover=False)
    job = tmp_path / "job.toml"
    job.write_text('sheet = "ads.xlsx"\nheader_row = 3\n')

    wrong = run_cli(["check", job], sim)  # row 3 holds the group headers

    assert wrong.returncode == 2
    assert "missing required columns" in wrong.stderr
    job.write_text('sheet = "ads.xlsx"\nheader_row = 4\n')
    assert run_cli(["check", job], sim).returncode == 0
    job.write_text('sheet = "ads.xlsx"\nheader_row = 0\n')
    bad = run_cli(["check", job], sim)
    assert bad.returncode == 2 and "header_row must be a row number" in bad.stderr


def test_headers_that_mean_a_field_are_mapped_and_said(
    tmp_path: Path, sim: SimulatorServer
) -> None:
    rows = [
        {
            "Prompt": p,
            "Image URL": IMAGE,
            "Aspect ratio": "9:16",
            "Duration (s)": 8,
            "Audio": "no",
            "Owner": "ana",
        }
        for p in PROMPTS
    ]
    sheet = write_csv(tmp_path / "ads.csv", rows)

    result = run_cli(["run", sheet], sim)

    assert result.returncode == 0, result.stderr
    assert "'Aspect ratio' → ratio" in result.stderr
    assert "'Duration (s)' → duration" in result.stderr
    sent = [s.payload for s in sim.simulator.submissions()]
    assert len(sent) == 3
    assert all(p["ratio"] == "9:16" and p["duration"] == 8 for p in sent)
    assert all(p["generate_audio"] is False for p in sent)
    assert [r["status"] for r in read_csv(sheet)] == ["completed"] * 3


def test_a_header_that_only_resembles_a_field_stops_the_run_until_the_user_says(
    tmp_path: Path, sim: SimulatorServer
) -> None:
    rows = [
        {"prompt": p, "first_frame_image_url": IMAGE, "Resolutoin": "720p", "Duration (min)": 1}
        for p in PROMPTS
    ]
    sheet = write_csv(tmp_path / "ads.csv", rows)

    refused = run_cli(["run", sheet], sim)

    assert refused.returncode == 2
    line = refused.stderr.strip().splitlines()[-1]
    assert "'Resolutoin' resembles resolution (typo)" in line
    assert "'Duration (min)' resembles duration (unit 'min'; batchgen sends seconds)" in line
    assert "nothing was sent" in line
    assert sim.simulator.submissions() == []

    job = tmp_path / "job.toml"
    job.write_text(
        'sheet = "ads.csv"\nignore = ["Duration (min)"]\n[columns]\nresolution = "Resolutoin"\n'
    )
    result = run_cli(["run", job], sim)

    assert result.returncode == 0, result.stderr
    sent = [s.payload for s in sim.simulator.submissions()]
    assert len(sent) == 3 and all(p["resolution"] == "720p" for p in sent)
    assert all(p.get("duration", 5) == 5 for p in sent)  # the ignored column is the team's


def test_columns_and_defaults_naming_nothing_are_refused_with_the_nearest_names(
    tmp_path: Path,
) -> None:
    rows = [{"prompt": p, "first_frame_image_url": IMAGE, "Format": "1:1"} for p in PROMPTS]
    write_csv(tmp_path / "ads.csv", rows)
    job = tmp_path / "job.toml"

    job.write_text('sheet = "ads.csv"\n[columns]\nratio = "Fromat"\n')
    wrong_header = run_cli(["check", job], None)
    job.write_text('sheet = "ads.csv"\n[columns]\nratio = "Format"\n[defaults]\ndurration = 7\n')
    wrong_default = run_cli(["check", job], None)
    job.write_text('sheet = "ads.csv"\n[columns]\naspect = "Format"\n')
    wrong_field = run_cli(["check", job], None)
    job.write_text('sheet = "ads.csv"\n[columns]\nratio = "Format"\n[defaults]\nduration = 7\n')
    right = run_cli(["check", job], None)

    assert wrong_header.returncode == 2
    assert "[columns] ratio = 'Fromat': ads.csv has no such header; nearest: 'Format'" in (
        wrong_header.stderr
    )
    assert wrong_default.returncode == 2
    assert "[defaults] durration: no such role or model field; nearest: 'duration'" in (
        wrong_default.stderr
    )
    assert wrong_field.returncode == 2 and "[columns] aspect" in wrong_field.stderr
    assert right.returncode == 0, right.stdout + right.stderr
