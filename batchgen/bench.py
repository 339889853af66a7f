"""The benchmark: scheduling efficiency, API calls, local overhead and size, beside a naive runner.

The simulator always runs in a separate process (`python -m batchgen simulate --port 0`), so
the runner under test and the HTTP server never share a GIL. batchgen runs through its library
entry point, `runner.run_batch`, with silent events: the figures are then batchgen's own work
(ledger, sheet and write-back included), not Python's start-up and imports, and the same code
can be profiled in-process. The size figures are measured in a fresh child process each, so
the RSS high-water mark belongs to that stage alone.
"""

from __future__ import annotations

import contextlib
import csv
import heapq
import io
import json
import os
import platform
import resource
import selectors
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import httpx

from batchgen.errors import ConfigError

TOKEN = "bench-token"
IMAGE = "https://images.example.com/product.png"
SIM_START_TIMEOUT = 30.0  # seconds for the simulator process to print its address and answer
SIM_STOP_TIMEOUT = 10.0
CHILD_TIMEOUT = 900.0  # seconds for one stage in its child process
FETCH_BATCH = 64  # simulator records fetched concurrently
FULL_SIZES: dict[str, Any] = {
    "jobs": 300,
    "capacity": 30,
    "min_duration": 0.5,
    "max_duration": 1.5,
    "instant_jobs": 2000,
    "instant_repeats": 3,
    "rows": 100_000,
}
QUICK_SIZES: dict[str, Any] = {
    "jobs": 20,
    "capacity": 4,
    "min_duration": 0.05,
    "max_duration": 0.15,
    "instant_jobs": 200,
    "instant_repeats": 1,
    "rows": 2000,
}
INSTANT_CONCURRENCY = 256
TARGETS = {
    "efficiency": "≥ 0.95",
    "calls_per_job": "≤ 3.5",
    "instant_jobs_per_s": "≥ 1000",
    "load_s": "< 10",
    "write_s": "< 20",
    "resume_s": "< 2",
    "peak_rss_mb": "< 1024",
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
    load_s: float | None = None  # the 100k-row xlsx sheet, for both runners
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


@dataclass
class Machine:
    """Where the benchmark ran."""

    cpu: str
    cores: int
    python: str
    load: float | None = None  # 1-minute load average when the benchmark started
    contention: float | None = None  # share of the run some task waited for a CPU (PSI)

    def line(self) -> str:
        """`AMD EPYC, 2 cores, Python 3.11.7, load 0.1 at start, CPU contention 20%`."""
        extra = "" if self.load is None else f", load {self.load:.1f} at start"
        if self.contention is not None:
            extra += f", CPU contention {100 * self.contention:.0f}% of the run"
        return f"{self.cpu}, {self.cores} cores, Python {self.python}{extra}"


@dataclass
class BenchResult:
    """Everything one benchmark run measured."""

    settings: dict[str, Any]
    machine: Machine
    batchgen: Figures
    naive: Figures | None


# --------------------------------------------------------------------------- the simulator


class SimulatorProcess:
    """`python -m batchgen simulate` on a free loopback port, as a context manager."""

    def __init__(
        self,
        *,
        capacity: int,
        min_duration: float,
        max_duration: float,
        seed: int = 1,
        log: Path | None = None,
    ) -> None:
        self.args = [
            "--host",
            "127.0.0.1",
            "--port",
            "0",  # the kernel picks a free port; the simulator prints it
            "--capacity",
            str(capacity),
            "--min-duration",
            repr(float(min_duration)),
            "--max-duration",
            repr(float(max_duration)),
            "--seed",
            str(seed),
        ]
        self.log = log
        self.base_url = ""
        self._proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> SimulatorProcess:
        """Start the process and return once the simulator answers."""
        stderr = self.log.open("ab") if self.log is not None else subprocess.DEVNULL
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "batchgen", "simulate", *self.args],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=stderr,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        finally:
            if self.log is not None and not isinstance(stderr, int):
                stderr.close()
        try:
            self.base_url = self._read_address()
            self._wait_until_answering()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _read_address(self) -> str:
        """The base URL from the simulator's first line, within SIM_START_TIMEOUT."""
        assert self._proc is not None and self._proc.stdout is not None
        deadline = time.monotonic() + SIM_START_TIMEOUT
        buffer = b""
        with selectors.DefaultSelector() as selector:
            selector.register(self._proc.stdout, selectors.EVENT_READ)
            while b"\n" not in buffer:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RuntimeError("the simulator did not print its address in time")
                if not selector.select(min(left, 0.5)):
                    if self._proc.poll() is not None:
                        raise RuntimeError(f"the simulator exited ({self._proc.returncode})")
                    continue
                chunk = os.read(self._proc.stdout.fileno(), 4096)
                if not chunk:
                    raise RuntimeError("the simulator closed its output before starting")
                buffer += chunk
        line = buffer.split(b"\n", 1)[0].decode()
        url = line.rsplit(" ", 1)[-1].strip()
        if not url.startswith("http://127.0.0.1:"):
            raise RuntimeError(f"unexpected simulator output: {line!r}")
        return url

    def _wait_until_answering(self) -> None:
        deadline = time.monotonic() + SIM_START_TIMEOUT
        with httpx.Client(base_url=self.base_url, timeout=2.0) as client:
            while True:
                try:
                    if client.get("/_sim/stats").status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the simulator at {self.base_url} does not answer")
                time.sleep(0.05)

    def __exit__(self, *exc_info: object) -> None:
        """Stop the process: SIGTERM, then SIGKILL if it lingers."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(SIM_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(SIM_STOP_TIMEOUT)
        if proc.stdout is not None:
            proc.stdout.close()

    def stats(self) -> dict[str, int]:
        """Calls per endpoint so far, as the simulator counted them."""
        with httpx.Client(base_url=self.base_url, timeout=30.0) as client:
            return dict(client.get("/_sim/stats").json())

    def jobs(self) -> list[dict[str, Any]]:
        """The simulator's record of every job, in submission order."""
        return _fetch_jobs(self.base_url)


def _fetch_jobs(base_url: str) -> list[dict[str, Any]]:
    """GET /_sim/submissions, then /_sim/jobs/{id} for each (a few at a time)."""
    import anyio

    async def fetch() -> list[dict[str, Any]]:
        limits = httpx.Limits(max_connections=FETCH_BATCH)
        async with httpx.AsyncClient(base_url=base_url, timeout=30.0, limits=limits) as client:
            ids = [s["request_id"] for s in (await client.get("/_sim/submissions")).json()]
            states: list[dict[str, Any]] = [{} for _ in ids]

            async def one(i: int) -> None:
                states[i] = (await client.get(f"/_sim/jobs/{ids[i]}")).json()

            for start in range(0, len(ids), FETCH_BATCH):
                async with anyio.create_task_group() as group:
                    for i in range(start, min(start + FETCH_BATCH, len(ids))):
                        group.start_soon(one, i)
            return states

    return anyio.run(fetch)


def packed_makespan(durations: list[float], slots: int) -> float:
    """The durations, in order, on `slots` workers that never idle: the FIFO makespan."""
    free = [0.0] * max(1, slots)
    end = 0.0
    for duration in durations:
        start = heapq.heappop(free)
        heapq.heappush(free, start + duration)
        end = max(end, start + duration)
    return end


# --------------------------------------------------------------------------- sheets


def _prompt(i: int) -> str:
    return f"Product {i} turns slowly on a marble pedestal, soft studio light, shot {i % 7}"


def write_csv_sheet(path: Path, rows: int) -> Path:
    """A CSV of `rows` distinct valid rows (prompt, image, one column of the user's)."""
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["prompt", "first_frame_image_url", "owner"])
        writer.writerows([_prompt(i), IMAGE, f"team {i % 37}"] for i in range(rows))
    return path


def write_xlsx_sheet(path: Path, rows: int) -> Path:
    """An .xlsx of `rows` distinct valid rows, shared strings like Excel's (fast to make)."""
    header = ["prompt", "first_frame_image_url", "resolution", "ratio", "owner"]
    strings: dict[str, int] = {}

    def ref(text: str) -> int:
        return strings.setdefault(text, len(strings))

    out = [
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
        f'<worksheet xmlns="{_NS_MAIN}"><dimension ref="A1:E{rows + 1}"/><sheetData>'
    ]
    letters = "ABCDE"
    for r, values in enumerate(_xlsx_rows(header, rows), start=1):
        cells = "".join(
            f'<c r="{letters[c]}{r}" t="s"><v>{ref(v)}</v></c>' for c, v in enumerate(values)
        )
        out.append(f'<row r="{r}">{cells}</row>')
    out.append("</sheetData></worksheet>")
    shared = "".join(f"<si><t>{escape(s)}</t></si>" for s in strings)
    parts = {
        "[Content_Types].xml": _CONTENT_TYPES,
        "_rels/.rels": _ROOT_RELS,
        "xl/workbook.xml": _WORKBOOK,
        "xl/_rels/workbook.xml.rels": _WORKBOOK_RELS,
        "xl/styles.xml": _STYLES,
        "xl/sharedStrings.xml": (
            '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
            f'<sst xmlns="{_NS_MAIN}" count="{rows * 5 + 5}" uniqueCount="{len(strings)}">'
            f"{shared}</sst>"
        ),
        "xl/worksheets/sheet1.xml": "".join(out),
    }
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, text in parts.items():
            zf.writestr(name, text.encode("utf-8"))
    return path


def _xlsx_rows(header: list[str], rows: int) -> Iterator[list[str]]:
    yield header
    for i in range(rows):
        yield [_prompt(i), IMAGE, ("480p", "720p", "1080p")[i % 3], "16:9", f"team {i % 37}"]


_NS_MAIN = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
_NS_REL = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
_CT = "application/vnd.openxmlformats-officedocument.spreadsheetml"
_CONTENT_TYPES = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
    '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
    '<Default Extension="rels" '
    'ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
    '<Default Extension="xml" ContentType="application/xml"/>'
    f'<Override PartName="/xl/workbook.xml" ContentType="{_CT}.sheet.main+xml"/>'
    f'<Override PartName="/xl/worksheets/sheet1.xml" ContentType="{_CT}.worksheet+xml"/>'
    f'<Override PartName="/xl/sharedStrings.xml" ContentType="{_CT}.sharedStrings+xml"/>'
    f'<Override PartName="/xl/styles.xml" ContentType="{_CT}.styles+xml"/>'
    "</Types>"
)
_ROOT_RELS = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
    '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
    f'<Relationship Id="rId1" Type="{_NS_REL}/officeDocument" Target="xl/workbook.xml"/>'
    "</Relationships>"
)
_WORKBOOK = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
    f'<workbook xmlns="{_NS_MAIN}" xmlns:r="{_NS_REL}">'
    '<sheets><sheet name="Ads" sheetId="1" r:id="rId1"/></sheets></workbook>'
)
_WORKBOOK_RELS = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
    '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
    f'<Relationship Id="rId1" Type="{_NS_REL}/worksheet" Target="worksheets/sheet1.xml"/>'
    f'<Relationship Id="rId2" Type="{_NS_REL}/sharedStrings" Target="sharedStrings.xml"/>'
    f'<Relationship Id="rId3" Type="{_NS_REL}/styles" Target="styles.xml"/>'
    "</Relationships>"
)
_STYLES = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
    f'<styleSheet xmlns="{_NS_MAIN}">'
    '<fonts count="1"><font><sz val="11"/><name val="Calibri"/></font></fonts>'
    '<fills count="1"><fill><patternFill patternType="none"/></fill></fills>'
    '<borders count="1"><border/></borders>'
    '<cellStyleXfs count="1"><xf numFmtId="0" fontId="0" fillId="0" borderId="0"/></cellStyleXfs>'
    '<cellXfs count="1"><xf numFmtId="0" fontId="0" fillId="0" borderId="0" xfId="0"/></cellXfs>'
    "</styleSheet>"
)


# --------------------------------------------------------------------------- the runs


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


def run_batchgen_once(sheet: Path, db: Path, base_url: str, concurrency: int) -> tuple[float, int]:
    """batchgen's library entry point on `sheet`; returns (wall seconds, jobs completed)."""
    from batchgen.config import build_config
    from batchgen.runner import run_batch

    config = build_config(sheet, base_url=base_url, concurrency=concurrency, db=str(db))
    began = time.perf_counter()
    result = run_batch(config, events=SilentEvents(), token=TOKEN)
    wall = time.perf_counter() - began
    return wall, result.outcome.counts.get("completed", 0)


def run_naive_once(sheet: Path, db: Path, base_url: str, concurrency: int) -> tuple[float, int]:
    """The naive runner on `sheet`; returns (wall seconds, jobs completed)."""
    from batchgen._naive import run_naive

    began = time.perf_counter()
    result = run_naive(sheet, base_url=base_url, token=TOKEN, db=db, concurrency=concurrency)
    wall = time.perf_counter() - began
    return wall, result.counts.get("completed", 0)


def _simulated_run(
    who: str,
    *,
    workdir: Path,
    tag: str,
    jobs: int,
    capacity: int,
    min_duration: float,
    max_duration: float,
    concurrency: int,
    keep_records: bool,
) -> RunFigures:
    """A fresh simulator process, a fresh sheet and ledger, one run, the simulator's record."""
    sheet = write_csv_sheet(workdir / f"{tag}-{who}.csv", jobs)
    db = _fresh(workdir / f"{tag}-{who}.db")
    run = run_batchgen_once if who == "batchgen" else run_naive_once
    with SimulatorProcess(
        capacity=capacity,
        min_duration=min_duration,
        max_duration=max_duration,
        log=workdir / "simulator.log",
    ) as sim:
        wall, completed = run(sheet, db, sim.base_url, concurrency)
        stats = sim.stats()
        records = sim.jobs() if keep_records else []
    return RunFigures(wall, jobs, completed, stats, records)


def _fresh(db: Path) -> Path:
    """`db` with any ledger of an earlier benchmark in the same folder removed."""
    for suffix in ("", "-wal", "-shm", "-journal"):
        db.with_name(db.name + suffix).unlink(missing_ok=True)
    return db


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


# --------------------------------------------------------------------------- size (child)


def _peak_rss_mb() -> float:
    """This process's RSS high-water mark in MB (VmHWM, else ru_maxrss)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cpu_stall_us() -> int | None:
    """Microseconds some task has waited for a CPU since boot (/proc/pressure/cpu), if known."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        first = Path("/proc/pressure/cpu").read_text().splitlines()[0]
        return int(first.rsplit("total=", 1)[1])
    return None


class _Stage:
    """Wall and CPU seconds of a `with` block."""

    wall = cpu = 0.0

    def __enter__(self) -> _Stage:
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.wall = time.perf_counter() - self._wall
        self.cpu = time.process_time() - self._cpu


def _size_batchgen(sheet: Path, db: Path) -> dict[str, float]:
    """Load+validate, resume a nearly-done ledger, write back every row; timed stages."""
    from batchgen import report, sheets
    from batchgen.config import build_config
    from batchgen.ledger import Ledger, ledger_url
    from batchgen.runner import load_batch, plan_resume, reconcile

    config = build_config(sheet, db=str(db))
    with _Stage() as load:
        batch = load_batch(config)
    if batch.plan.invalid or not batch.plan.jobs:
        raise RuntimeError(f"the size sheet did not validate: {len(batch.plan.invalid)} invalid")

    # Set-up, untimed: a first run's reconcile fills the ledger; then nearly all are done.
    url = ledger_url(config.db, config.sheet)
    ledger = Ledger(url)
    reconcile(batch, ledger)
    ledger.close()
    _mark_done(db, keep_every=200)

    ledger = Ledger(url)
    with _Stage() as resume:
        records = reconcile(batch, ledger)
        to_submit, _ = plan_resume(batch, ledger, records)
    ledger.close()
    if not 0 < len(to_submit) < len(batch.plan.jobs):
        raise RuntimeError(f"resume left {len(to_submit)} of {len(batch.plan.jobs)} jobs")

    for record in records.values():  # every row gets all four output columns
        record.state = "failed"
        record.request_id = record.request_id or f"req-{record.key}"
        record.video_url = record.video_url or f"https://cdn.example.com/{record.key}.mp4"
        record.error = "content moderation: the prompt was rejected (benchmark filler)"
    cells = report.sheet_cells(batch.plan, records)
    results = sheets.Results(
        headers=list(report.RESULT_HEADERS), rows=report.results_rows(batch.plan, records)
    )
    with _Stage() as write:
        sheets.write_back(batch.table, cells, results=results)
    return _stage_figures(load, resume, write)


def _stage_figures(load: _Stage, resume: _Stage, write: _Stage) -> dict[str, float]:
    return {
        "load_s": load.wall,
        "resume_s": resume.wall,
        "write_s": write.wall,
        "load_cpu_s": load.cpu,
        "resume_cpu_s": resume.cpu,
        "write_cpu_s": write.cpu,
    }


def _mark_done(db: Path, *, keep_every: int) -> None:
    """Mark every job of a ledger completed (with request_id and video) but 1 in keep_every."""
    with contextlib.closing(sqlite3.connect(db)) as conn:
        conn.execute(
            "UPDATE jobs SET state = 'completed', request_id = 'req-' || key, "
            "video_url = 'https://cdn.example.com/' || key || '.mp4', cost = estimated_cost, "
            "submit_attempts = 1, submitted_at = created_at, finished_at = created_at"
        )
        conn.execute(
            "UPDATE jobs SET state = 'pending', request_id = NULL, video_url = NULL "
            "WHERE rowid % ? = 0",
            (keep_every,),
        )
        conn.commit()


def _size_naive(sheet: Path, db: Path) -> dict[str, float]:
    """The naive runner's load, resume (its own db) and write-back of every row; timed."""
    from batchgen import _naive

    with _Stage() as load:
        loaded = _naive.load_sheet(sheet)
    conn = _naive.open_db(db)
    _naive.resume(conn, loaded.jobs)  # set-up: a first run adds every job
    conn.execute("UPDATE jobs SET state = 'completed', request_id = 'req-' || key")
    conn.execute("UPDATE jobs SET state = 'pending', request_id = NULL WHERE rowid % 200 = 0")
    conn.commit()
    conn.close()
    fresh = _naive.load_sheet(sheet).jobs
    conn = _naive.open_db(db)
    with _Stage() as resume:
        left = _naive.resume(conn, fresh)
    conn.close()
    if not 0 < len(left) < len(fresh):
        raise RuntimeError(f"naive resume left {len(left)} of {len(fresh)} jobs")
    for job in fresh:
        job.state, job.request_id = "failed", job.request_id or "req-x"
        job.video_url = f"https://cdn.example.com/{job.key}.mp4"
        job.error = "content moderation: the prompt was rejected (benchmark filler)"
    loaded.jobs = fresh
    with _Stage() as write:
        _naive.write_back(loaded)
    return _stage_figures(load, resume, write)


def instant_child() -> None:
    """Entry of an instant-run child process: argv = who, workdir, jobs; prints one JSON line."""
    who, workdir, jobs = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
    workdir.mkdir(parents=True, exist_ok=True)
    run = _simulated_run(
        who,
        workdir=workdir,
        tag="instant",
        jobs=jobs,
        capacity=INSTANT_CONCURRENCY,
        min_duration=0.0,
        max_duration=0.0,
        concurrency=INSTANT_CONCURRENCY,
        keep_records=False,
    )
    print(json.dumps(asdict(run)), flush=True)


def _instant_run_in_child(who: str, workdir: Path, jobs: int) -> RunFigures:
    """One instant run in a fresh process, as a user's run is: no heap left by other stages."""
    code = "from batchgen.bench import instant_child; instant_child()"
    got = _child_json([sys.executable, "-c", code, who, str(workdir), str(jobs)], who)
    return RunFigures(**got)


def size_child() -> None:
    """Entry of a size child process: argv = who, sheet, db; prints one JSON line."""
    who, sheet, db = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    figures = _size_batchgen(sheet, db) if who == "batchgen" else _size_naive(sheet, db)
    figures["peak_rss_mb"] = _peak_rss_mb()
    print(json.dumps(figures), flush=True)


def _run_size_child(who: str, sheet: Path, db: Path) -> dict[str, float]:
    code = "from batchgen.bench import size_child; size_child()"
    return _child_json([sys.executable, "-c", code, who, str(sheet), str(db)], who)


def _child_json(command: list[str], who: str) -> dict[str, Any]:
    """Run a benchmark child process and return the JSON object on its last output line."""
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"a benchmark stage of {who} failed: {done.stderr.strip()[-2000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


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
    }
    host = machine()  # before the runs, so its load average tells what else was running
    stall0, began = _cpu_stall_us(), time.monotonic()
    own_dir = workdir is None
    work = Path(tempfile.mkdtemp(prefix="batchgen-bench-")) if workdir is None else workdir
    work.mkdir(parents=True, exist_ok=True)
    who_all = ["batchgen", "naive"] if naive else ["batchgen"]
    figures = {who: Figures() for who in who_all}
    try:
        for who in who_all:
            sched = _simulated_run(
                who,
                workdir=work,
                tag="sched",
                jobs=jobs,
                capacity=capacity,
                min_duration=min_duration,
                max_duration=max_duration,
                concurrency=2 * capacity,
                keep_records=True,
            )
            _sched_figures(sched, capacity, figures[who])
            instant = [
                _instant_run_in_child(who, work / f"instant{i}", instant_jobs)
                for i in range(instant_repeats)
            ]
            _instant_figures(instant, figures[who])
        _size_stages(work, rows, figures)
        stall1 = _cpu_stall_us()
        if stall0 is not None and stall1 is not None:
            host.contention = (stall1 - stall0) / 1e6 / max(time.monotonic() - began, 1e-9)
    finally:
        if own_dir:
            shutil.rmtree(work, ignore_errors=True)
    return BenchResult(settings, host, figures["batchgen"], figures.get("naive"))


def _size_stages(work: Path, rows: int, figures: dict[str, Figures]) -> None:
    xlsx = write_xlsx_sheet(work / "size.xlsx", rows)
    got = _run_size_child("batchgen", xlsx, _fresh(work / "size-xlsx.db"))
    mine = figures["batchgen"]
    _take_size(mine, got)
    csv_sheet = write_csv_sheet(work / "size-batchgen.csv", rows)
    got = _run_size_child("batchgen", csv_sheet, _fresh(work / "size-csv.db"))
    mine.csv_load_s, mine.csv_write_s = got["load_s"], got["write_s"]
    mine.csv_peak_rss_mb = got["peak_rss_mb"]
    if "naive" in figures:
        theirs = figures["naive"]
        xlsx = write_xlsx_sheet(work / "size-naive.xlsx", rows)
        _take_size(theirs, _run_size_child("naive", xlsx, _fresh(work / "size-naive-xlsx.db")))
        csv_sheet = write_csv_sheet(work / "size-naive.csv", rows)
        got = _run_size_child("naive", csv_sheet, _fresh(work / "size-naive-csv.db"))
        theirs.csv_peak_rss_mb = got["peak_rss_mb"]
        theirs.csv_load_s, theirs.csv_write_s = got["load_s"], got["write_s"]


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


# --------------------------------------------------------------------------- the table

# (label, attribute, format, target key)
_ROWS: tuple[tuple[str, str, str, str | None], ...] = (
    ("efficiency (ideal / wall)", "efficiency", "{:.3f}", "efficiency"),
    ("  scheduling run wall s", "sched_wall_s", "{:.2f}", None),
    ("  ideal s (FIFO on C slots)", "sched_ideal_s", "{:.2f}", None),
    ("  provider busy span s", "sched_span_s", "{:.2f}", None),
    ("calls per job", "calls_per_job", "{:.2f}", "calls_per_job"),
    ("instant jobs/s (end to end, median)", "instant_jobs_per_s", "{:.0f}", "instant_jobs_per_s"),
    ("  each instant run, jobs/s", "instant_runs", "{}", None),
    ("  instant calls per job", "instant_calls_per_job", "{:.2f}", None),
    ("load + validate s (100k-row xlsx)", "load_s", "{:.2f}", "load_s"),
    ("  load CPU s", "load_cpu_s", "{:.2f}", None),
    ("write back s (100k-row xlsx)", "write_s", "{:.2f}", "write_s"),
    ("  write CPU s", "write_cpu_s", "{:.2f}", None),
    ("resume s", "resume_s", "{:.3f}", "resume_s"),
    ("  resume CPU s", "resume_cpu_s", "{:.3f}", None),
    ("peak memory MB", "peak_rss_mb", "{:.0f}", "peak_rss_mb"),
    ("  load s, same rows as csv", "csv_load_s", "{:.2f}", None),
    ("  write s, same rows as csv", "csv_write_s", "{:.2f}", None),
    ("  peak memory MB, csv", "csv_peak_rss_mb", "{:.0f}", None),
)


def _cell(figures: Figures | None, attribute: str, fmt: str) -> str:
    value = None if figures is None else getattr(figures, attribute)
    if isinstance(value, list):
        return ", ".join(str(item) for item in value) if value else "—"
    return "—" if value is None else fmt.format(value)


def format_table(result: BenchResult) -> Any:
    """The results as one rich Table: a column for batchgen, one for the naive runner."""
    from rich.table import Table

    s = result.settings
    title = (
        f"batchgen bench: {s['jobs']} jobs, C={s['capacity']}, concurrency {s['concurrency']}, "
        f"{s['min_duration']:g}–{s['max_duration']:g} s; {s['instant_jobs']} instant jobs at "
        f"concurrency {s['instant_concurrency']}; {s['rows']:,} rows"
    )
    table = Table(title=title, caption=f"machine: {result.machine.line()}")
    table.add_column("figure")
    table.add_column("batchgen", justify="right")
    table.add_column("naive", justify="right")
    table.add_column("target", justify="right")
    for label, attribute, fmt, target in _ROWS:
        table.add_row(
            label,
            _cell(result.batchgen, attribute, fmt),
            _cell(result.naive, attribute, fmt),
            TARGETS.get(target or "", ""),
        )
    return table


def table_text(result: BenchResult, *, width: int = 110) -> str:
    """The table as plain text (no colours), for logs and tests."""
    from rich.console import Console

    console = Console(file=io.StringIO(), width=width, color_system=None, record=True)
    console.print(format_table(result))
    return console.export_text()


def result_json(result: BenchResult) -> str:
    """The whole result as JSON."""
    return json.dumps(asdict(result), indent=2)
