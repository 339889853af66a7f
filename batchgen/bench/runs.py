"""The benchmark's runs: each runner against a simulator process, and its child processes."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from batchgen.bench.sheetfiles import write_csv_sheet
from batchgen.bench.simprocess import SimulatorProcess

TOKEN = "bench-token"
CHILD_TIMEOUT = 900.0  # seconds for one stage in its child process
INSTANT_CONCURRENCY = 256


class SilentEvents:
    """The pool's Events, saying nothing (notices are kept)."""

    def __init__(self) -> None:
        self.notices: list[str] = []

    def job_changed(self, record: Any, previous: str) -> None:
        """Ignore a state change."""

    def notice(self, message: str) -> None:
        """Keep a notice."""
        self.notices.append(message)


@dataclass
class RunFigures:
    """One run against the simulator."""

    wall_s: float
    jobs: int
    completed: int
    stats: dict[str, int]
    records: list[dict[str, Any]]

    @property
    def calls_per_job(self) -> float:
        """(submit + status + result) per job, as the simulator counted them."""
        calls = sum(self.stats.get(k, 0) for k in ("submit", "status", "result"))
        return calls / max(1, self.jobs)


def run_batchgen_once(
    sheet: Path, db: Path, base_url: str, concurrency: int, rate: float | None = None
) -> tuple[float, int]:
    """batchgen's library entry point on `sheet` (with `--rate`, if given); returns (wall
    seconds, jobs completed)."""
    from batchgen.config import build_config
    from batchgen.runner import run_batch

    config = build_config(sheet, base_url=base_url, concurrency=concurrency, db=str(db), rate=rate)
    began = time.perf_counter()
    result = run_batch(config, events=SilentEvents(), token=TOKEN)
    wall = time.perf_counter() - began
    return wall, result.outcome.counts.get("completed", 0)


def run_naive_once(sheet: Path, db: Path, base_url: str, concurrency: int) -> tuple[float, int]:
    """The naive runner on `sheet`; returns (wall seconds, jobs completed)."""
    from batchgen.bench.naive import run_naive

    began = time.perf_counter()
    result = run_naive(sheet, base_url=base_url, token=TOKEN, db=db, concurrency=concurrency)
    wall = time.perf_counter() - began
    return wall, result.counts.get("completed", 0)


def simulated_run(
    who: str,
    *,
    workdir: Path,
    tag: str,
    jobs: int,
    capacity: int,
    min_duration: float,
    max_duration: float,
    concurrency: int,
    sim_args: tuple[str, ...] = (),
    rate: float | None = None,
) -> RunFigures:
    """A fresh simulator process, a fresh sheet and ledger, one run, the simulator's record.

    `rate` is batchgen's `--rate` (the naive runner has none).
    """
    sheet = write_csv_sheet(workdir / f"{tag}-{who}.csv", jobs)
    db = fresh_db(workdir / f"{tag}-{who}.db")
    with SimulatorProcess(
        capacity=capacity,
        min_duration=min_duration,
        max_duration=max_duration,
        log=workdir / "simulator.log",
        extra=sim_args,
    ) as sim:
        if who == "batchgen":
            wall, completed = run_batchgen_once(sheet, db, sim.base_url, concurrency, rate)
        else:
            wall, completed = run_naive_once(sheet, db, sim.base_url, concurrency)
        stats = sim.stats()
        records = sim.jobs()
    return RunFigures(wall, jobs, completed, stats, records)


def fresh_db(db: Path) -> Path:
    """`db` with any ledger of an earlier benchmark in the same folder removed."""
    for suffix in ("", "-wal", "-shm", "-journal"):
        db.with_name(db.name + suffix).unlink(missing_ok=True)
    return db


def instant_run(who: str, workdir: Path, jobs: int) -> RunFigures:
    """One instant run as a user's: the command in a fresh process, from its start to its exit.

    Start-up, imports and exit count, as they do for a cron job: batchgen runs as
    `python -m batchgen run SHEET`, the naive runner as `python -m batchgen.bench.naive SHEET`.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    sheet = write_csv_sheet(workdir / f"instant-{who}.csv", jobs)
    db = fresh_db(workdir / f"instant-{who}.db")
    concurrency = str(INSTANT_CONCURRENCY)
    if who == "batchgen":
        command = ["-m", "batchgen", "run", str(sheet), "--db", str(db)]
    else:
        command = ["-m", "batchgen.bench.naive", str(sheet), "--db", str(db)]
    with SimulatorProcess(
        capacity=INSTANT_CONCURRENCY,
        min_duration=0.0,
        max_duration=0.0,
        log=workdir / "simulator.log",
    ) as sim:
        # none of the caller's API or ledger settings
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNCOMFY_", "BATCHGEN_"))}
        env |= {"RUNCOMFY_API_TOKEN": TOKEN, "RUNCOMFY_BASE_URL": sim.base_url}
        began = time.perf_counter()
        done = _child([sys.executable, *command, "--concurrency", concurrency], env=env)
        wall = time.perf_counter() - began
        stats = sim.stats()
    if done.returncode not in (0, 1):
        raise RuntimeError(f"the instant run of {who} failed: {done.stderr.strip()[-2000:]}")
    with contextlib.closing(sqlite3.connect(db)) as conn:
        query = "SELECT count(*) FROM jobs WHERE state = 'completed'"
        (completed,) = conn.execute(query).fetchone()
    return RunFigures(wall, jobs, int(completed), stats, [])


def instant_library_child() -> None:
    """Entry of a child process: run_batch on an instant run; argv = workdir, jobs."""
    workdir, jobs = Path(sys.argv[1]), int(sys.argv[2])
    workdir.mkdir(parents=True, exist_ok=True)
    run = simulated_run(
        "batchgen",
        workdir=workdir,
        tag="library",
        jobs=jobs,
        capacity=INSTANT_CONCURRENCY,
        min_duration=0.0,
        max_duration=0.0,
        concurrency=INSTANT_CONCURRENCY,
    )
    rate = run.jobs / run.wall_s if run.wall_s > 0 else None
    print(json.dumps({"jobs_per_s": rate, "completed": run.completed}))


def run_size_child(who: str, sheet: Path, db: Path) -> dict[str, float]:
    code = "from batchgen.bench.sizes import size_child; size_child()"
    return child_json([sys.executable, "-c", code, who, str(sheet), str(db)], who)


def _child(
    command: list[str], *, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a benchmark child process to its end, its output captured."""
    return subprocess.run(
        command,
        env=env,
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def child_json(command: list[str], who: str) -> dict[str, Any]:
    """Run a benchmark child process and return the JSON object on its last output line."""
    done = _child(command)
    if done.returncode != 0:
        raise RuntimeError(f"a benchmark stage of {who} failed: {done.stderr.strip()[-2000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))
