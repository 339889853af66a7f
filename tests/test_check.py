"""Bad input gets a clear answer: validation, `batchgen check`, and a gallery of broken sheets."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
from openpyxl import Workbook

from batchgen.simulator import SimulatorServer
from tests.helpers import IMAGE, ad_rows, read_csv, run_cli, write_csv, write_xlsx

BAD_ROWS = [
    (
        {"ratio": "2:1"},
        "ratio",
        "ratio '2:1' is not one of 16:9, 4:3, 1:1, 3:4, 9:16, 21:9, adaptive",
    ),
    ({"duration": 15}, "duration", "duration 15 is outside 4–12"),
    ({"duration": "five"}, "duration", "is not a number"),
    ({"duration": 5.5}, "duration", "is not a whole number"),
    ({"resolution": "4k"}, "resolution", "is not one of 480p, 720p, 1080p"),
    ({"generate_audio": "maybe"}, "generate_audio", "is not a yes/no value"),
    ({"prompt": "   "}, "prompt", "prompt is required"),
    ({"first_frame_image_url": r"C:\Users\ana\hero.png"}, "first_frame_image_url", "https://"),
    ({"first_frame_image_url": "hero.png"}, "first_frame_image_url", "not a web link"),
    ({"takes": 0}, "takes", "takes '0' is not a whole number"),
]


def test_each_invalid_row_is_named_by_row_and_column_and_never_sent(
    tmp_path: Path, sim: SimulatorServer
) -> None:
    rows = ad_rows(len(BAD_ROWS) + 2)
    for index, (change, _, _) in enumerate(BAD_ROWS, start=1):
        rows[index].update(change)
    sheet = write_csv(tmp_path / "ads.csv", rows)

    checked = run_cli(["check", sheet], sim)

    assert checked.returncode == 1
    lines = checked.stdout.splitlines()
    for index, (_, column, message) in enumerate(BAD_ROWS, start=1):
        row = index + 2  # header is row 1, the first good row is row 2
        assert any(f"row {row}, column '{column}'" in ln and message in ln for ln in lines), row
    assert sim.simulator.submissions() == []

    result = run_cli(["run", sheet], sim)

    assert result.returncode == 1
    out = read_csv(sheet)
    assert out[0]["status"] == out[-1]["status"] == "completed"
    for index, (_, column, message) in enumerate(BAD_ROWS, start=1):
        assert out[index]["status"] == "invalid"
        assert message in out[index]["error"] and column in out[index]["error"]
    assert len(sim.simulator.submissions()) == 2


def test_a_job_id_used_twice_is_invalid_even_when_made_by_takes(tmp_path: Path) -> None:
    rows = ad_rows(4)
    rows[0] |= {"job_id": "hero", "takes": 2}  # jobs `hero` and `hero[take 2]`
    rows[1] |= {"job_id": "hero[take 2]"}
    rows[2] |= {"job_id": "shoe"}
    rows[3] |= {"job_id": "shoe"}
    sheet = write_csv(tmp_path / "ads.csv", rows)

    checked = run_cli(["check", sheet], None)

    assert checked.returncode == 1
    lines = checked.stdout.splitlines()
    assert any("row 3, column 'job_id'" in ln and "already used on row 2" in ln for ln in lines)
    assert any("row 5, column 'job_id'" in ln and "already used on row 4" in ln for ln in lines)

    rows[0], rows[1] = rows[1], rows[0]  # the literal id first: now the takes row is the clash
    write_csv(sheet, rows)
    checked = run_cli(["check", sheet], None)

    assert checked.returncode == 1
    assert any(
        "row 3, column 'job_id'" in ln and "makes job 'hero[take 2]', the job_id of row 2" in ln
        for ln in checked.stdout.splitlines()
    ), checked.stdout


def test_strict_refuses_the_whole_sheet(tmp_path: Path, sim: SimulatorServer) -> None:
    rows = ad_rows(3)
    rows[2]["ratio"] = "2:1"
    sheet = write_csv(tmp_path / "ads.csv", rows)
    before = sheet.read_bytes()

    result = run_cli(["run", sheet, "--strict"], sim)

    assert result.returncode == 2
    assert "row 4" in result.stderr and "--strict" in result.stderr
    assert sheet.read_bytes() == before and sim.simulator.submissions() == []


def test_check_counts_rows_jobs_warnings_and_cost(tmp_path: Path) -> None:
    rows = ad_rows(3)
    rows[0].update(ratio="9:16|1:1", resolution="720p", duration=10, generate_audio="yes")
    rows[1]["prompt"] = "x" * 600
    sheet = write_xlsx(tmp_path / "ads.xlsx", rows)

    result = run_cli(["check", sheet], None)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 rows, 4 jobs" in result.stdout
    assert "warning: row 3, column 'prompt': prompt is 600 characters" in result.stdout
    # 2 × 720p/10 s/audio ($0.52) + 2 × 480p/5 s/audio ($0.12)
    assert "estimated cost: $1.28" in result.stdout
    as_json = json.loads(run_cli(["check", sheet, "--json"], None).stdout)
    assert as_json["jobs"] == 4 and as_json["estimated_cost_usd"] == pytest.approx(1.28)


def test_two_columns_for_one_field_is_an_error_naming_both(tmp_path: Path) -> None:
    sheet = tmp_path / "ads.csv"
    sheet.write_text(f"Prompt, prompt ,first_frame_image_url\na,b,{IMAGE}\n", encoding="utf-8")

    result = run_cli(["check", sheet], None)

    assert result.returncode == 2
    assert "'Prompt'" in result.stderr and "' prompt '" in result.stderr


def _bad_sheets(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    header_only = tmp_path / "header_only.xlsx"
    wb = Workbook()
    wb.active.append(["notes"])
    wb.active.append(["just notes"])
    wb.save(header_only)
    png = tmp_path / "picture.xlsx"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    locked = tmp_path / "locked.xlsx"
    locked.write_bytes(bytes.fromhex("D0CF11E0A1B11AE1") + b"\0" * 512)
    broken_zip = tmp_path / "broken.xlsx"
    with zipfile.ZipFile(broken_zip, "w") as zf:
        zf.writestr("hello.txt", "not a workbook")
    return {
        "missing": (tmp_path / "nope.csv", "nope.csv"),
        "directory": (tmp_path, str(tmp_path.name)),
        "empty": (empty, "empty"),
        "no prompt column": (header_only, "missing required column"),
        "not a sheet": (png, "picture.xlsx"),
        "password-protected": (locked, "password-protected"),
        "zip but not xlsx": (broken_zip, "broken.xlsx"),
        "unknown extension": (tmp_path / "ads.txt", "ads.txt"),
    }


@pytest.mark.parametrize(
    "case",
    [
        "missing",
        "directory",
        "empty",
        "no prompt column",
        "not a sheet",
        "password-protected",
        "zip but not xlsx",
        "unknown extension",
    ],
)
@pytest.mark.parametrize("command", ["run", "check"])
def test_bad_sheets_get_one_clear_line_and_exit_2(
    tmp_path: Path, sim: SimulatorServer, case: str, command: str
) -> None:
    (tmp_path / "ads.txt").write_text("prompt\nhello\n")
    path, expected = _bad_sheets(tmp_path)[case]
    before = path.read_bytes() if path.is_file() else None

    result = run_cli([command, path], sim)

    assert result.returncode == 2, result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("batchgen: error:"), result.stderr
    assert expected in lines[0]
    assert "Traceback" not in result.stderr
    if before is not None:
        assert path.read_bytes() == before
    assert sim.simulator.submissions() == []


def test_verbose_shows_the_traceback(tmp_path: Path) -> None:
    locked = tmp_path / "locked.xlsx"
    locked.write_bytes(bytes.fromhex("D0CF11E0A1B11AE1") + b"\0" * 512)

    result = run_cli(["check", locked, "--verbose"], None)

    assert result.returncode == 2 and "Traceback" in result.stderr


def test_good_rows_in_a_sheet_with_bad_ones_still_complete(
    tmp_path: Path, sim: SimulatorServer
) -> None:
    rows = ad_rows(6)
    rows[1]["ratio"] = "2:1"
    rows[3]["first_frame_image_url"] = "D:/photos/x.png"
    sheet = write_xlsx(tmp_path / "ads.xlsx", rows)

    result = run_cli(["run", sheet], sim)

    assert result.returncode == 1
    assert "invalid rows: 3, 5" in result.stdout
    assert len(sim.simulator.submissions()) == 4


def test_check_output_is_bounded_a_repeated_problem_is_one_line(tmp_path: Path) -> None:
    rows = ad_rows(5000)
    for i in range(0, 5000, 2):
        rows[i]["duration"] = 15
    rows[1]["ratio"] = "2:1"
    sheet = write_csv(tmp_path / "ads.csv", rows)

    checked = run_cli(["check", sheet], None)

    assert checked.returncode == 1
    lines = checked.stdout.splitlines()
    assert len(lines) < 10, lines
    assert any(
        ln.startswith("error: column 'duration'")
        and ln.endswith("duration 15 is outside 4–12: rows 2, 4, 6 … (2,500 rows)")
        for ln in lines
    ), lines
    assert "error: row 3, column 'ratio'" in checked.stdout
    assert "ratio '2:1' is not one of" in checked.stdout
    assert "2501 invalid row(s)" in checked.stdout


def test_check_says_how_it_read_the_sheet_and_flags_override_it(tmp_path: Path) -> None:
    text = "Campaign notes\n\nprompt,Image URL,Aspect ratio,Resolutoin\n"
    text += f"Кроссовки на беговой дорожке крупным планом,{IMAGE},9:16,720p\n" * 3
    sheet = tmp_path / "ads.csv"
    sheet.write_bytes(text.encode("cp1251"))

    checked = run_cli(["check", sheet], None)
    flagged = run_cli(
        ["check", sheet, "--ignore-column", "resolutoin", "--encoding", "cp1251"], None
    )
    fixed_row = run_cli(["check", sheet, "--header-row", "1", "--encoding", "cp1251"], None)

    assert checked.returncode == 1, checked.stdout + checked.stderr
    assert "read: header row 3; encoding cp1251 (detected)" in checked.stdout
    assert "'Aspect ratio' → ratio (synonym)" in checked.stdout
    assert "'Resolutoin' resembles resolution (typo)" in checked.stdout
    assert "1 header(s) need your word" in checked.stdout
    assert flagged.returncode == 0, flagged.stdout
    assert "encoding cp1251 (given)" in flagged.stdout
    assert "ignored (the team's own): 'Resolutoin'" in flagged.stdout
    assert fixed_row.returncode == 2
    assert "row 1 was read as the header: 'Campaign notes'" in fixed_row.stderr
