"""Small files, bounded costs: a workbook past batchgen's limits is refused before it is read."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from openpyxl import Workbook

from tests.helpers import IMAGE, ad_rows, cli_env, run_cli, write_xlsx

# runs `batchgen ARGS` as its own child and reports its exit, stderr and peak memory
_MEASURED = """
import json, resource, subprocess, sys
done = subprocess.run([sys.executable, "-m", "batchgen", *sys.argv[1:]],
                      capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120)
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB on Linux
print(json.dumps({"code": done.returncode, "stderr": done.stderr, "peak_mb": peak / 1024}))
"""


def measured(*args: object) -> dict[str, object]:
    """`batchgen ARGS` in a fresh process tree; its exit code, stderr and peak memory (MB)."""
    out = subprocess.run(
        [sys.executable, "-c", _MEASURED, *map(str, args)],
        env=cli_env(None),
        capture_output=True,
        text=True,
        timeout=180,
    )
    result: dict[str, object] = json.loads(out.stdout)
    return result


def _stray_cell(path: Path, ref: str) -> Path:
    """A valid one-row sheet with one more cell far away (as a stray keystroke leaves)."""
    wb = Workbook()
    ws = wb.active
    ws.append(["prompt", "first_frame_image_url"])
    ws.append(["A calm product shot", IMAGE])
    ws[ref] = "x"
    wb.save(path)
    return path


def _zip_bomb(path: Path, *, unpacked_mb: int) -> Path:
    """A valid workbook whose worksheet XML is padded with `unpacked_mb` MB of blanks."""
    source = write_xlsx(path.with_name("source.xlsx"), ad_rows(1), extra_sheet=False)
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as out:
        for info in src.infolist():
            data = src.read(info)
            if info.filename != "xl/worksheets/sheet1.xml":
                out.writestr(info, data)
                continue
            head, tail = data.split(b"</sheetData>")
            packed = zipfile.ZipInfo(info.filename)
            packed.compress_type = zipfile.ZIP_DEFLATED
            with out.open(packed, "w", force_zip64=True) as handle:
                handle.write(head)
                blank = b" " * 2**20
                for _ in range(unpacked_mb):
                    handle.write(blank)
                handle.write(b"</sheetData>" + tail)
    return path


@pytest.mark.parametrize(
    ("ref", "rule"),
    [
        ("XFD1048576", "reaches cell XFD1048576 (1,048,576 rows, 16,384 columns)"),
        ("ZZ100000", "reaches cell ZZ100000 (100,000 rows, 702 columns)"),
        ("A1000001", "reaches cell B1000001 (1,000,001 rows, 2 columns)"),
    ],
)
def test_a_cell_far_away_is_refused_in_one_line_without_the_memory(
    tmp_path: Path, ref: str, rule: str
) -> None:
    sheet = _stray_cell(tmp_path / "ads.xlsx", ref)
    assert sheet.stat().st_size < 10_000

    for command in ("check", "run"):
        result = measured(command, sheet)

        assert result["code"] == 2, result
        stderr = str(result["stderr"])
        assert len(stderr.strip().splitlines()) == 1 and rule in stderr, stderr
        assert "at most 1,000,000 rows, 1,000 columns and 20,000,000 cells" in stderr
        assert float(str(result["peak_mb"])) < 500


@pytest.mark.parametrize(
    ("unpacked_mb", "rule"),
    [(450, "unpacks to 450 MB"), (150, "like a zip bomb")],
)
def test_a_zip_bomb_is_refused_before_it_is_unpacked(
    tmp_path: Path, unpacked_mb: int, rule: str
) -> None:
    sheet = _zip_bomb(tmp_path / "ads.xlsx", unpacked_mb=unpacked_mb)
    assert sheet.stat().st_size < 2_000_000

    for command in ("check", "run"):
        result = measured(command, sheet)

        assert result["code"] == 2, result
        stderr = str(result["stderr"])
        assert len(stderr.strip().splitlines()) == 1 and rule in stderr, stderr
        assert float(str(result["peak_mb"])) < 500


def test_a_sheet_within_the_limits_still_runs(tmp_path: Path) -> None:
    sheet = _stray_cell(tmp_path / "ads.xlsx", "AB1")  # a notes column far right: fine
    result = run_cli(["check", sheet], None)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 rows" in result.stdout or "1 row" in result.stdout
