"""A deliberately naive runner, the benchmark's yardstick: asyncio, httpx and plain sqlite3.

It does what a careful first version would: read the sheet (a CSV with the csv module, an
xlsx with pandas.read_excel), one job per row, an asyncio.Semaphore for concurrency, a status
poll every 2 seconds, one sqlite3 commit per change, and the results written back at the end
(a CSV rewritten; an xlsx opened with openpyxl, its cells set and saved, keeping the user's
formatting). It is correct (a rerun
follows jobs it already submitted and never submits a job twice) but makes no effort to be
fast.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import json
import os
import sqlite3
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from batchgen.models import DEFAULT_MODEL_ID

INPUT_COLUMNS = (
    "prompt",
    "first_frame_image_url",
    "resolution",
    "ratio",
    "duration",
    "generate_audio",
    "camera_fixed",
)
REQUIRED_COLUMNS = ("prompt", "first_frame_image_url")
OUTPUT_COLUMNS = ("request_id", "status", "video_url", "error")
FINAL = frozenset({"completed", "failed", "cancelled"})
POLL_INTERVAL = 2.0
SUBMIT_TRIES = 5
JOB_TIMEOUT = 1800.0


@dataclass
class NaiveJob:
    """One row of the sheet as a job."""

    index: int  # 0-based data row index
    key: str
    payload: dict[str, Any]
    state: str = "pending"
    request_id: str | None = None
    video_url: str | None = None
    error: str | None = None


@dataclass
class NaiveSheet:
    """The CSV as read: header, data rows and the jobs they make."""

    path: Path
    header: list[str]
    rows: list[list[str]]
    jobs: list[NaiveJob] = field(default_factory=list)
    invalid: dict[int, str] = field(default_factory=dict)  # row index → error


@dataclass
class NaiveResult:
    """How a naive run ended."""

    counts: dict[str, int]
    calls: dict[str, int]


def _read_rows(path: Path) -> tuple[list[str], list[list[str]]]:
    """Header and non-blank data rows of a CSV or xlsx file, as text."""
    if path.suffix.lower() == ".xlsx":
        import pandas as pd

        frame = pd.read_excel(path, dtype=str, keep_default_na=False)
        header = [str(name) for name in frame.columns]
        rows = [[str(cell) for cell in row] for row in frame.itertuples(index=False)]
    else:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            header = next(reader, [])
            rows = list(reader)
    return header, [row for row in rows if any(cell.strip() for cell in row)]


def load_sheet(path: Path) -> NaiveSheet:
    """Read the sheet and validate that every row has the required cells."""
    header, rows = _read_rows(path)
    sheet = NaiveSheet(path, header, rows)
    columns = {name.strip().lower(): i for i, name in enumerate(header)}
    for index, row in enumerate(rows):
        payload = {}
        for name in INPUT_COLUMNS:
            i = columns.get(name)
            if i is not None and i < len(row) and row[i].strip():
                payload[name] = row[i].strip()
        missing = [name for name in REQUIRED_COLUMNS if name not in payload]
        if missing:
            sheet.invalid[index] = f"missing {', '.join(missing)}"
            continue
        blob = json.dumps(payload, sort_keys=True).encode()
        key = f"{index}:{hashlib.sha1(blob).hexdigest()[:16]}"
        sheet.jobs.append(NaiveJob(index, key, payload))
    return sheet


def open_db(path: Path) -> sqlite3.Connection:
    """The job table (created if new); default journal mode, a commit is a sync to disk."""
    conn = sqlite3.connect(path)
    conn.execute(
        "CREATE TABLE IF NOT EXISTS jobs (key TEXT PRIMARY KEY, state TEXT NOT NULL, "
        "request_id TEXT, video_url TEXT, error TEXT)"
    )
    conn.commit()
    return conn


def resume(conn: sqlite3.Connection, jobs: list[NaiveJob]) -> list[NaiveJob]:
    """Load known jobs' states from the db, add new ones; return the jobs not final yet."""
    known = {
        row[0]: row[1:]
        for row in conn.execute("SELECT key, state, request_id, video_url, error FROM jobs")
    }
    fresh = []
    for job in jobs:
        if job.key in known:
            job.state, job.request_id, job.video_url, job.error = known[job.key]
        else:
            fresh.append((job.key, job.state))
    conn.executemany("INSERT INTO jobs (key, state) VALUES (?, ?)", fresh)
    conn.commit()
    return [job for job in jobs if job.state not in FINAL and job.state != "unknown"]


def save(conn: sqlite3.Connection, job: NaiveJob) -> None:
    """Write one job's state and commit."""
    conn.execute(
        "UPDATE jobs SET state = ?, request_id = ?, video_url = ?, error = ? WHERE key = ?",
        (job.state, job.request_id, job.video_url, job.error, job.key),
    )
    conn.commit()


def write_back(sheet: NaiveSheet) -> None:
    """Write the four output columns (reused if present) into the sheet, atomically."""
    header = list(sheet.header)
    names = [h.strip().lower() for h in header]
    positions = {}
    for name in OUTPUT_COLUMNS:
        if name not in names:
            header.append(name)
            names.append(name)
        positions[name] = names.index(name)
    by_index = {job.index: job for job in sheet.jobs}
    out = []
    for index, row in enumerate(sheet.rows):
        row = row + [""] * (len(header) - len(row))
        job = by_index.get(index)
        if job is not None:
            values = [job.request_id, job.state, job.video_url, job.error]
        else:
            values = ["", "invalid", "", sheet.invalid.get(index, "")]
        for name, value in zip(OUTPUT_COLUMNS, values, strict=True):
            row[positions[name]] = value or ""
        out.append(row)
    if sheet.path.suffix.lower() == ".xlsx":
        _write_xlsx(sheet.path, header, out, positions)
        return
    fd, tmp = tempfile.mkstemp(dir=sheet.path.parent, suffix=".tmp")
    with os.fdopen(fd, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(out)
    os.replace(tmp, sheet.path)


def _write_xlsx(
    path: Path, header: list[str], rows: list[list[str]], positions: dict[str, int]
) -> None:
    """Set the output cells with openpyxl (first worksheet) and save, atomically."""
    import openpyxl

    book = openpyxl.load_workbook(path)
    sheet = book.worksheets[0]
    for name in OUTPUT_COLUMNS:
        column = positions[name] + 1
        sheet.cell(row=1, column=column, value=header[positions[name]])
        for number, row in enumerate(rows, start=2):
            sheet.cell(row=number, column=column, value=row[positions[name]])
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".xlsx")
    os.close(fd)
    book.save(tmp)
    os.replace(tmp, path)


class _Runner:
    """The event-loop part: submit under a semaphore, poll, fetch the result."""

    def __init__(
        self, conn: sqlite3.Connection, client: httpx.AsyncClient, concurrency: int, poll: float
    ) -> None:
        self.conn = conn
        self.client = client
        self.slots = asyncio.Semaphore(concurrency)
        self.poll = poll
        self.calls = {"submit": 0, "status": 0, "result": 0}

    async def run_job(self, job: NaiveJob, model: str) -> None:
        """Submit (unless already submitted) and follow one job to its end."""
        async with self.slots:
            if job.request_id is None and not await self._submit(job, model):
                return
            await self._follow(job)

    async def _submit(self, job: NaiveJob, model: str) -> bool:
        for attempt in range(SUBMIT_TRIES):
            self.calls["submit"] += 1
            try:
                response = await self.client.post(f"/v1/models/{model}", json=job.payload)
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout):
                await asyncio.sleep(1.0 + attempt)  # never sent: safe to try again
                continue
            except httpx.HTTPError as exc:
                job.state, job.error = "unknown", f"submit got no answer: {exc!r}"
                save(self.conn, job)
                return False
            if response.status_code == 429 or response.status_code >= 500:
                await asyncio.sleep(1.0 + attempt)  # refused: no job was created
                continue
            try:
                data = response.json()
            except ValueError:
                data = {}
            if response.status_code >= 400 or not data.get("request_id"):
                job.state = "failed" if response.status_code >= 400 else "unknown"
                job.error = f"submit: HTTP {response.status_code} {response.text[:200]}"
                save(self.conn, job)
                return False
            job.state, job.request_id = "in_queue", str(data["request_id"])
            save(self.conn, job)
            return True
        job.error = "submit refused again and again; rerun to try again"
        save(self.conn, job)
        return False

    async def _follow(self, job: NaiveJob) -> None:
        started = time.monotonic()
        while time.monotonic() - started < JOB_TIMEOUT:
            await asyncio.sleep(self.poll)
            base = f"/v1/requests/{job.request_id}"
            try:
                self.calls["status"] += 1
                status = (await self.client.get(f"{base}/status")).json().get("status")
                if status not in FINAL:
                    if status and status != job.state:
                        job.state = status
                        save(self.conn, job)
                    continue
                self.calls["result"] += 1
                data = (await self.client.get(f"{base}/result")).json()
            except (httpx.HTTPError, ValueError, AttributeError):
                continue  # try again at the next poll
            if data.get("status") not in FINAL:
                continue
            job.state = data["status"]
            job.video_url = (data.get("output") or {}).get("video")
            job.error = data.get("error")
            save(self.conn, job)
            return
        job.error = f"still {job.state} after {JOB_TIMEOUT:g} s; rerun to follow it"
        save(self.conn, job)


def run_naive(
    sheet_path: Path,
    *,
    base_url: str,
    token: str,
    db: Path,
    concurrency: int = 4,
    model: str = DEFAULT_MODEL_ID,
    poll: float = POLL_INTERVAL,
) -> NaiveResult:
    """Run every row of a CSV sheet and write the results back into it."""
    sheet = load_sheet(sheet_path)
    conn = open_db(db)
    try:
        todo = resume(conn, sheet.jobs)
        calls = asyncio.run(_run_all(todo, conn, base_url, token, concurrency, model, poll))
    finally:
        conn.close()
    write_back(sheet)
    counts: dict[str, int] = {}
    for job in sheet.jobs:
        counts[job.state] = counts.get(job.state, 0) + 1
    if sheet.invalid:
        counts["invalid"] = len(sheet.invalid)
    return NaiveResult(counts, calls)


async def _run_all(
    jobs: list[NaiveJob],
    conn: sqlite3.Connection,
    base_url: str,
    token: str,
    concurrency: int,
    model: str,
    poll: float,
) -> dict[str, int]:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(
        base_url=base_url,
        headers={"Authorization": f"Bearer {token}"},
        timeout=30.0,
        limits=limits,
    ) as client:
        runner = _Runner(conn, client, concurrency, poll)
        await asyncio.gather(*(runner.run_job(job, model) for job in jobs))
    return runner.calls


def main() -> None:
    """`python -m batchgen.bench.naive SHEET --db DB [--concurrency N]` ($RUNCOMFY_BASE_URL)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m batchgen.bench.naive")
    parser.add_argument("sheet", type=Path)
    parser.add_argument("--db", type=Path, required=True)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    result = run_naive(
        args.sheet,
        base_url=os.environ["RUNCOMFY_BASE_URL"],
        token=os.environ["RUNCOMFY_API_TOKEN"],
        db=args.db,
        concurrency=args.concurrency,
    )
    print(json.dumps(result.counts))


if __name__ == "__main__":
    main()
