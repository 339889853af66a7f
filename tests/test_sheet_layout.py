"""Results never land in hidden columns or merged ranges, nor in a protected sheet's locked
cells; a sheet without a column left for them is refused before anything is paid.

Workbooks come from XlsxWriter, and from LibreOffice (files in tests/files, see its README).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import xlsxwriter
from openpyxl import load_workbook

from batchgen.simulator import SimulatorServer
from tests.helpers import IMAGE, ad_rows, cli_env, run_cli, write_csv

FILES = Path(__file__).parent / "files"
REFUSED = "a run could not write its results back"


def _book(path: Path, shape: Callable[[Any, Any], None], rows: int = 3) -> Path:
    """An XlsxWriter workbook: prompt, image, notes, then `shape` (hide, merge, protect)."""
    book = xlsxwriter.Workbook(str(path))
    ws = book.add_worksheet("Ads")
    ws.write_row(0, 0, ["prompt", "first_frame_image_url", "notes"])
    for i in range(rows):
        ws.write_row(i + 1, 0, [f"Shoe {i} spins on a pedestal", IMAGE, f"note {i}"])
    shape(book, ws)
    book.close()
    return path


def _refused_before_paying(path: Path, sim: SimulatorServer, *words: str) -> None:
    """check exits 1 and run exits 2 naming `words`; nothing submitted, the file unchanged."""
    before = path.read_bytes()
    checked = run_cli(["check", path], sim)
    refused = run_cli(["run", path], sim)
    assert checked.returncode == 1, checked.stdout + checked.stderr
    assert REFUSED in checked.stdout
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr  # one line, no traceback
    for word in words:
        assert word in checked.stdout and word in refused.stderr, (checked.stdout, refused.stderr)
    assert sim.simulator.submissions() == []
    assert path.read_bytes() == before


def test_new_output_columns_go_past_hidden_columns_and_a_merged_note(
    tmp_path: Path, sim: SimulatorServer
) -> None:
    def shape(book: Any, ws: Any) -> None:
        ws.set_column("D:E", None, None, {"hidden": True})  # unused columns tidied away
        ws.merge_range("F3:G3", "ask Dana about this shoe", None)  # a note in a data row

    path = _book(tmp_path / "ads.xlsx", shape)

    checked = run_cli(["check", path], sim)
    result = run_cli(["run", path], sim)

    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "'request_id' (new, column H), 'status' (new, column I)" in checked.stdout
    # the note's text in F3 is the last cell used; G, inside its merge, is passed over
    assert "passed over merged range F3:G3" in checked.stdout
    assert result.returncode == 0, result.stderr
    ws = load_workbook(path)["Ads"]
    assert [ws.cell(1, c).value for c in range(8, 12)] == [
        "request_id",
        "status",
        "video_url",
        "error",
    ]
    assert [ws.cell(r, 9).value for r in (2, 3, 4)] == ["completed"] * 3
    assert all(ws.cell(r, c).value is None for r in (1, 2, 4) for c in range(4, 8))
    assert ws.cell(3, 6).value == "ask Dana about this shoe"
    assert "F3:G3" in {str(m) for m in ws.merged_cells.ranges}
    assert ws.column_dimensions["D"].hidden
    assert len(sim.simulator.submissions()) == 3


def test_a_libreoffice_sheet_with_a_collapsed_group_and_a_hidden_column(
    tmp_path: Path, sim: SimulatorServer
) -> None:
    # D–E are a collapsed outline group, F is visible, G hidden: four adjacent columns
    # that show are H–K
    path = Path(shutil.copy(FILES / "layout_hidden.xlsx", tmp_path / "ads.xlsx"))

    checked = run_cli(["check", path], sim)
    result = run_cli(["run", path], sim)

    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "'request_id' (new, column H)" in checked.stdout
    assert "passed over hidden columns D–E, hidden column G" in checked.stdout
    assert result.returncode == 0, result.stderr
    assert "passed over" in result.stderr  # the run says where its results go
    ws = load_workbook(path)["Ads"]
    assert [ws.cell(1, c).value for c in range(4, 12)] == [None] * 4 + [
        "request_id",
        "status",
        "video_url",
        "error",
    ]
    assert [ws.cell(r, 9).value for r in (2, 3)] == ["completed"] * 2


def test_a_reused_output_column_that_is_hidden_is_refused_before_paying(
    tmp_path: Path, sim: SimulatorServer
) -> None:
    def shape(book: Any, ws: Any) -> None:
        ws.write_row(0, 3, ["request_id", "status", "video_url", "error"])
        ws.set_column("D:D", None, None, {"hidden": True})  # the ids look untidy: hidden

    path = _book(tmp_path / "ads.xlsx", shape)

    _refused_before_paying(path, sim, "output column 'request_id' is in hidden column D")


def test_a_merged_note_over_a_reused_output_column_is_refused_before_paying(
    tmp_path: Path, sim: SimulatorServer
) -> None:
    def shape(book: Any, ws: Any) -> None:
        ws.write_row(0, 3, ["request_id", "status", "video_url", "error"])
        ws.merge_range("C3:E3", "hold this one: legal review", None)

    path = _book(tmp_path / "ads.xlsx", shape)

    _refused_before_paying(path, sim, "output column 'request_id' is in merged range C3:E3")


def test_no_room_when_every_column_after_the_data_is_hidden(
    tmp_path: Path, sim: SimulatorServer
) -> None:
    # "hide unused columns": select D to the last column, XFD, and hide them
    path = _book(
        tmp_path / "ads.xlsx", lambda b, ws: ws.set_column("D:XFD", None, None, {"hidden": True})
    )

    _refused_before_paying(
        path, sim, "no room for 4 output column(s) before Excel's last column, XFD", "D–XFD"
    )


def test_a_protected_sheet_is_refused_before_paying(tmp_path: Path, sim: SimulatorServer) -> None:
    path = _book(tmp_path / "ads.xlsx", lambda b, ws: ws.protect())

    _refused_before_paying(path, sim, "worksheet 'Ads' is protected and cell D1", "is locked")


def test_a_libreoffice_protected_sheet_is_refused_before_paying(
    tmp_path: Path, sim: SimulatorServer
) -> None:
    path = Path(shutil.copy(FILES / "layout_protected.xlsx", tmp_path / "ads.xlsx"))

    _refused_before_paying(path, sim, "worksheet 'Ads' is protected")


def test_a_protected_sheet_whose_output_columns_are_unlocked_is_written(
    tmp_path: Path, sim: SimulatorServer
) -> None:
    def shape(book: Any, ws: Any) -> None:
        unlocked = book.add_format({"locked": False})
        ws.write_row(0, 3, ["request_id", "status", "video_url", "error"], unlocked)
        ws.set_column("D:G", 24, unlocked)  # Format Cells → Protection: Locked unticked
        ws.protect()

    path = _book(tmp_path / "ads.xlsx", shape)

    checked = run_cli(["check", path], sim)
    result = run_cli(["run", path], sim)

    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert result.returncode == 0, result.stderr
    ws = load_workbook(path)["Ads"]
    assert ws.protection.sheet
    assert [ws.cell(r, 5).value for r in (2, 3, 4)] == ["completed"] * 3
    # the cells batchgen added take their column's format: a person can still edit them
    assert not any(ws.cell(r, c).protection.locked for r in (2, 3, 4) for c in (4, 5, 6))
    assert ws.cell(2, 1).protection.locked  # the rest of the sheet stays locked


def test_a_workbook_whose_structure_is_protected_cannot_take_the_results_sheet(
    tmp_path: Path, sim: SimulatorServer
) -> None:
    # neither XlsxWriter nor LibreOffice 7.4 writes lockStructure: openpyxl does, as Excel
    from openpyxl import Workbook
    from openpyxl.workbook.protection import WorkbookProtection

    book = Workbook()
    ws = book.active
    assert ws is not None
    ws.title = "Ads"
    ws.append(["prompt", "first_frame_image_url"])
    ws.append(["Shoe spins on a pedestal", IMAGE])
    book.security = WorkbookProtection(lockStructure=True)
    path = tmp_path / "ads.xlsx"
    book.save(path)

    _refused_before_paying(
        path, sim, "the workbook's structure is protected", "'batchgen_results' worksheet"
    )

    # with a batchgen_results worksheet already there, nothing is added: its cells are replaced
    book.create_sheet("batchgen_results")
    book.save(path)
    result = run_cli(["run", path], sim)

    assert result.returncode == 0, result.stderr
    done = load_workbook(path)
    assert done.security is not None and done.security.lockStructure
    results = list(done["batchgen_results"].iter_rows(values_only=True))
    assert results[1][results[0].index("status")] == "completed"
    assert done["Ads"]["D2"].value == "completed"


@pytest.mark.parametrize("hidden", ["hidden", "zero width"])
def test_a_hidden_column_is_never_written_into_whichever_way_it_is_hidden(
    tmp_path: Path, sim: SimulatorServer, hidden: str
) -> None:
    options = {"hidden": True} if hidden == "hidden" else {}
    width = None if hidden == "hidden" else 0

    path = _book(tmp_path / "ads.xlsx", lambda b, ws: ws.set_column("D:D", width, None, options))

    result = run_cli(["run", path], sim)

    assert result.returncode == 0, result.stderr
    ws = load_workbook(path)["Ads"]
    assert ws.cell(1, 4).value is None and ws.cell(1, 5).value == "request_id"


def _in_a_small_file_system(
    room: Path, script: str, sim: SimulatorServer
) -> subprocess.CompletedProcess[str]:
    """Run `script` (sh) with a real 2 MB tmpfs mounted at `room`, in a user and mount
    namespace of its own (no privilege needed where the kernel allows them); skip if not."""
    probe = (
        subprocess.run(
            ["unshare", "--user", "--map-root-user", "--mount", "true"],
            capture_output=True,
            check=False,
        )
        if shutil.which("unshare")
        else None
    )
    if probe is None or probe.returncode != 0:
        pytest.skip("cannot make a user and mount namespace here (unshare)")
    room.mkdir()
    mount = f'mount -t tmpfs -o size=2m tmpfs "{room}" || exit 99\n'
    done = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", mount + script],
        env=cli_env(sim),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode == 99:
        pytest.skip(f"cannot mount a tmpfs in a user namespace here: {done.stderr.strip()}")
    return done


@pytest.mark.parametrize("kind", ["csv", "xlsx"])
def test_a_full_disk_is_found_before_anything_is_paid(
    tmp_path: Path, sim: SimulatorServer, kind: str
) -> None:
    rows = ad_rows(3)
    sheet = write_csv(tmp_path / "ads.csv", rows) if kind == "csv" else None
    if sheet is None:
        sheet = _book(tmp_path / "ads.xlsx", lambda b, ws: None)
    room = tmp_path / "room"
    py = f"{sys.executable} -m batchgen"
    script = f"""
cp "{sheet}" "{room}/" || exit 98
{py} check "{room}/{sheet.name}" --db "{tmp_path}/ledger.db" > "{tmp_path}/roomy.out" 2>&1
echo $? > "{tmp_path}/roomy.rc"
cat /dev/zero > "{room}/filler" 2>/dev/null  # until the file system is full
{py} check "{room}/{sheet.name}" --db "{tmp_path}/ledger.db" > "{tmp_path}/full.out" 2>&1
echo $? > "{tmp_path}/full.rc"
{py} run "{room}/{sheet.name}" --db "{tmp_path}/ledger.db" > "{tmp_path}/run.out" 2>&1
echo $? > "{tmp_path}/run.rc"
cmp "{room}/{sheet.name}" "{sheet}" && echo same > "{tmp_path}/cmp"
df -k "{room}" > "{tmp_path}/df"
"""
    done = _in_a_small_file_system(room, script, sim)

    assert done.returncode == 0, done.stdout + done.stderr
    out = {name: (tmp_path / name).read_text() for name in ("roomy.out", "full.out", "run.out")}
    assert (tmp_path / "roomy.rc").read_text().strip() == "0", out["roomy.out"]
    assert " 0 " in (tmp_path / "df").read_text().splitlines()[1]  # really full: 0 KB free
    assert (tmp_path / "full.rc").read_text().strip() == "1", out["full.out"]
    assert REFUSED in out["full.out"] and "no room for the results" in out["full.out"]
    assert (tmp_path / "run.rc").read_text().strip() == "2", out["run.out"]
    assert "no room for the results: the write-back needs about" in out["run.out"]
    assert "is free; free some space or write elsewhere with --output" in out["run.out"]
    assert sim.simulator.submissions() == []
    assert (tmp_path / "cmp").read_text().strip() == "same"
