"""LibreOffice opens what batchgen wrote back into sheets it saved, and sees every cell.

Needs `soffice` (LibreOffice) on PATH and is skipped without it: CI runs the committed
LibreOffice files through batchgen in test_office_files.py, this reads the results back
with LibreOffice itself where it is installed.
"""

from __future__ import annotations

import csv
import shutil
import subprocess
from pathlib import Path

import pytest

from batchgen.simulator import SimulatorServer
from tests.files.make_office_files import CSVS
from tests.helpers import run_cli

FILES = Path(__file__).parent / "files"
pytestmark = pytest.mark.skipif(
    shutil.which("soffice") is None, reason="LibreOffice (soffice) is not installed"
)
# every worksheet as UTF-8 CSV (the last option, -1, asks for all worksheets)
TO_CSV = "csv:Text - txt - csv (StarCalc):44,34,76,1,,0,false,false,true,false,false,-1"


def libreoffice_reads(
    path: Path, tmp_path: Path, infilter: str | None = None
) -> dict[str, list[list[str]]]:
    """Each worksheet's rows as LibreOffice reads `path`, by worksheet name."""
    out = tmp_path / f"read-{path.parent.name}"
    args = ["soffice", f"-env:UserInstallation={(tmp_path / 'profile').as_uri()}", "--headless"]
    if infilter:
        args.append(f"--infilter={infilter}")
    done = subprocess.run(
        [*args, "--convert-to", TO_CSV, "--outdir", str(out), str(path)],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr
    sheets: dict[str, list[list[str]]] = {}
    for made in out.glob(f"{path.stem}-*.csv"):
        with made.open(newline="", encoding="utf-8") as handle:
            sheets[made.stem.removeprefix(f"{path.stem}-")] = list(csv.reader(handle))
    return sheets


def test_libreoffice_reads_the_team_workbook_batchgen_wrote_into(
    tmp_path: Path, sim: SimulatorServer
) -> None:
    book = Path(shutil.copyfile(FILES / "team_ads.xlsx", tmp_path / "team_ads.xlsx"))
    before = libreoffice_reads(FILES / "team_ads.xlsx", tmp_path)

    result = run_cli(["run", book, "--sheet", "Ads"], sim)

    assert result.returncode == 0, result.stderr
    after = libreoffice_reads(book, tmp_path)
    assert after["Read me"] == before["Read me"] and after["Draft"] == before["Draft"]
    ads = after["Ads"]
    assert [row[:9] for row in ads] == before["Ads"]  # the team's cells, as they were
    assert ads[3][9:] == [f"batchgen {n}" for n in ("request_id", "status", "video_url", "error")]
    assert [row[10] for row in ads[4:]] == ["completed"] * 3
    results = after["batchgen_results"]
    at = results[0].index("row")
    assert [row[at] for row in results[1:]] == ["5", "6", "7"]


@pytest.mark.parametrize(
    ("name", "options"), [("ads_cp1251.csv", "59,34,34"), ("ads_shift_jis.csv", "44,34,64")]
)
def test_libreoffice_reads_a_csv_written_back_in_its_own_code_page(
    tmp_path: Path, sim: SimulatorServer, name: str, options: str
) -> None:
    sheet = Path(shutil.copyfile(FILES / name, tmp_path / name))

    result = run_cli(["run", sheet], sim)

    assert result.returncode == 0, result.stderr
    rows = libreoffice_reads(sheet, tmp_path, f"Text - txt - csv (StarCalc):{options}")
    (table,) = rows.values()
    spec = CSVS[name]
    assert table[0] == [*spec["header"], "request_id", "status", "video_url", "error"]
    assert [row[:3] for row in table[1:]] == spec["rows"]
    assert [row[4] for row in table[1:]] == ["completed"] * 3
