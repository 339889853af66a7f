"""Sheets as office programs save them, through the real CLI and the simulator over HTTP.

The workbook, CSVs and lock file in tests/files were saved by LibreOffice (see its README.md
and make_office_files.py); the rest are built here with XlsxWriter, a shared formula by
patching an XlsxWriter file's XML as Excel writes a fill-down (neither LibreOffice nor
XlsxWriter writes one).
"""

from __future__ import annotations

import re
import shutil
import zipfile
from pathlib import Path

import pytest
import xlsxwriter
from openpyxl import load_workbook

from batchgen.simulator import SimulatorServer
from tests.files.make_office_files import CSVS
from tests.helpers import IMAGE, run_cli

FILES = Path(__file__).parent / "files"
TEAM = ["Status", "Request ID", "Video URL", "ERROR", "Owner"]
OURS = ["batchgen request_id", "batchgen status", "batchgen video_url", "batchgen error"]


def office_file(tmp_path: Path, name: str) -> Path:
    """A copy of a committed LibreOffice-saved file, to run on."""
    return Path(shutil.copyfile(FILES / name, tmp_path / name))


def last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    assert lines, "no output"
    return lines[-1]


def prompts_sent(sim: SimulatorServer) -> list[str]:
    return sorted(s.payload["prompt"] for s in sim.simulator.submissions())


def test_a_libreoffice_workbook_with_a_cover_sheet_title_and_group_headers(
    tmp_path: Path, sim: SimulatorServer
) -> None:
    book = office_file(tmp_path, "team_ads.xlsx")
    before = book.read_bytes()

    cover = run_cli(["run", book], sim)  # "Read me" is the first worksheet
    group_row = run_cli(["check", book, "--sheet", "Ads", "--header-row", "3"], sim)
    checked = run_cli(["check", book, "--sheet", "Ads"], sim)

    assert cover.returncode == 2 and book.read_bytes() == before
    line = last_line(cover.stderr)
    assert "missing required columns 'prompt', 'first_frame_image_url'" in line
    assert "row 1 was read as the header: 'How to fill in the Ads sheet'" in line
    assert "other worksheets: 'Ads', 'Draft'" in line
    assert group_row.returncode == 2
    assert "header row 3 was read as the header: 'Model inputs', 'Team'" in group_row.stderr
    assert sim.simulator.submissions() == []
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "read: worksheet 'Ads', header row 4" in checked.stdout
    assert "'Aspect ratio' → ratio (synonym), 'Duration (s)' → duration (unit)" in checked.stdout
    assert "results go to 'batchgen request_id' (new, column J)" in checked.stdout
    assert "'Request ID', 'Status', 'Video URL', 'ERROR' hold(s) what the team typed" in (
        checked.stdout
    )

    result = run_cli(["run", book, "--sheet", "Ads", "--header-row", "4"], sim)
    again = run_cli(["run", book, "--sheet", "Ads"], sim)

    assert result.returncode == 0, result.stderr
    assert "'Aspect ratio' → ratio" in result.stderr and "left as they are" in result.stderr
    assert again.returncode == 0, again.stderr
    sent = sorted(
        (s.payload["prompt"], s.payload["ratio"], s.payload["duration"])
        for s in (sim.simulator.submissions())
    )
    assert sent == [
        ("Coffee cup by the window, slow push-in", "1:1", 8),
        ("Sneaker on a running track, morning light", "9:16", 8),
        ("Watch on a wrist, turning, black background", "16:9", 8),
    ]
    wb = load_workbook(book)
    assert wb.sheetnames[:3] == ["Read me", "Ads", "Draft"]
    assert wb["Read me"]["A1"].value == "How to fill in the Ads sheet"
    ads = wb["Ads"]
    assert ads["A1"].value == "Summer campaign 2026 — video ads"
    assert {str(r) for r in ads.merged_cells.ranges} == {"A1:I1", "A3:D3", "E3:I3"}
    assert [c.value for c in ads[4]] == [
        "Prompt",
        "Image URL",
        "Aspect ratio",
        "Duration (s)",
        *TEAM,
        *OURS,
    ]
    team = [[ads.cell(r, c).value for c in range(5, 10)] for r in (5, 6, 7)]
    assert team == [
        ["approved", "REQ-12", "https://drive.example.com/reference-1.mp4", None, "ana"],
        ["draft", "REQ-13", "https://drive.example.com/reference-2.mp4", "brief has a typo", "ben"],
        ["on hold", "REQ-14", "https://drive.example.com/reference-3.mp4", None, "ana"],
    ]
    assert [ads.cell(r, 11).value for r in (5, 6, 7)] == ["completed"] * 3
    assert all(ads.cell(r, 12).value.startswith("http") for r in (5, 6, 7))
    assert ads.cell(3, 11).value is None  # nothing above the header


def test_a_missing_column_names_the_nearest_header(tmp_path: Path, sim: SimulatorServer) -> None:
    path = tmp_path / "ads.xlsx"
    book = xlsxwriter.Workbook(str(path), {"strings_to_urls": False})
    ws = book.add_worksheet("Ads")
    ws.write_row(0, 0, ["Promt", "First frame", "Notes"])
    ws.write_row(1, 0, ["Sneaker on a track", IMAGE, "keep"])
    book.close()

    refused = run_cli(["run", path], sim)

    assert refused.returncode == 2
    line = last_line(refused.stderr)
    assert "missing required column 'prompt'; no row names them" in line
    assert "row 1 was read as the header: 'Promt', 'First frame', 'Notes'" in line
    assert "nearest: prompt ~ 'Promt'" in line
    assert sim.simulator.submissions() == []


def test_headers_that_only_resemble_a_field_wait_for_the_users_word(
    tmp_path: Path, sim: SimulatorServer
) -> None:
    book = office_file(tmp_path, "team_ads.xlsx")
    job = tmp_path / "job.toml"
    head = 'sheet = "team_ads.xlsx"\nsheet_name = "Draft"\n'

    checked = run_cli(["check", book, "--sheet", "Draft"], sim)
    refused = run_cli(["run", book, "--sheet", "Draft"], sim)
    job.write_text(head + '[columns]\nresolution = "Resolution"\n')
    no_header = run_cli(["run", job], sim)
    job.write_text(head + '[columns]\nresolution = "Resolutoin"\n[defaults]\ndurration = 7\n')
    no_default = run_cli(["run", job], sim)

    assert checked.returncode == 1, checked.stdout + checked.stderr
    assert "'Resolutoin' resembles resolution (typo)" in checked.stdout
    assert "'Duration (min)' resembles duration (unit 'min'; batchgen sends seconds)" in (
        checked.stdout
    )
    assert "2 header(s) need your word" in checked.stdout
    assert refused.returncode == 2 and "nothing was sent" in last_line(refused.stderr)
    assert no_header.returncode == 2
    assert "[columns] resolution = 'Resolution'" in no_header.stderr
    assert "nearest: 'Resolutoin'" in no_header.stderr
    assert no_default.returncode == 2
    assert "[defaults] durration: no such role or model field; nearest: 'duration'" in (
        no_default.stderr
    )
    assert sim.simulator.submissions() == []

    job.write_text(head + '[columns]\nresolution = "Resolutoin"\n')
    result = run_cli(["run", job, "--ignore-column", "duration (MIN)"], sim)

    assert result.returncode == 0, result.stderr
    sent = [s.payload for s in sim.simulator.submissions()]
    assert len(sent) == 2 and all(p["resolution"] == "720p" for p in sent)
    assert all(p.get("duration", 5) == 5 for p in sent)  # 1 (minute) never sent as 1 s
    draft = load_workbook(book)["Draft"]
    assert [draft.cell(r, 4).value for r in (2, 3)] == [1, 1]


# how Python reads each file back (cp932 is Shift-JIS as Windows extends it)
CODECS = {
    "ads_cp1251.csv": "cp1251",
    "ads_shift_jis.csv": "cp932",
    "ads_cp1252.csv": "cp1252",
    "ads_utf16.csv": "utf-16",
}


@pytest.mark.parametrize("name", sorted(CODECS))
def test_a_libreoffice_csv_reaches_the_api_as_typed_and_is_written_back_in_its_encoding(
    tmp_path: Path, sim: SimulatorServer, name: str
) -> None:
    sheet = office_file(tmp_path, name)
    original = sheet.read_bytes()
    codec = CODECS[name]
    spec = CSVS[name]
    sep = "\t" if spec["sep"] == "9" else spec["sep"]

    checked = run_cli(["check", sheet], sim)
    result = run_cli(["run", sheet], sim)

    assert checked.returncode == 0, checked.stdout + checked.stderr
    how = "utf-16-le with BOM (byte-order mark)" if codec == "utf-16" else f"{codec} (detected)"
    assert f"encoding {how}" in checked.stdout
    assert result.returncode == 0, result.stderr
    assert prompts_sent(sim) == sorted(row[0] for row in spec["rows"])
    data = sheet.read_bytes()
    assert data[:2] == original[:2]  # UTF-16's byte-order mark stays; no UTF-8 one appears
    old_lines = original.decode(codec).splitlines()
    new_lines = data.decode(codec).splitlines()
    assert new_lines[0] == sep.join([old_lines[0], "request_id", "status", "video_url", "error"])
    for old, new in zip(old_lines[1:], new_lines[1:], strict=True):
        assert new.startswith(old + sep)  # the author's cells, the team's column, as they were
        assert f"{sep}completed{sep}" in new
    results = tmp_path / name.replace(".csv", ".results.csv")
    assert sorted(r[0] for r in spec["rows"])[0] in results.read_bytes().decode(codec)


def test_a_csv_whose_encoding_cannot_be_told_is_refused_until_named(
    tmp_path: Path, sim: SimulatorServer
) -> None:
    sheet = office_file(tmp_path, "ads_cp1251_unsure.csv")

    checked = run_cli(["check", sheet], sim)
    refused = run_cli(["run", sheet], sim)

    for result in (checked, refused):
        assert result.returncode == 2
        line = last_line(result.stderr)
        assert "cannot tell its text encoding" in line and 'cp1251 reads "КРОССОВКИ,' in line
        assert "--encoding" in line and "nothing was sent" in line
    assert sim.simulator.submissions() == []

    result = run_cli(["run", sheet, "--encoding", "cp1251"], sim)

    assert result.returncode == 0, result.stderr
    assert prompts_sent(sim) == ["КРОССОВКИ", "ЧАСЫ"]
    assert sheet.read_bytes().decode("cp1251").splitlines()[1].startswith(f"КРОССОВКИ,{IMAGE},")


def excel_owner_file(user: str, code_page: str) -> bytes:
    """Excel's ~$ owner file: a length byte, the name in the Windows code page padded to
    54 bytes, then the name again in UTF-16."""
    ansi = user.encode(code_page)
    head = bytes([len(ansi)]) + ansi.ljust(53, b" ")
    return head + len(user).to_bytes(2, "little") + user.encode("utf-16-le") + b"\x00" * 50


@pytest.mark.parametrize(
    ("name", "lock_name", "said"),
    [
        ("team_ads.xlsx", ".~lock.team_ads.xlsx#", "open in LibreOffice by Ana Lima ("),
        ("ads_cp1251.csv", "~$ads_cp1251.csv", "open in Excel by Олег"),
    ],
)
def test_a_sheet_open_in_an_office_program_stops_the_run_with_75(
    tmp_path: Path, sim: SimulatorServer, name: str, lock_name: str, said: str
) -> None:
    sheet = office_file(tmp_path, name)
    before = sheet.read_bytes()
    lock = tmp_path / lock_name
    if lock_name.startswith(".~lock"):  # the lock file LibreOffice itself left
        shutil.copyfile(FILES / "libreoffice.lock", lock)
    else:
        lock.write_bytes(excel_owner_file("Олег", "cp1251"))  # a Russian Windows
    args = ["--sheet", "Ads"] if name.endswith(".xlsx") else []

    checked = run_cli(["check", sheet, *args], sim)
    refused = run_cli(["run", sheet, *args], sim)

    assert checked.returncode == 0 and said in checked.stdout
    assert refused.returncode == 75, refused.stderr
    line = last_line(refused.stderr)
    assert said in line and lock_name in line and "close it" in line and "--output" in line
    assert sim.simulator.submissions() == [] and sheet.read_bytes() == before


def shared_formula_book(path: Path, *, in_status: bool) -> Path:
    """An XlsxWriter workbook whose formulas are made an Excel fill-down (a shared formula).

    The team's `Owner` column is always a fill-down; with `in_status`, so is a `status`
    column showing batchgen's own word, which a run would take over.
    """
    book = xlsxwriter.Workbook(str(path))
    ws = book.add_worksheet("Ads")
    ws.write_row(0, 0, ["prompt", "first_frame_image_url", "Owner", "status"])
    for i in range(3):
        ws.write_row(i + 1, 0, [f"Shoe {i} on a pedestal", IMAGE])
        ws.write_formula(i + 1, 2, '=UPPER("ana")', None, "ANA")
        if in_status:
            ws.write_formula(i + 1, 3, f'=IF(A{i + 2}<>"","pending","")', None, "pending")
    book.close()
    part = "xl/worksheets/sheet1.xml"
    with zipfile.ZipFile(path) as zf:
        parts = {n: zf.read(n) for n in zf.namelist()}
    xml = parts[part].decode()
    for si, col in enumerate("CD"):
        xml = re.sub(
            rf'(<c r="{col}2"[^>]*>)<f>',
            rf'\1<f t="shared" ref="{col}2:{col}4" si="{si}">',
            xml,
        )
        xml = re.sub(rf'(<c r="{col}[34]"[^>]*>)<f>[^<]*</f>', rf'\1<f t="shared" si="{si}"/>', xml)
    parts[part] = xml.encode()
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in parts.items():
            zf.writestr(name, data)
    return path


def test_a_shared_formula_in_an_output_column_is_found_before_anything_is_paid(
    tmp_path: Path, sim: SimulatorServer
) -> None:
    book = shared_formula_book(tmp_path / "ads.xlsx", in_status=True)
    with zipfile.ZipFile(book) as zf:
        assert zf.read("xl/worksheets/sheet1.xml").count(b't="shared"') == 6
    before = book.read_bytes()

    checked = run_cli(["check", book], sim)
    refused = run_cli(["run", book], sim)

    assert checked.returncode == 1, checked.stdout + checked.stderr
    assert "a run could not write its results back" in checked.stdout
    assert "cell D2" in checked.stdout and "shared or array formula" in checked.stdout
    assert refused.returncode == 2
    assert "shared or array formula" in last_line(refused.stderr)
    assert sim.simulator.submissions() == [] and book.read_bytes() == before

    team_only = shared_formula_book(tmp_path / "team.xlsx", in_status=False)
    result = run_cli(["run", team_only], sim)

    assert result.returncode == 0, result.stderr
    with zipfile.ZipFile(team_only) as zf:
        xml = zf.read("xl/worksheets/sheet1.xml").decode()
    assert '<f t="shared" ref="C2:C4" si="0">' in xml and xml.count('<f t="shared" si="0"/>') == 2
    ws = load_workbook(team_only)["Ads"]
    assert [ws.cell(r, 4).value for r in (2, 3, 4)] == ["completed"] * 3


def test_a_teams_own_video_url_and_request_id_columns_in_any_case_are_kept(
    tmp_path: Path, sim: SimulatorServer
) -> None:
    path = tmp_path / "ads.xlsx"
    book = xlsxwriter.Workbook(str(path), {"strings_to_urls": False})
    ws = book.add_worksheet("Ads")
    ws.write_row(0, 0, ["prompt", "first_frame_image_url", "VIDEO_URL", "request_ID"])
    refs = [f"https://drive.example.com/reference-{i}.mp4" for i in range(3)]
    for i, ref in enumerate(refs):
        ws.write_row(i + 1, 0, [f"Shoe {i} on a pedestal", IMAGE, ref, f"brief-{i}"])
    book.close()

    checked = run_cli(["check", path], sim)
    result = run_cli(["run", path], sim)

    assert "'request_ID', 'VIDEO_URL' hold(s) what the team typed" in checked.stdout
    assert result.returncode == 0, result.stderr
    ws2 = load_workbook(path)["Ads"]
    assert [c.value for c in ws2[1]][2:] == ["VIDEO_URL", "request_ID", *OURS]
    assert [ws2.cell(r, 3).value for r in (2, 3, 4)] == refs
    assert [ws2.cell(r, 4).value for r in (2, 3, 4)] == ["brief-0", "brief-1", "brief-2"]
    assert [ws2.cell(r, 6).value for r in (2, 3, 4)] == ["completed"] * 3


def test_a_read_only_file_or_folder_is_found_by_check_and_refused_before_paying(
    tmp_path: Path, sim: SimulatorServer
) -> None:
    folder = tmp_path / "shared"
    folder.mkdir()
    book = office_file(folder, "team_ads.xlsx")
    sheet = office_file(folder, "ads_cp1252.csv")
    book.chmod(0o444)
    folder.chmod(0o555)
    try:
        checks = [run_cli(["check", book, "--sheet", "Ads"], sim), run_cli(["check", sheet], sim)]
        runs = [run_cli(["run", book, "--sheet", "Ads"], sim), run_cli(["run", sheet], sim)]
        elsewhere = run_cli(["run", sheet, "--output", tmp_path / "out.csv"], sim)
    finally:
        folder.chmod(0o755)

    for result, said in zip(checks, ("is read-only", "the folder is read-only"), strict=True):
        assert result.returncode == 1, result.stdout + result.stderr
        assert "error: a run could not write its results back" in result.stdout
        assert said in result.stdout
    for result, said in zip(runs, ("is read-only", "the folder is read-only"), strict=True):
        assert result.returncode == 2 and said in last_line(result.stderr)
    assert elsewhere.returncode == 0, elsewhere.stderr
    assert prompts_sent(sim) == sorted(r[0] for r in CSVS["ads_cp1252.csv"]["rows"])
    assert book.read_bytes() == (FILES / "team_ads.xlsx").read_bytes()
    assert sheet.read_bytes() == (FILES / "ads_cp1252.csv").read_bytes()


def test_check_output_on_a_large_workbook_is_bounded(tmp_path: Path) -> None:
    path = tmp_path / "ads.xlsx"
    book = xlsxwriter.Workbook(str(path), {"constant_memory": True})
    ws = book.add_worksheet("Ads")
    ws.write_row(0, 0, ["prompt", "first_frame_image_url", "duration"])
    for i in range(3000):
        ws.write_row(i + 1, 0, [f"Product {i} on a pedestal", IMAGE, 15 if i % 2 else 6])
    book.close()

    checked = run_cli(["check", path], None)

    assert checked.returncode == 1
    lines = checked.stdout.splitlines()
    assert len(lines) < 10, lines
    assert any(
        ln.startswith("error: column 'duration'")
        and ln.endswith("duration 15 is outside 4–12: rows 3, 5, 7 … (1,500 rows)")
        for ln in lines
    ), lines
    assert "1500 invalid row(s)" in checked.stdout
