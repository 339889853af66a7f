"""The benchmark: scheduling efficiency, API calls, local overhead and size, beside a naive runner.

The simulator always runs in a separate process (`python -m batchgen simulate --port 0`), so
the runner under test and the HTTP server never share a GIL. The instant runs are the
commands a user runs, each in a fresh process timed from its start to its exit (imports,
ledger, write-back and exit included). The scheduling run goes through batchgen's library
entry point, `runner.run_batch`, with silent events, so the same code can be profiled
in-process. The size figures are measured in a fresh child process each, so the RSS
high-water mark belongs to that stage alone.
"""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from batchgen.bench.rerun import rerun_figures, startup_figures
from batchgen.bench.runs import (
    INSTANT_CONCURRENCY,
    RunFigures,
    child_json,
    fresh_db,
    instant_run,
    run_size_child,
    simulated_run,
)
from batchgen.bench.scenarios import (
    SCENARIOS,
    machine_speed_ms,
    packed_makespan,
    run_scenario,
)
from batchgen.bench.sheetfiles import write_csv_sheet, write_xlsx_sheet
from batchgen.bench.sizes import cpu_stall_us
from batchgen.bench.table import _ROWS as _ROWS
from batchgen.bench.table import TARGETS as TARGETS
from batchgen.bench.table import format_table as format_table
from batchgen.bench.table import result_json as result_json
from batchgen.bench.table import table_text as table_text
from batchgen.errors import ConfigError

FULL_SIZES: dict[str, Any] = {
    "jobs": 300,
    "capacity": 30,
    "min_duration": 0.5,
    "max_duration": 1.5,
    "instant_jobs": 2000,
    "instant_repeats": 3,
    "rows": 100_000,
    "scenarios": "full",
    "rerun_repeats": 3,
    "startup_repeats": 15,
}
QUICK_SIZES: dict[str, Any] = {
    "jobs": 20,
    "capacity": 4,
    "min_duration": 0.05,
    "max_duration": 0.15,
    "instant_jobs": 200,
    "instant_repeats": 1,
    "rows": 2000,
    "scenarios": "quick",
    "rerun_repeats": 1,
    "startup_repeats": 3,
}


@dataclass
class Figures:
    """One runner's figures; None where a figure does not apply or was not measured."""

    sched_wall_s: float | None = None  # the scheduling run, end to end
    sched_ideal_s: float | None = None  # its durations packed onto C slots, FIFO, no gaps
    sched_span_s: float | None = None  # first job created → last job finished, at the provider
    efficiency: float | None = None  # ideal / wall
    calls_per_job: float | None = None  # (submit + status + result) / jobs, from the simulator
    instant_wall_s: float | None = None
    instant_jobs_per_s: float | None = None
    instant_calls_per_job: float | None = None
    instant_runs: list[float] = field(default_factory=list)  # jobs/s of each instant run
    # batchgen's library entry point on the same jobs, imports and exit excluded
    instant_library_jobs_per_s: float | None = None
    instant_library_runs: list[float] = field(default_factory=list)
    load_s: float | None = None  # the size stage's xlsx sheet, for both runners
    write_s: float | None = None
    resume_s: float | None = None
    load_cpu_s: float | None = None  # CPU seconds of the same stages (less hurt by a busy host)
    write_cpu_s: float | None = None
    resume_cpu_s: float | None = None
    peak_rss_mb: float | None = None
    csv_load_s: float | None = None  # the same rows as a csv sheet
    csv_write_s: float | None = None
    csv_peak_rss_mb: float | None = None
    completed: dict[str, int] = field(default_factory=dict)  # jobs completed per run
    # per provider scenario (bench.scenarios): efficiency, calls_per_job, share_429, ...
    scenarios: dict[str, dict[str, Any]] = field(default_factory=dict)
    # the rerun of a completed sheet, by kind ("csv", "xlsx"): s, rss_mb (batchgen: its
    # marked reruns), first_s, first_rss_mb (batchgen's first rerun, the whole way)
    rerun: dict[str, dict[str, Any]] = field(default_factory=dict)
    startup_ms: dict[str, float] = field(default_factory=dict)  # help, status: median ms


@dataclass
class Machine:
    """Where the benchmark ran."""

    cpu: str
    cores: int
    python: str
    load: float | None = None  # 1-minute load average when the benchmark started
    speed_ms: list[float] = field(default_factory=list)  # sum(range(10**6)) before, after
    contention: float | None = None  # share of the run some task waited for a CPU (PSI)

    def line(self) -> str:
        """`AMD EPYC, 2 cores, Python 3.11.7, load 0.1 at start, CPU contention 20%`."""
        extra = "" if self.load is None else f", load {self.load:.1f} at start"
        if self.contention is not None:
            extra += f", CPU contention {100 * self.contention:.0f}% of the run"
        if self.speed_ms:
            took = " and ".join(f"{ms:.1f}" for ms in self.speed_ms)
            extra += f", sum(range(10**6)) took {took} ms before and after"
        return f"{self.cpu}, {self.cores} cores, Python {self.python}{extra}"


@dataclass
class BenchResult:
    """Everything one benchmark run measured."""

    settings: dict[str, Any]
    machine: Machine
    batchgen: Figures
    naive: Figures | None


# --------------------------------------------------------------------------- the runs


def _sched_figures(run: RunFigures, capacity: int, figures: Figures) -> None:
    durations = [float(r["duration"]) for r in run.records]
    ideal = packed_makespan(durations, capacity)
    created = [r["timeline"]["created"] for r in run.records]
    finished = [r["timeline"]["finished"] for r in run.records if r["timeline"]["finished"]]
    figures.sched_wall_s = run.wall_s
    figures.sched_ideal_s = ideal
    figures.sched_span_s = (max(finished) - min(created)) if finished and created else None
    figures.efficiency = ideal / run.wall_s if run.wall_s > 0 else None
    figures.calls_per_job = run.calls_per_job
    figures.completed["sched"] = run.completed


def _instant_figures(runs: list[RunFigures], figures: Figures) -> None:
    """The median of the instant runs (a shared machine's speed varies from run to run)."""
    runs = sorted(runs, key=lambda run: run.wall_s)
    middle = runs[len(runs) // 2]
    figures.instant_wall_s = middle.wall_s
    figures.instant_jobs_per_s = middle.jobs / middle.wall_s if middle.wall_s > 0 else None
    figures.instant_calls_per_job = middle.calls_per_job
    figures.instant_runs = [round(run.jobs / run.wall_s) for run in runs if run.wall_s > 0]
    figures.completed["instant"] = min(run.completed for run in runs)


def _instant_library_figures(workdir: Path, jobs: int, repeats: int, figures: Figures) -> None:
    """run_batch alone, each run in a fresh process, so the split of the figure shows."""
    code = "from batchgen.bench.runs import instant_library_child; instant_library_child()"
    rates, completed = [], jobs
    for i in range(repeats):
        command = [sys.executable, "-c", code, str(workdir / f"library{i}"), str(jobs)]
        got = child_json(command, "batchgen")
        completed = min(completed, int(got["completed"]))
        if got["jobs_per_s"] is not None:
            rates.append(float(got["jobs_per_s"]))
    figures.completed["library"] = completed
    if rates:
        figures.instant_library_jobs_per_s = sorted(rates)[len(rates) // 2]
        figures.instant_library_runs = [round(rate) for rate in rates]


# --------------------------------------------------------------------------- the benchmark


def machine() -> Machine:
    """CPU model, usable cores and Python version of this machine."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    load = None
    with contextlib.suppress(OSError, AttributeError):
        load = os.getloadavg()[0]
    return Machine(cpu=cpu, cores=cores, python=platform.python_version(), load=load)


def benchmark_sizes(*, quick: bool = False, **given: Any) -> dict[str, Any]:
    """FULL_SIZES (QUICK_SIZES with `quick`) overridden by the sizes given (None: not given)."""
    sizes = dict(QUICK_SIZES if quick else FULL_SIZES)
    sizes.update({name: value for name, value in given.items() if value is not None})
    return sizes


def _check_sizes(
    jobs: int, capacity: int, min_duration: float, max_duration: float, instant: int, rows: int
) -> None:
    if min(jobs, capacity, instant, rows) < 1:
        raise ConfigError("jobs, capacity, instant jobs and rows must each be at least 1")
    if not 0 <= min_duration <= max_duration:
        raise ConfigError(
            f"durations must satisfy 0 <= min <= max, not {min_duration:g} and {max_duration:g}"
        )


def run_benchmark(
    *,
    jobs: int = 300,
    capacity: int = 30,
    min_duration: float = 0.5,
    max_duration: float = 1.5,
    instant_jobs: int = 2000,
    instant_repeats: int = 3,
    rows: int = 100_000,
    scenarios: str = "quick",
    rerun_repeats: int = 3,
    startup_repeats: int = 15,
    naive: bool = True,
    workdir: Path | None = None,
) -> BenchResult:
    """Measure batchgen (and the naive runner) on the five goals; see the module docstring."""
    _check_sizes(jobs, capacity, min_duration, max_duration, instant_jobs, rows)
    settings = {
        "jobs": jobs,
        "capacity": capacity,
        "concurrency": 2 * capacity,
        "min_duration": min_duration,
        "max_duration": max_duration,
        "instant_jobs": instant_jobs,
        "instant_concurrency": INSTANT_CONCURRENCY,
        "instant_repeats": instant_repeats,
        "rows": rows,
        "scenarios": scenarios,
        "rerun_repeats": rerun_repeats,
        "startup_repeats": startup_repeats,
    }
    if min(rerun_repeats, startup_repeats) < 1:
        raise ConfigError("rerun and start-up repeats must each be at least 1")
    if scenarios not in SCENARIOS:
        raise ConfigError(f"scenarios must be one of {', '.join(SCENARIOS)}")
    host = machine()  # before the runs, so its load average tells what else was running
    host.speed_ms.append(machine_speed_ms())
    stall0, began = cpu_stall_us(), time.monotonic()
    own_dir = workdir is None
    work = Path(tempfile.mkdtemp(prefix="batchgen-bench-")) if workdir is None else workdir
    work.mkdir(parents=True, exist_ok=True)
    who_all = ["batchgen", "naive"] if naive else ["batchgen"]
    figures = {who: Figures() for who in who_all}
    try:
        for who in who_all:
            sched = simulated_run(
                who,
                workdir=work,
                tag="sched",
                jobs=jobs,
                capacity=capacity,
                min_duration=min_duration,
                max_duration=max_duration,
                concurrency=2 * capacity,
            )
            _sched_figures(sched, capacity, figures[who])
            instant = [
                instant_run(who, work / f"instant{i}", instant_jobs) for i in range(instant_repeats)
            ]
            _instant_figures(instant, figures[who])
            if who == "batchgen":
                _instant_library_figures(work, instant_jobs, instant_repeats, figures[who])
        for scenario in SCENARIOS[scenarios]:
            for who in scenario.runners(who_all):  # side by side: the same minute for both
                figures[who].scenarios[scenario.name] = run_scenario(who, scenario, work)
        _size_stages(work, rows, figures)
        reruns = rerun_figures(work, rows, repeats=rerun_repeats, naive=naive)
        startup = startup_figures(work, jobs, repeats=startup_repeats)
        for who, mine in figures.items():
            mine.rerun, mine.startup_ms = reruns[who], startup[who]
        host.speed_ms.append(machine_speed_ms())
        stall1 = cpu_stall_us()
        if stall0 is not None and stall1 is not None:
            host.contention = (stall1 - stall0) / 1e6 / max(time.monotonic() - began, 1e-9)
    finally:
        if own_dir:
            shutil.rmtree(work, ignore_errors=True)
    return BenchResult(settings, host, figures["batchgen"], figures.get("naive"))


def _size_stages(work: Path, rows: int, figures: dict[str, Figures]) -> None:
    """Each runner on its own copy of the xlsx (write-back changes it), then of the csv."""
    for who, mine in figures.items():
        xlsx = write_xlsx_sheet(work / f"size-{who}.xlsx", rows)
        _take_size(mine, run_size_child(who, xlsx, fresh_db(work / f"size-{who}-xlsx.db")))
        csv_sheet = write_csv_sheet(work / f"size-{who}.csv", rows)
        got = run_size_child(who, csv_sheet, fresh_db(work / f"size-{who}-csv.db"))
        mine.csv_load_s, mine.csv_write_s = got["load_s"], got["write_s"]
        mine.csv_peak_rss_mb = got["peak_rss_mb"]


def _take_size(figures: Figures, got: dict[str, float]) -> None:
    for name in (
        "load_s",
        "write_s",
        "resume_s",
        "load_cpu_s",
        "write_cpu_s",
        "resume_cpu_s",
        "peak_rss_mb",
    ):
        setattr(figures, name, got[name])
