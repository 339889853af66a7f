"""A rerun with nothing to do leaves the sheet and its results file untouched."""

from __future__ import annotations

from pathlib import Path

import pytest

from batchgen.simulator import SimulatorServer
from tests.helpers import ad_rows, run_cli, write_csv, write_xlsx


def _snapshot(paths: list[Path]) -> list[tuple[bytes, int, int]]:
    return [(p.read_bytes(), p.stat().st_mtime_ns, p.stat().st_ino) for p in paths]


@pytest.mark.parametrize("kind", ["xlsx", "csv"])
def test_a_rerun_of_a_finished_sheet_rewrites_nothing(
    tmp_path: Path, sim: SimulatorServer, kind: str
) -> None:
    rows = ad_rows(6, owner=lambda i: f"owner {i}")
    if kind == "xlsx":
        sheet = write_xlsx(tmp_path / "ads.xlsx", rows)
        files = [sheet]
    else:
        sheet = write_csv(tmp_path / "ads.csv", rows)
        files = [sheet, tmp_path / "ads.results.csv"]
    first = run_cli(["run", sheet], sim)
    assert first.returncode == 0, first.stderr
    before = _snapshot(files)
    leftovers = sorted(p.name for p in tmp_path.iterdir())

    again = run_cli(["run", sheet], sim)

    assert again.returncode == 0, again.stderr
    assert "6/6 done: 6 completed" in again.stdout
    assert _snapshot(files) == before  # same bytes, same modification time, same inode
    assert sorted(p.name for p in tmp_path.iterdir()) == leftovers
    assert len(sim.simulator.submissions()) == 6


def test_a_rerun_that_learns_something_does_write(tmp_path: Path, sim: SimulatorServer) -> None:
    sheet = write_csv(tmp_path / "ads.csv", ad_rows(3))
    assert run_cli(["run", sheet], sim).returncode == 0
    text = sheet.read_text(encoding="utf-8")
    # a person clears one row's status cell: the rerun puts it back
    sheet.write_text(text.replace(",completed,", ",,", 1), encoding="utf-8")
    edited = sheet.stat().st_mtime_ns

    again = run_cli(["run", sheet], sim)

    assert again.returncode == 0, again.stderr
    assert sheet.read_text(encoding="utf-8") == text
    assert sheet.stat().st_mtime_ns != edited
