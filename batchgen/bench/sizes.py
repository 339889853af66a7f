"""The benchmark's size stages, each run in a child process of its own (see benchmark)."""

from __future__ import annotations

import contextlib
import json
import resource
import sqlite3
import sys
import time
from pathlib import Path


def _peak_rss_mb() -> float:
    """This process's RSS high-water mark in MB (VmHWM, else ru_maxrss)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_stall_us() -> int | None:
    """Microseconds some task has waited for a CPU since boot (/proc/pressure/cpu), if known."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        first = Path("/proc/pressure/cpu").read_text().splitlines()[0]
        return int(first.rsplit("total=", 1)[1])
    return None


class _Stage:
    """Wall and CPU seconds of the `with` blocks it times (summed over several)."""

    wall = cpu = 0.0

    def __enter__(self) -> _Stage:
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.wall += time.perf_counter() - self._wall
        self.cpu += time.process_time() - self._cpu


def _size_batchgen(sheet: Path, db: Path) -> dict[str, float]:
    """Load+validate, resume a nearly-done ledger, write back every row; timed stages."""
    from batchgen import report, sheets
    from batchgen.batch import bulk_allocations, load_batch, source_name
    from batchgen.config import build_config
    from batchgen.ledger import Ledger, ledger_url
    from batchgen.resume import resume

    config = build_config(sheet, db=str(db))
    with _Stage() as load:
        batch = load_batch(config)
    if batch.plan.invalid or not batch.plan.jobs:
        raise RuntimeError(f"the size sheet did not validate: {len(batch.plan.invalid)} invalid")

    # Set-up, untimed: a first run's resume fills the ledger; then nearly all are done.
    url = ledger_url(config.db, config.sheet)
    ledger = Ledger(url)
    resume(batch.plan, ledger, config, scope=batch.scope)
    ledger.close()
    _mark_done(db, keep_every=200)

    ledger = Ledger(url)
    with _Stage() as decide, bulk_allocations():  # a rerun's work before its first submit
        start = resume(batch.plan, ledger, config, scope=batch.scope)
    to_submit = start.to_submit
    if not 0 < len(to_submit) < len(batch.plan.jobs):
        raise RuntimeError(f"resume left {len(to_submit)} of {len(batch.plan.jobs)} jobs")

    write = _Stage()
    with write, bulk_allocations():
        # a rerun reads its finished jobs' records when it first writes the sheet
        records = start.complete(ledger, batch.plan)
    ledger.close()
    for record in records.values():  # every row gets all four output columns
        record.state = "failed"
        record.request_id = record.request_id or f"req-{record.key}"
        record.video_url = record.video_url or f"https://cdn.example.com/{record.key}.mp4"
        record.error = "content moderation: the prompt was rejected (benchmark filler)"
    cells = report.sheet_cells(batch.plan, records)
    results = sheets.Results(
        headers=list(report.RESULT_HEADERS),
        rows=report.results_rows(batch.plan, records, source=source_name(batch.table)),
    )
    with write:
        sheets.write_back(batch.table, cells, results=results)
    return _stage_figures(load, decide, write)


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
    from batchgen.bench import naive

    with _Stage() as load:
        loaded = naive.load_sheet(sheet)
    conn = naive.open_db(db)
    naive.resume(conn, loaded.jobs)  # set-up: a first run adds every job
    conn.execute("UPDATE jobs SET state = 'completed', request_id = 'req-' || key")
    conn.execute("UPDATE jobs SET state = 'pending', request_id = NULL WHERE rowid % 200 = 0")
    conn.commit()
    conn.close()
    fresh = naive.load_sheet(sheet).jobs
    conn = naive.open_db(db)
    with _Stage() as resume:
        left = naive.resume(conn, fresh)
    conn.close()
    if not 0 < len(left) < len(fresh):
        raise RuntimeError(f"naive resume left {len(left)} of {len(fresh)} jobs")
    for job in fresh:
        job.state, job.request_id = "failed", job.request_id or "req-x"
        job.video_url = f"https://cdn.example.com/{job.key}.mp4"
        job.error = "content moderation: the prompt was rejected (benchmark filler)"
    loaded.jobs = fresh
    with _Stage() as write:
        naive.write_back(loaded)
    return _stage_figures(load, resume, write)


def size_child() -> None:
    """Entry of a size child process: argv = who, sheet, db; prints one JSON line."""
    who, sheet, db = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    figures = _size_batchgen(sheet, db) if who == "batchgen" else _size_naive(sheet, db)
    figures["peak_rss_mb"] = _peak_rss_mb()
    print(json.dumps(figures), flush=True)
