"""The benchmark's rerun and start-up stages: commands a user runs often, timed as processes.

A rerun of a completed sheet has nothing to do: it reads the sheet and the ledger, finds every
job completed and exits. Each runner reruns its own completed copy of the same rows (batchgen
through `python -m batchgen run`, the naive runner through `python -m batchgen.bench.naive`),
one after the other, in the same minute. The time is the process's, from its start to its
exit; the peak RSS is the child's own high-water mark (wait4's ru_maxrss).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from batchgen.bench.runs import TOKEN, child_json, fresh_db
from batchgen.bench.sheetfiles import write_csv_sheet, write_xlsx_sheet

# an address nothing listens on: a rerun with nothing to do must never call the API
NO_API = "http://127.0.0.1:9"


@dataclass
class ProcessFigures:
    """One command's process: wall seconds, peak RSS in MB, exit code, whether the sheet stayed."""

    wall_s: float
    peak_rss_mb: float
    returncode: int
    untouched: bool = True


def timed_process(command: list[str], *, env: dict[str, str] | None = None) -> ProcessFigures:
    """Run a command to its end, output discarded; its wall time and its own peak RSS."""
    began = time.perf_counter()
    child = subprocess.Popen(
        command,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        assert child.stderr is not None
        # a rerun says little; reading stderr keeps a chattier child from blocking on the pipe
        child.stderr.read()
        _, status, usage = os.wait4(child.pid, 0)
    except BaseException:
        child.kill()
        raise
    wall = time.perf_counter() - began
    child.returncode = os.waitstatus_to_exitcode(status)
    return ProcessFigures(wall, usage.ru_maxrss / 1024, child.returncode)


def command_env() -> dict[str, str]:
    """The environment of a benchmark command: none of the caller's API or ledger settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNCOMFY_", "BATCHGEN_"))}
    return env | {"RUNCOMFY_API_TOKEN": TOKEN, "RUNCOMFY_BASE_URL": NO_API}


def rerun_command(who: str, sheet: Path, db: Path) -> list[str]:
    """The command a user reruns: batchgen's, or the naive runner's."""
    module = ["batchgen", "run"] if who == "batchgen" else ["batchgen.bench.naive"]
    return [sys.executable, "-m", *module, str(sheet), "--db", str(db)]


def complete_child() -> None:
    """Entry of a child process: argv = who, sheet, db; make the sheet a completed one."""
    who, sheet, db = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    if who == "batchgen":
        _complete_batchgen(sheet, db)
    else:
        _complete_naive(sheet, db)
    print("{}", flush=True)


def _complete_batchgen(sheet: Path, db: Path) -> None:
    """Every job in the ledger completed, and the sheet written as a finished run leaves it."""
    from batchgen.batch import bulk_allocations, load_batch, write_sheet
    from batchgen.config import build_config
    from batchgen.ledger import Ledger, ledger_url
    from batchgen.resume import resume

    config = build_config(sheet, db=str(db))
    batch = load_batch(config)
    ledger = Ledger(ledger_url(config.db, config.sheet))
    try:
        with bulk_allocations():
            start = resume(batch.plan, ledger, config, scope=batch.scope)
            changes = []
            for key, record in start.records.items():
                values = {
                    "state": "completed",
                    "request_id": _request_id(key),
                    "video_url": f"https://cdn.example.com/{key}.mp4",
                    "cost": record.estimated_cost,
                    "submit_attempts": 1,
                    "submitted_at": record.created_at,
                    "finished_at": record.created_at,
                }
                record.update(values)
                changes.append((key, values))
            ledger.update_jobs(changes)
        write_sheet(batch, start.records)
    finally:
        ledger.close()


def _request_id(key: str) -> str:
    """A request id shaped like the API's (a UUID), from the job's key."""
    h = (key * 2)[:32].ljust(32, "0")
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def _complete_naive(sheet: Path, db: Path) -> None:
    """The naive runner's db with every job completed, and its sheet written back so."""
    from batchgen.bench import naive

    loaded = naive.load_sheet(sheet)
    conn = naive.open_db(db)
    try:
        naive.resume(conn, loaded.jobs)
        for job in loaded.jobs:
            job.state, job.request_id = "completed", _request_id(job.key.split(":")[1] * 2)
            job.video_url = f"https://cdn.example.com/{job.index}.mp4"
        conn.executemany(
            "UPDATE jobs SET state = ?, request_id = ?, video_url = ? WHERE key = ?",
            [(j.state, j.request_id, j.video_url, j.key) for j in loaded.jobs],
        )
        conn.commit()
    finally:
        conn.close()
    naive.write_back(loaded)


def completed_sheet(who: str, work: Path, rows: int, kind: str) -> tuple[Path, Path]:
    """A completed sheet of `rows` rows (kind "csv" or "xlsx") and its ledger, for `who`."""
    write = write_csv_sheet if kind == "csv" else write_xlsx_sheet
    sheet = write(work / f"rerun-{who}.{kind}", rows)
    db = fresh_db(work / f"rerun-{who}-{kind}.db")
    if kind == "csv":  # batchgen's results table is a file beside a CSV
        sheet.with_name(sheet.stem + ".results.csv").unlink(missing_ok=True)
    code = "from batchgen.bench.rerun import complete_child; complete_child()"
    child_json([sys.executable, "-c", code, who, str(sheet), str(db)], who)
    return sheet, db


def rerun(who: str, sheet: Path, db: Path) -> ProcessFigures:
    """Rerun a completed sheet as its user would; whether the sheet file stayed as it was."""
    before = _identity(sheet)
    got = timed_process(rerun_command(who, sheet, db), env=command_env())
    got.untouched = _identity(sheet) == before
    if got.returncode != 0:
        raise RuntimeError(f"the rerun of {who} exited {got.returncode}")
    with contextlib.closing(sqlite3.connect(db)) as conn:
        (left,) = conn.execute("SELECT count(*) FROM jobs WHERE state != 'completed'").fetchone()
    if left:
        raise RuntimeError(f"the rerun of {who} left {left} job(s) not completed")
    return got


def _identity(path: Path) -> tuple[int, int, bytes]:
    stat = path.stat()
    return stat.st_mtime_ns, stat.st_size, path.read_bytes()


def median_figures(runs: list[ProcessFigures]) -> ProcessFigures:
    """The run of median wall time (with its own RSS); untouched only if every run left it."""
    ordered = sorted(runs, key=lambda run: run.wall_s)
    middle = ordered[len(ordered) // 2]
    return ProcessFigures(
        middle.wall_s,
        middle.peak_rss_mb,
        middle.returncode,
        untouched=all(run.untouched for run in runs),
    )


def rerun_figures(
    work: Path, rows: int, *, repeats: int, naive: bool
) -> dict[str, dict[str, dict[str, Any]]]:
    """Both runners' reruns of a completed sheet, as a CSV then as an xlsx: {who: {kind: ...}}.

    batchgen's first rerun takes the whole way (and marks the sheet), then `repeats` marked
    reruns alternate with the naive runner's, so both are measured in the same minutes. The
    naive runner's xlsx rerun (pandas, then openpyxl) is slow: it is run once.
    """
    got: dict[str, dict[str, dict[str, Any]]] = {"batchgen": {}, "naive": {}}
    for kind in ("csv", "xlsx"):
        sheet, db = completed_sheet("batchgen", work, rows, kind)
        theirs = completed_sheet("naive", work, rows, kind) if naive else None
        first = rerun("batchgen", sheet, db)
        ours: list[ProcessFigures] = []
        others: list[ProcessFigures] = []
        for i in range(repeats):
            ours.append(rerun("batchgen", sheet, db))
            if theirs is not None and (kind == "csv" or i == 0):
                others.append(rerun("naive", *theirs))
        marked = median_figures(ours)
        got["batchgen"][kind] = {
            "first_s": first.wall_s,
            "first_rss_mb": first.peak_rss_mb,
            "s": marked.wall_s,
            "rss_mb": marked.peak_rss_mb,
            "runs_s": [round(run.wall_s, 2) for run in ours],
            "untouched": first.untouched and marked.untouched,
        }
        if others:
            middle = median_figures(others)
            got["naive"][kind] = {
                "s": middle.wall_s,
                "rss_mb": middle.peak_rss_mb,
                "runs_s": [round(run.wall_s, 2) for run in others],
            }
    return got


def startup_figures(work: Path, jobs: int, *, repeats: int) -> dict[str, dict[str, float]]:
    """Median milliseconds of `batchgen --help`, `batchgen status` (a completed ledger of
    `jobs` jobs) and the naive runner's `--help`, each process from start to exit."""
    folder = work / "startup"
    folder.mkdir(parents=True, exist_ok=True)
    sheet, db = completed_sheet("batchgen", folder, jobs, "csv")
    python = [sys.executable, "-m"]
    commands = {
        ("batchgen", "help"): [*python, "batchgen", "--help"],
        ("batchgen", "status"): [*python, "batchgen", "status", str(sheet), "--db", str(db)],
        ("naive", "help"): [*python, "batchgen.bench.naive", "--help"],
    }
    walls: dict[tuple[str, str], list[float]] = {name: [] for name in commands}
    for _ in range(repeats):  # interleaved: a busy moment hurts every command alike
        for name, command in commands.items():
            got = timed_process(command, env=command_env())
            if got.returncode != 0:
                raise RuntimeError(f"{' '.join(command)} exited {got.returncode}")
            walls[name].append(got.wall_s * 1000)
    figures: dict[str, dict[str, float]] = {"batchgen": {}, "naive": {}}
    for (who, what), values in walls.items():
        figures[who][what] = statistics.median(values)
    return figures
