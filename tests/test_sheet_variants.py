"""Several jobs in one row: every line names its job, the cells wrap, the results say where from."""

from __future__ import annotations

import io
import re
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest
import xlsxwriter
from openpyxl import load_workbook

from batchgen.simulator import Simulator, SimulatorServer
from tests.helpers import (
    IMAGE,
    fast_config,
    ledger_rows,
    read_csv,
    run_cli,
    write_csv,
)

FILES = Path(__file__).parent / "files"
OUTPUTS = ["request_id", "status", "video_url", "error"]
ROWS = [  # prompt, ratio, resolution, takes
    ("Sneaker on a pedestal", "9:16|1:1", "720p", ""),
    ("Watch on a wrist", "9:16|16:9", "480p|720p", ""),
    ("Bag on a bench", "16:9", "480p", 2),
    ("Cap on a shelf", "1:1", "480p", ""),
]
NAMES = [
    ["9:16", "1:1"],
    ["9:16, 480p", "16:9, 480p", "9:16, 720p", "16:9, 720p"],
    ["take 1", "take 2"],
    [""],
]


def _rows() -> list[dict[str, object]]:
    return [
        {
            "prompt": prompt,
            "first_frame_image_url": IMAGE,
            "ratio": ratio,
            "resolution": resolution,
            "takes": takes,
            "variant": f"Spring {i}",  # the team's own column of that name
        }
        for i, (prompt, ratio, resolution, takes) in enumerate(ROWS, start=1)
    ]


def _named(cell: str) -> list[tuple[str, str]]:
    """A multi-line output cell as (job name, value) per line."""
    return [tuple(line.split(": ", 1)) for line in cell.split("\n")]  # type: ignore[misc]


def _xlsxwriter_book(path: Path) -> Path:
    """The ads written by XlsxWriter, its output columns formatted by the team beforehand."""
    book = xlsxwriter.Workbook(str(path))
    ws = book.add_worksheet("Ads")
    bold = book.add_format({"bold": True})
    yellow = book.add_format({"bg_color": "#FFF2CC", "border": 1})
    top = book.add_format({"bg_color": "#E2EFDA", "valign": "top"})
    headers = list(_rows()[0])
    ws.write_row(0, 0, [*headers, *OUTPUTS], bold)
    for i, row in enumerate(_rows(), start=1):
        ws.write_row(i, 0, [row[h] for h in headers])
        for column in range(len(headers), len(headers) + 4):
            ws.write_blank(i, column, None, top if column == len(headers) + 1 else yellow)
    book.add_worksheet("Notes").write(0, 0, "keep me")
    book.close()
    return path


def _parts(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(path.read_bytes())) as zf:
        return {name: zf.read(name) for name in zf.namelist()}


def _cell_xfs(styles: bytes) -> list[str]:
    block = re.search(rb"<cellXfs[^>]*>(.*)</cellXfs>", styles, re.S)
    assert block is not None
    return re.findall(r"<xf\b.*?(?:/>|</xf>)", block.group(1).decode(), re.S)


def test_each_line_names_its_job_and_the_results_name_the_worksheet_and_variant(
    tmp_path: Path, sim: SimulatorServer
) -> None:
    sheet = write_csv(tmp_path / "ads.csv", _rows())

    result = run_cli(["run", sheet], sim)

    assert result.returncode == 0, result.stderr
    out = read_csv(sheet)
    for row, names in zip(out[:3], NAMES[:3], strict=True):
        assert row["status"].split("\n") == [f"{n}: completed" for n in names]
        assert [n for n, _ in _named(row["request_id"])] == names
        urls = _named(row["video_url"])
        assert [n for n, _ in urls] == names and all(u.startswith("http") for _, u in urls)
        assert row["error"] == ""
    assert out[3]["status"] == "completed"  # a row's only job: bare lines, as before
    assert "\n" not in out[3]["request_id"] and ": " not in out[3]["request_id"]
    assert [r["variant"] for r in out] == [f"Spring {i}" for i in range(1, 5)]  # the team's
    results = read_csv(tmp_path / "ads.results.csv")
    assert list(results[0])[:6] == [
        "batchgen worksheet",
        "row",
        "model",
        "job_id",
        "batchgen variant",
        "take",
    ]
    assert {r["batchgen worksheet"] for r in results} == {"ads.csv"}
    assert [r["batchgen variant"] for r in results] == [n for names in NAMES for n in names]
    # each results row's request_id is the one its variant's line shows in the sheet
    shown = {
        (n, name): rid
        for n, row in enumerate(out, start=2)
        for name, rid in (_named(row["request_id"]) if "\n" in row["request_id"] else [])
    }
    for r in results[:8]:
        assert shown[(int(r["row"]), r["batchgen variant"])] == r["request_id"]


@pytest.mark.parametrize("kind", ["csv", "xlsx"])
def test_a_lost_ledger_and_results_table_adopt_each_line_by_its_name(
    tmp_path: Path, sim: SimulatorServer, kind: str
) -> None:
    sheet = (
        write_csv(tmp_path / "ads.csv", _rows())
        if kind == "csv"
        else _xlsxwriter_book(tmp_path / "ads.xlsx")
    )
    db = tmp_path / "ads.db"
    assert run_cli(["run", sheet, "--db", db], sim).returncode == 0
    paid = len(sim.simulator.submissions())
    assert paid == 9
    before = _request_ids(sheet, kind)[0]
    # the ledger is lost, and so is the results table: only the cells' lines remain; the
    # first row's variants are reordered and one changed (9:16|1:1 -> 1:1|16:9)
    db.unlink()
    _set_ratio(sheet, kind, "1:1|16:9")

    rerun = run_cli(["run", sheet, "--db", db], sim)

    assert rerun.returncode == 0, rerun.stderr
    assert "rebuilt the ledger from the sheet: 8 job(s)" in rerun.stderr
    sent = sim.simulator.submissions()
    assert len(sent) == paid + 1  # only 16:9 is new; 1:1 kept its id though its line moved
    assert sent[-1].payload["ratio"] == "16:9"
    after = _request_ids(sheet, kind)[0]
    assert [n for n, _ in after] == ["1:1", "16:9"]
    assert after[0] == before[1]
    db.unlink()

    again = run_cli(["run", sheet, "--db", db], sim)

    assert again.returncode == 0, again.stderr
    assert len(sim.simulator.submissions()) == paid + 1  # nothing paid twice
    assert {r["state"] for r in ledger_rows(db)} == {"completed"}


def _request_ids(sheet: Path, kind: str) -> list[list[tuple[str, str]]]:
    """Each multi-job row's request_id lines as (name, id)."""
    if kind == "csv":
        cells = [r["request_id"] for r in read_csv(sheet)]
    else:
        ws = load_workbook(sheet)["Ads"]
        column = [c.value for c in ws[1]].index("request_id")
        cells = [str(r[column].value or "") for r in ws.iter_rows(min_row=2)]
    return [_named(c) for c in cells if "\n" in c]


def _set_ratio(sheet: Path, kind: str, ratio: str) -> None:
    """A person edits the first row's ratio cell, and the results table is gone."""
    if kind == "csv":
        rows = read_csv(sheet)
        rows[0]["ratio"] = ratio
        write_csv(sheet, rows)
        sheet.with_name("ads.results.csv").unlink()
        return
    book = load_workbook(sheet)
    book["Ads"]["C2"] = ratio
    del book["batchgen_results"]
    book.save(sheet)


def test_cells_written_by_older_versions_are_read_back_and_nothing_is_paid_twice(
    tmp_path: Path, sim: SimulatorServer
) -> None:
    # older versions: bare lines for one model; `model, duration=5: ` for several, and a
    # `model: ` line with nothing after it for a job with no request_id yet
    rows = [
        {"prompt": "Sneaker", "first_frame_image_url": IMAGE, "duration": "5|6"},
        {"prompt": "Watch", "first_frame_image_url": IMAGE, "duration": "5"},
    ]
    single, multi = tmp_path / "one", tmp_path / "two"
    single.mkdir()
    multi.mkdir()
    one = write_csv(single / "ads.csv", rows)
    two = write_csv(multi / "ads.csv", rows)
    models = "seedance-1.5-pro-i2v|kling-3.0-pro-i2v"
    assert run_cli(["run", one, "--db", single / "ads.db"], sim).returncode == 0
    assert run_cli(["run", two, "--db", multi / "ads.db", "--model", models], sim).returncode == 0
    paid = len(sim.simulator.submissions())
    assert paid == 3 + 6

    old = read_csv(one)
    for name in OUTPUTS:
        old[0][name] = re.sub(r"(?m)^\d+s: ", "", old[0][name])
    write_csv(one, old)
    old = read_csv(two)
    for row in old:
        for name in OUTPUTS:
            row[name] = re.sub(r"(?m), (\d+)s: ", r", duration=\1: ", row[name])
    # row 2's last job as an older version showed one never submitted
    last = "kling-3.0-pro-i2v, duration=6"
    old[0]["request_id"] = re.sub(f"(?m)^{re.escape(last)}: .*$", f"{last}: ", old[0]["request_id"])
    old[0]["status"] = old[0]["status"].replace(f"{last}: completed", f"{last}: pending")
    old[0]["video_url"] = re.sub(f"(?m)^{re.escape(last)}: .*$", f"{last}: ", old[0]["video_url"])
    write_csv(two, old)
    assert old[0]["request_id"].split("\n")[0].startswith("seedance-1.5-pro-i2v, duration=5: ")
    for folder in (single, multi):
        (folder / "ads.db").unlink()
        (folder / "ads.results.csv").unlink()

    first = run_cli(["run", one, "--db", single / "ads.db"], sim)
    second = run_cli(["run", two, "--db", multi / "ads.db", "--model", models], sim)

    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    assert "rebuilt the ledger from the sheet: 3 job(s)" in first.stderr
    assert "rebuilt the ledger from the sheet: 5 job(s)" in second.stderr
    sent = sim.simulator.submissions()
    assert len(sent) == paid + 1  # only the job the old cells showed unsubmitted
    assert sent[-1].model_id == "kling/kling-3.0/pro/image-to-video"
    assert sent[-1].payload["duration"] == 6
    out = read_csv(two)[0]
    assert "batchgen status" not in out  # the older lines were recognised as batchgen's
    assert out["status"].split("\n") == [
        f"{m}, {d}s: completed"
        for m in ("seedance-1.5-pro-i2v", "kling-3.0-pro-i2v")
        for d in (5, 6)
    ]
    assert read_csv(one)[0]["status"].split("\n") == ["5s: completed", "6s: completed"]


def test_older_error_lines_in_brackets_are_read_back(tmp_path: Path) -> None:
    sheet = write_csv(tmp_path / "ads.csv", [{"prompt": "p", "first_frame_image_url": IMAGE}])
    rows = read_csv(sheet)
    rows[0]["ratio"] = "9:16|1:1"
    write_csv(sheet, rows)
    db = tmp_path / "ads.db"
    with SimulatorServer(Simulator(fast_config(failure_rate=1.0))) as server:
        assert run_cli(["run", sheet, "--db", db], server).returncode == 1
        errors = [r["error"] for r in ledger_rows(db)]
        old = read_csv(sheet)
        # as older versions wrote a failed row: bare lines, errors prefixed `[ratio=9:16] `
        old[0]["status"] = "failed\nfailed"
        old[0]["request_id"] = re.sub(r"(?m)^[\d:]+: ", "", old[0]["request_id"])
        old[0]["error"] = re.sub(r"(?m)^([\d:]+): ", r"[ratio=\1] ", old[0]["error"])
        assert old[0]["error"].startswith("[ratio=9:16] ")
        write_csv(sheet, old)
        db.unlink()
        (tmp_path / "ads.results.csv").unlink()

        rerun = run_cli(["run", sheet, "--db", db], server)

        assert rerun.returncode == 1  # the jobs stay failed; rerun --retry-failed to pay again
        assert len(server.simulator.submissions()) == 2
        assert sorted(r["error"] for r in ledger_rows(db)) == sorted(errors)
        assert read_csv(sheet)[0]["error"].split("\n")[0].startswith("9:16: ")


def test_multi_line_cells_wrap_in_a_copy_of_their_own_style_and_nothing_else_changes(
    tmp_path: Path, sim: SimulatorServer
) -> None:
    sheet = _xlsxwriter_book(tmp_path / "ads.xlsx")
    before = _parts(sheet)

    result = run_cli(["run", sheet], sim)

    assert result.returncode == 0, result.stderr
    after = _parts(sheet)
    ours = {
        "xl/worksheets/sheet1.xml",
        "xl/styles.xml",
        "xl/workbook.xml",
        "xl/_rels/workbook.xml.rels",
        "[Content_Types].xml",
    }
    assert {n: b for n, b in before.items() if n not in ours} == {
        n: b for n, b in after.items() if n in before and n not in ours
    }
    old_xfs, new_xfs = _cell_xfs(before["xl/styles.xml"]), _cell_xfs(after["xl/styles.xml"])
    # one copy per distinct style of a multi-line cell: the yellow one and the top-aligned
    assert new_xfs[: len(old_xfs)] == old_xfs and len(new_xfs) == len(old_xfs) + 2
    assert all('wrapText="1"' in xf for xf in new_xfs[len(old_xfs) :])
    assert f'<cellXfs count="{len(new_xfs)}"'.encode() in after["xl/styles.xml"]
    ws = load_workbook(sheet)["Ads"]
    for row in ws.iter_rows(min_row=2, min_col=7, max_col=10):
        multi = "\n" in str(row[1].value)
        assert [c.alignment.wrap_text or False for c in row] == [multi, multi, multi, False]
        yellow, green = "FFFFF2CC", "FFE2EFDA"
        assert [c.fill.fgColor.rgb for c in row] == [yellow, green, yellow, yellow]
        assert row[1].alignment.vertical == "top"  # the cell's own alignment is kept
    assert [c.value for c in load_workbook(sheet)["batchgen_results"][1]][:2] == [
        "batchgen worksheet",
        "row",
    ]

    again = run_cli(["run", sheet], sim)

    assert again.returncode == 0, again.stderr
    assert _parts(sheet)["xl/styles.xml"] == after["xl/styles.xml"]  # no copy of a copy


def test_a_workbook_saved_by_libreoffice_wraps_and_opens_in_libreoffice(
    tmp_path: Path, sim: SimulatorServer
) -> None:
    sheet = tmp_path / "ads.xlsx"
    shutil.copyfile(FILES / "libreoffice_variants.xlsx", sheet)

    result = run_cli(["run", sheet], sim)

    assert result.returncode == 0, result.stderr
    book = load_workbook(sheet)
    ws = book["Ads"]
    status = [c.value for c in ws[1]].index("status")
    cells = [row[status] for row in ws.iter_rows(min_row=2)]
    assert cells[0].value == "9:16: completed\n1:1: completed"
    assert [c.alignment.wrap_text or False for c in cells] == [True, True, True, False]
    assert all(c.alignment.vertical == "top" and c.font.i for c in cells)
    results = book["batchgen_results"]
    header = [c.value for c in results[1]]
    column = header.index("batchgen worksheet")
    assert {r[column].value for r in results.iter_rows(min_row=2)} == {"Ads"}
    if shutil.which("soffice") is None:
        pytest.skip("LibreOffice (soffice) is not installed: the opening check is left out")
    profile = f"-env:UserInstallation=file://{tmp_path / 'profile'}"
    subprocess.run(
        [
            "soffice",
            profile,
            "--headless",
            "--convert-to",
            "csv",
            "--outdir",
            tmp_path / "lo",
            sheet,
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    seen = read_csv(tmp_path / "lo" / "ads.csv")
    assert seen[0]["status"] == "9:16: completed\n1:1: completed"
    assert seen[1]["status"].split("\n")[0] == "9:16, 480p: completed"


def test_a_workbook_without_a_styles_part_gets_one_so_its_cells_wrap(
    tmp_path: Path, sim: SimulatorServer
) -> None:
    # as some minimal generators write it: no xl/styles.xml, every cell plain
    made = tmp_path / "made.xlsx"
    book = xlsxwriter.Workbook(str(made))
    ws = book.add_worksheet("Ads")
    ws.write_row(0, 0, ["prompt", "first_frame_image_url", "ratio"])
    ws.write_row(1, 0, ["Sneaker", IMAGE, "9:16|1:1"])
    ws.write_row(2, 0, ["Watch", IMAGE, "1:1"])
    book.close()
    parts = _parts(made)
    del parts["xl/styles.xml"]
    parts["xl/_rels/workbook.xml.rels"] = re.sub(
        rb"<Relationship [^>]*styles\.xml\"/>", b"", parts["xl/_rels/workbook.xml.rels"]
    )
    parts["[Content_Types].xml"] = re.sub(
        rb"<Override PartName=\"/xl/styles\.xml\"[^>]*/>", b"", parts["[Content_Types].xml"]
    )
    sheet = tmp_path / "ads.xlsx"
    with zipfile.ZipFile(sheet, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in parts.items():
            zf.writestr(name, data)
    assert b"styles" not in parts["[Content_Types].xml"]

    result = run_cli(["run", sheet], sim)

    assert result.returncode == 0, result.stderr
    after = _parts(sheet)
    assert (
        b'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.styles'
        in (after["[Content_Types].xml"])
    )
    assert len(_cell_xfs(after["xl/styles.xml"])) == 2  # the plain style, and it wrapping
    ws2 = load_workbook(sheet)["Ads"]
    status = [c.value for c in ws2[1]].index("status")
    cells = [row[status] for row in ws2.iter_rows(min_row=2)]
    assert cells[0].value == "9:16: completed\n1:1: completed"
    assert [c.alignment.wrap_text or False for c in cells] == [True, False]
