"""A rerun with nothing to do is answered from the ledger's rerun mark, and only then.

The run that finishes a sheet's last job marks the sheet it wrote; a later one whose sheet,
results file, settings, model files and code are the same says what the marked run said,
touching nothing (not even the marks' generation, which every run that takes the whole way
draws anew). Any change in between takes the whole way again.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import stat
from pathlib import Path

import pytest

from batchgen.models import DEFAULT_MODEL_ID, shipped_models
from batchgen.simulator import SimulatorServer
from tests.helpers import IMAGE, ad_rows, run_cli, write_csv, write_xlsx


def _marks(db: Path) -> dict[str, str]:
    """The ledger's rerun marks by scope ("" holds the generation)."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return dict(conn.execute("SELECT scope, digest FROM rerun_marks").fetchall())


def _snapshot(paths: list[Path]) -> list[tuple[bytes, int, int]]:
    return [(p.read_bytes(), p.stat().st_mtime_ns, p.stat().st_ino) for p in paths]


def _without_clock(text: str) -> list[str]:
    """Log lines without their leading time of day."""
    return [line.split(" ", 1)[1] if line[:2].isdigit() else line for line in text.splitlines()]


def _marked(target: Path, sim: SimulatorServer, *args: object, sheet: Path | None = None) -> None:
    """Run a sheet (or job file) to its end, then once more, which marks the sheet."""
    for _ in range(2):
        done = run_cli(["run", target, *args], sim)
        assert done.returncode == 0, done.stderr
    sheet = sheet or target
    assert str(sheet.resolve()) in _marks(sheet.with_name(sheet.name + ".batchgen.db"))


@pytest.mark.parametrize("kind", ["csv", "xlsx"])
def test_a_marked_rerun_says_what_the_whole_way_said_and_touches_nothing(
    tmp_path: Path, sim: SimulatorServer, kind: str
) -> None:
    # "start image" is read as the model's image: a note each rerun repeats
    rows = [{"prompt": f"Shoe {i}", "start image": IMAGE, "owner": "x"} for i in range(5)]
    if kind == "csv":
        sheet = write_csv(tmp_path / "ads.csv", rows)
        files = [sheet, tmp_path / "ads.results.csv"]
    else:
        sheet = write_xlsx(tmp_path / "ads.xlsx", rows)
        files = [sheet]
    db = sheet.with_name(sheet.name + ".batchgen.db")
    assert run_cli(["run", sheet], sim).returncode == 0
    with sqlite3.connect(db) as conn:  # its mark gone, the next rerun takes the whole way
        conn.execute("DELETE FROM rerun_marks WHERE scope <> ''")
    whole = run_cli(["run", sheet, "--json"], sim)  # the whole way, which marks the sheet
    assert whole.returncode == 0, whole.stderr
    assert "headers read as inputs" in whole.stderr
    marks, before = _marks(db), _snapshot(files)
    assert str(sheet.resolve()) in marks

    quick = run_cli(["run", sheet, "--json"], sim)

    assert quick.returncode == 0, quick.stderr
    assert json.loads(quick.stdout) == json.loads(whole.stdout)
    assert _without_clock(quick.stderr) == _without_clock(whole.stderr)
    assert _snapshot(files) == before
    assert _marks(db) == marks  # no run took the whole way: the generation is the same
    assert len(sim.simulator.submissions()) == 5


def test_a_row_changed_after_the_mark_is_submitted(tmp_path: Path, sim: SimulatorServer) -> None:
    sheet = write_csv(tmp_path / "ads.csv", ad_rows(4))
    _marked(sheet, sim)
    text = sheet.read_text(encoding="utf-8")
    sheet.write_text(text.replace("Product 2 spins", "Product 2 turns", 1), encoding="utf-8")

    again = run_cli(["run", sheet], sim)

    assert again.returncode == 0, again.stderr
    assert len(sim.simulator.submissions()) == 5
    assert "Product 2 turns" in sim.simulator.submissions()[-1].payload["prompt"]


def test_a_job_file_default_changed_after_the_mark_makes_new_jobs(
    tmp_path: Path, sim: SimulatorServer
) -> None:
    sheet = write_csv(tmp_path / "ads.csv", ad_rows(3))
    job = tmp_path / "ads.toml"
    job.write_text('sheet = "ads.csv"\n[defaults]\nduration = 5\n', encoding="utf-8")
    _marked(job, sim, sheet=sheet)
    job.write_text('sheet = "ads.csv"\n[defaults]\nduration = 6\n', encoding="utf-8")

    again = run_cli(["run", job], sim)

    assert again.returncode == 0, again.stderr
    sent = sim.simulator.submissions()
    assert len(sent) == 6 and {s.payload["duration"] for s in sent[3:]} == {6}


def test_a_model_file_changed_after_the_mark_is_read_again(
    tmp_path: Path, sim: SimulatorServer
) -> None:
    sheet = write_csv(tmp_path / "ads.csv", ad_rows(3, resolution="720p"))
    models = tmp_path / "models"
    models.mkdir()
    shipped = next(m for m in shipped_models() if m.model_id == DEFAULT_MODEL_ID)
    mine = models / "seedance.json"
    shutil.copy(shipped.path, mine)
    _marked(sheet, sim, "--models-dir", models)
    data = json.loads(mine.read_text(encoding="utf-8"))
    data["inputs"]["resolution"]["values"] = ["480p", "1080p"]  # 720p no longer offered
    mine.write_text(json.dumps(data), encoding="utf-8")

    again = run_cli(["run", sheet, "--models-dir", models], sim)

    assert again.returncode == 1
    assert "3 invalid" in again.stdout
    assert len(sim.simulator.submissions()) == 3


def test_a_results_file_removed_after_the_mark_is_written_again(
    tmp_path: Path, sim: SimulatorServer
) -> None:
    sheet = write_csv(tmp_path / "ads.csv", ad_rows(3))
    _marked(sheet, sim)
    results = tmp_path / "ads.results.csv"
    kept = results.read_bytes()
    results.unlink()

    again = run_cli(["run", sheet], sim)

    assert again.returncode == 0, again.stderr
    assert results.read_bytes() == kept


def test_a_job_no_longer_completed_in_the_ledger_is_not_hidden_by_the_mark(
    tmp_path: Path, sim: SimulatorServer
) -> None:
    sheet = write_csv(tmp_path / "ads.csv", ad_rows(3))
    _marked(sheet, sim)
    db = tmp_path / "ads.csv.batchgen.db"
    with sqlite3.connect(db) as conn:  # another tool's doing: the mark must not vouch for it
        conn.execute("UPDATE jobs SET state = 'failed' WHERE sheet_row = 3")

    again = run_cli(["run", sheet, "--retry-failed"], sim)

    assert again.returncode == 0, again.stderr
    assert len(sim.simulator.submissions()) == 4


def test_cancel_forgets_every_mark(tmp_path: Path, sim: SimulatorServer) -> None:
    sheet = write_csv(tmp_path / "ads.csv", ad_rows(2))
    _marked(sheet, sim)
    db = tmp_path / "ads.csv.batchgen.db"
    generation = _marks(db)[""]

    cancelled = run_cli(["cancel", sheet], sim)

    assert cancelled.returncode == 0, cancelled.stderr
    marks = _marks(db)
    assert str(sheet.resolve()) not in marks and marks[""] != generation


def test_a_marked_sheet_made_read_only_is_refused_as_before(
    tmp_path: Path, sim: SimulatorServer
) -> None:
    sheet = write_csv(tmp_path / "ads.csv", ad_rows(2))
    _marked(sheet, sim)
    os.chmod(sheet, stat.S_IRUSR | stat.S_IRGRP)

    again = run_cli(["run", sheet], sim)

    assert again.returncode == 2
    assert "read-only" in again.stderr and "Traceback" not in again.stderr


@pytest.mark.parametrize("kind", ["csv", "xlsx"])
def test_the_run_that_finishes_marks_and_the_whole_way_would_write_nothing(
    tmp_path: Path, sim: SimulatorServer, kind: str
) -> None:
    rows = ad_rows(4, ratio=lambda i: "9:16|1:1" if i == 1 else "16:9", owner="x")
    if kind == "csv":
        sheet = write_csv(tmp_path / "ads.csv", rows)
        files = [sheet, tmp_path / "ads.results.csv"]
    else:
        sheet = write_xlsx(tmp_path / "ads.xlsx", rows)
        files = [sheet]
    db = sheet.with_name(sheet.name + ".batchgen.db")
    done = run_cli(["run", sheet], sim)
    assert done.returncode == 0, done.stderr
    marks, written = _marks(db), _snapshot(files)
    assert str(sheet.resolve()) in marks  # the first run marked the sheet it wrote

    quick = run_cli(["run", sheet], sim)

    assert quick.returncode == 0, quick.stderr
    assert _marks(db) == marks  # answered from the mark: no run took the whole way
    assert _snapshot(files) == written
    with sqlite3.connect(db) as conn:  # the mark gone, the next rerun takes the whole way
        conn.execute("DELETE FROM rerun_marks WHERE scope <> ''")
    whole = run_cli(["run", sheet], sim)
    assert whole.returncode == 0, whole.stderr
    assert _marks(db)[""] != marks[""]
    # ... and finds nothing to change: the mark had vouched for exactly these bytes
    assert _snapshot(files) == written
    assert len(sim.simulator.submissions()) == 5


def test_a_sheet_whose_results_went_beside_a_teams_column_is_marked_by_its_rerun(
    tmp_path: Path, sim: SimulatorServer
) -> None:
    sheet = write_csv(tmp_path / "ads.csv", ad_rows(2, Status="approved"))
    db = tmp_path / "ads.csv.batchgen.db"
    assert run_cli(["run", sheet], sim).returncode == 0
    assert str(sheet.resolve()) not in _marks(db)  # the whole way words its note otherwise

    again = run_cli(["run", sheet], sim)

    assert again.returncode == 0, again.stderr
    assert "'batchgen status', " in again.stderr and "(new)" not in again.stderr
    assert "'Status' hold(s) what the team typed" in again.stderr
    assert str(sheet.resolve()) in _marks(db)
