"""A sheet saved by a person during a run is never overwritten: results merge or go beside.

The simulator runs no job (capacity 0) until the test has made the person's save, so the
save always lands while the run is in progress, after every job was submitted.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import xlsxwriter
from openpyxl import Workbook, load_workbook

from batchgen.simulator import Simulator, SimulatorServer
from tests.helpers import (
    IMAGE,
    ad_rows,
    fast_config,
    ledger_rows,
    run_cli,
    start_cli,
    wait_until,
    write_csv,
    write_xlsx,
)


@pytest.fixture
def held() -> Iterator[SimulatorServer]:
    """A simulator that takes jobs but runs none until `release(server)`."""
    with SimulatorServer(Simulator(fast_config(capacity=0))) as server:
        yield server


def release(server: SimulatorServer) -> None:
    server.simulator.config.capacity = 8


def wait_submitted(path: Path, count: int) -> None:
    """Until the ledger beside `path` holds `count` request ids (every job submitted)."""
    db = path.with_name(path.name + ".batchgen.db")
    wait_until(lambda: sum(1 for r in ledger_rows(db) if r["request_id"]) == count, timeout=60)


def ids_by_prompt(server: SimulatorServer) -> dict[str, str]:
    """Each prompt the simulator received, with its request id; every prompt only once."""
    subs = server.simulator.submissions()
    prompts = [s.payload["prompt"] for s in subs]
    assert len(prompts) == len(set(prompts)), prompts
    return {s.payload["prompt"]: s.request_id for s in subs}


def finish(proc: subprocess.Popen[str]) -> tuple[int, str]:
    out, err = proc.communicate(timeout=120)
    return proc.returncode, out + err


def lose_ledger(sheet: Path) -> None:
    """Delete the ledger beside `sheet`, and its WAL files."""
    db = sheet.with_name(sheet.name + ".batchgen.db")
    for path in (db, Path(f"{db}-wal"), Path(f"{db}-shm")):
        path.unlink(missing_ok=True)


def csv_rows(path: Path) -> dict[str, dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return {row["prompt"]: row for row in csv.DictReader(handle)}


def prompt(i: int) -> str:
    return ad_rows(i + 1)[i]["prompt"]


# --------------------------------------------------------------------------- CSV


def test_csv_saved_mid_run_gets_results_in_matching_rows_and_the_rest_beside(
    tmp_path: Path, held: SimulatorServer
) -> None:
    path = write_csv(tmp_path / "ads.csv", ad_rows(6, note=lambda i: f"n{i}"))
    loaded = path.stat().st_ino
    proc = start_cli(["run", path, "--concurrency", "8"], held)
    wait_submitted(path, 6)
    # the person opens the sheet after the run's first checkpoint wrote it, and saves
    wait_until(lambda: path.stat().st_ino != loaded, timeout=60)
    grid = list(csv.reader(io.StringIO(path.read_text(encoding="utf-8"))))
    header, rows = grid[0], {r[0]: r for r in grid[1:]}
    new = ["A brand new product on a beach", IMAGE, "new", "", "", "", ""]
    edited = [*rows[prompt(4)]]
    edited[0] = "Product 4 spins fast"
    rows[prompt(1)][2] = "approved by Ana"
    saved = [header, new, rows[prompt(5)], rows[prompt(0)], rows[prompt(1)]]
    saved += [rows[prompt(2)], edited]  # product 3 deleted
    text = "".join(",".join(f'"{v}"' if "," in v else v for v in r) + "\n" for r in saved)
    path.write_text(text, encoding="utf-8")
    release(held)

    code, output = finish(proc)

    assert code == 0, output
    beside = tmp_path / "ads.batchgen-results.csv"
    assert (
        "ads.csv changed on disk during the run: results merged into 4 of 6 rows; 2 rows "
        "(5, 6) no longer match" in output
    )
    assert "ads.batchgen-results.csv" in output
    ids = ids_by_prompt(held)
    assert len(ids) == 6
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    # the person's rows that match no job are kept byte for byte; so is the new order
    assert text.splitlines(keepends=True)[1] in lines
    assert text.splitlines(keepends=True)[-1] in lines
    after = csv_rows(path)
    assert list(after) == [r[0] for r in saved[1:]]
    for i in (0, 1, 2, 5):
        assert after[prompt(i)]["status"] == "completed"
        assert after[prompt(i)]["request_id"] == ids[prompt(i)]
    assert after[prompt(1)]["note"] == "approved by Ana"
    assert after["Product 4 spins fast"]["status"] == "in_queue"  # as the person saved it
    aside = csv_rows(beside)
    for i in (3, 4):
        assert aside[prompt(i)]["status"] == "completed"
        assert aside[prompt(i)]["request_id"] == ids[prompt(i)]
    assert {aside[prompt(i)]["status"] or "" for i in (0, 1, 2, 5)} == {""}
    with (tmp_path / "ads.results.csv").open(newline="", encoding="utf-8") as handle:
        table = list(csv.DictReader(handle))
    assert {r["request_id"] for r in table} == set(ids.values())  # every job, by key

    # the ledger is lost and the person undoes the edit: the sheet's results table still
    # names product 4's job, so it is adopted, not paid again; only the new row is sent
    lose_ledger(path)
    path.write_text(
        path.read_text(encoding="utf-8").replace("Product 4 spins fast", prompt(4)),
        encoding="utf-8",
    )
    rerun = run_cli(["run", path], held)

    assert rerun.returncode == 0, rerun.stderr
    ids = ids_by_prompt(held)
    assert len(ids) == 7 and "A brand new product on a beach" in ids
    after = csv_rows(path)
    assert {row["status"] for row in after.values()} == {"completed"}
    assert after[prompt(4)]["request_id"] == ids[prompt(4)]
    assert "changed on disk" not in rerun.stdout + rerun.stderr


def test_own_checkpoint_writes_and_a_save_of_the_same_bytes_are_not_changes(
    tmp_path: Path, held: SimulatorServer
) -> None:
    path = write_csv(tmp_path / "ads.csv", ad_rows(3))
    loaded = path.stat().st_ino
    proc = start_cli(["run", path, "--concurrency", "8"], held)
    wait_submitted(path, 3)
    wait_until(lambda: path.stat().st_ino != loaded, timeout=60)  # a checkpoint wrote it
    # opened and saved unchanged: a new file (inode, mtime) with the same bytes
    copy = tmp_path / "copy.csv"
    copy.write_bytes(path.read_bytes())
    os.replace(copy, path)
    release(held)

    code, output = finish(proc)

    assert code == 0, output
    assert "changed on disk" not in output and "written to" in output
    assert not (tmp_path / "ads.batchgen-results.csv").exists()
    assert {row["status"] for row in csv_rows(path).values()} == {"completed"}


def test_a_lock_file_that_appears_mid_run_sends_the_results_beside(
    tmp_path: Path, held: SimulatorServer
) -> None:
    path = write_csv(tmp_path / "ads.csv", ad_rows(3))
    proc = start_cli(["run", path, "--concurrency", "8"], held)
    wait_submitted(path, 3)
    lock = tmp_path / ".~lock.ads.csv#"
    lock.write_text(",ana,studio-2,06.12.2026 05:00,file:///home/ana/.config/libreoffice/4;")
    release(held)

    code, output = finish(proc)

    assert code == 0, output
    assert "was opened in LibreOffice by ana" in output
    assert "the sheet was left as it is" in output
    # whatever a checkpoint wrote before the lock appeared, no result reached the sheet
    assert "completed" not in path.read_text(encoding="utf-8")
    beside = csv_rows(tmp_path / "ads.batchgen-results.csv")
    assert {row["status"] for row in beside.values()} == {"completed"}

    lock.unlink()
    rerun = run_cli(["run", path], held)

    assert rerun.returncode == 0, rerun.stderr
    assert len(ids_by_prompt(held)) == 3
    assert {row["status"] for row in csv_rows(path).values()} == {"completed"}


# --------------------------------------------------------------------------- xlsx


def xlsx_grid(path: Path, sheet: str = "Ads") -> list[list[object]]:
    book = load_workbook(path)
    return [list(row) for row in book[sheet].iter_rows(values_only=True)]


def by_prompt(grid: list[list[object]]) -> dict[str, dict[str, object]]:
    header = [str(h) for h in grid[0]]
    return {str(r[0]): dict(zip(header, r, strict=False)) for r in grid[1:] if r[0]}


def person_rows() -> list[list[object]]:
    """The person's version: product 4 moved up, a new row, product 1 edited, 3 deleted."""
    rows = [[r["prompt"], r["first_frame_image_url"], f"n{i}"] for i, r in enumerate(ad_rows(5))]
    new = ["A new idea: sneakers on the moon", IMAGE, "idea"]
    edited = ["Product 1 turns once", IMAGE, "n1 (edited)"]
    return [["prompt", "first_frame_image_url", "note"], rows[4], rows[0], new, edited, rows[2]]


def save_with_xlsxwriter(path: Path, rows: list[list[object]]) -> None:
    """The person's save, by another program: a new workbook with a Budget worksheet."""
    tmp = path.with_name("person.xlsx")
    book = xlsxwriter.Workbook(str(tmp))
    bold = book.add_format({"bold": True})
    sheet = book.add_worksheet("Ads")
    for r, row in enumerate(rows):
        sheet.write_row(r, 0, row, bold if r == 0 else None)
    sheet.set_column(0, 0, 50)
    book.add_worksheet("Budget").write(0, 0, "Q3: 1200")
    book.close()
    os.replace(tmp, path)


def save_with_libreoffice(path: Path, rows: list[list[object]]) -> None:
    """The person's save by LibreOffice itself (headless): the edited sheet converted."""
    soffice = shutil.which("soffice")
    if soffice is None:
        pytest.skip("LibreOffice (soffice) is not installed")
    work = path.parent / "lo"
    work.mkdir()
    book = Workbook()
    ads = book.active
    assert ads is not None
    ads.title = "Ads"
    for row in rows:
        ads.append(row)
    book.create_sheet("Budget")["A1"] = "Q3: 1200"
    book.save(work / "edited.xlsx")
    out = work / "out"
    subprocess.run(
        [
            soffice,
            f"-env:UserInstallation=file://{work / 'profile'}",
            "--headless",
            "--convert-to",
            "xlsx",
            "--outdir",
            str(out),
            str(work / "edited.xlsx"),
        ],
        check=True,
        capture_output=True,
        timeout=180,
    )
    os.replace(out / "edited.xlsx", path)


@pytest.mark.parametrize("save", [save_with_xlsxwriter, save_with_libreoffice])
def test_xlsx_saved_mid_run_by_another_program_is_merged(
    tmp_path: Path, held: SimulatorServer, save: object
) -> None:
    path = write_xlsx(tmp_path / "ads.xlsx", ad_rows(5, note=lambda i: f"n{i}"))
    proc = start_cli(["run", path, "--concurrency", "8"], held)
    wait_submitted(path, 5)
    save(path, person_rows())  # type: ignore[operator]
    release(held)

    code, output = finish(proc)

    assert code == 0, output
    assert (
        "ads.xlsx changed on disk during the run: results merged into 3 of 5 rows; 2 rows "
        "(3, 5) no longer match" in output
    )
    ids = ids_by_prompt(held)
    assert len(ids) == 5
    assert load_workbook(path)["Budget"]["A1"].value == "Q3: 1200"
    after = xlsx_grid(path)
    assert [r[0] for r in after[1:]] == [r[0] for r in person_rows()[1:]]
    rows = by_prompt(after)
    for i in (0, 2, 4):
        assert rows[prompt(i)]["status"] == "completed"
        assert rows[prompt(i)]["request_id"] == ids[prompt(i)]
        assert rows[prompt(i)]["note"] == f"n{i}"
    for kept in ("A new idea: sneakers on the moon", "Product 1 turns once"):
        assert rows[kept]["status"] is None and rows[kept]["request_id"] is None
    aside = by_prompt(xlsx_grid(tmp_path / "ads.batchgen-results.xlsx"))
    for i in (1, 3):
        assert aside[prompt(i)]["status"] == "completed"
        assert aside[prompt(i)]["request_id"] == ids[prompt(i)]
    assert {aside[prompt(i)]["status"] for i in (0, 2, 4)} == {None}

    rerun = run_cli(["run", path], held)

    assert rerun.returncode == 0, rerun.stderr
    ids = ids_by_prompt(held)
    assert len(ids) == 7
    rows = by_prompt(xlsx_grid(path))
    assert {row["status"] for row in rows.values()} == {"completed"}
    assert all(rows[p]["request_id"] == ids[p] for p in rows)


def test_xlsx_whose_headers_changed_beyond_recognition_gets_nothing_and_is_adopted_later(
    tmp_path: Path, held: SimulatorServer
) -> None:
    path = write_xlsx(tmp_path / "ads.xlsx", ad_rows(4))
    original = path.read_bytes()
    proc = start_cli(["run", path, "--concurrency", "8"], held)
    wait_submitted(path, 4)
    rows = [[r["prompt"], r["first_frame_image_url"]] for r in ad_rows(4)]
    save_with_xlsxwriter(path, [["Copy text", "Picture link"], *rows])
    saved = path.read_bytes()
    release(held)

    code, output = finish(proc)

    assert code == 0, output
    assert "ads.xlsx changed on disk during the run" in output
    assert "the sheet was left as it is" in output and "ads.batchgen-results.xlsx" in output
    assert path.read_bytes() == saved
    beside = tmp_path / "ads.batchgen-results.xlsx"
    ids = ids_by_prompt(held)
    aside = by_prompt(xlsx_grid(beside))
    assert all(aside[p]["request_id"] == ids[p] for p in ids)

    # the person puts the headers back, and the ledger is lost: the results beside the
    # sheet are its second ledger, so nothing is paid for again
    path.write_bytes(original)
    lose_ledger(path)
    rerun = run_cli(["run", path], held)

    assert rerun.returncode == 0, rerun.stderr
    assert len(held.simulator.submissions()) == 4
    assert "rebuilt the ledger from the sheet: 4 job(s)" in rerun.stderr + rerun.stdout
    rows_after = by_prompt(xlsx_grid(path))
    assert all(rows_after[p]["request_id"] == ids[p] for p in ids)
