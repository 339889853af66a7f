"""What tests share: the real CLI in a subprocess, a real simulator, real sheets and ledgers.

Imported one way everywhere, `from tests.helpers import ...`, so there is one copy of its
state (the background processes to reap). The fixtures
that use it are in conftest.py.
"""

from __future__ import annotations

import asyncio
import csv
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from openpyxl import Workbook
from openpyxl.styles import Font

from batchgen.simulator import SimulatorConfig, SimulatorServer

IMAGE = "https://images.example.com/product.png"
TOKEN = "test-token-5f2c"


def run_async(main: Callable[[], Any], *, timeout: float = 20.0) -> None:
    """Run one async test body on a fresh event loop; fail rather than hang."""

    async def bounded() -> None:
        await asyncio.wait_for(main(), timeout)

    asyncio.run(bounded())


def wait_until(condition: Callable[[], bool], *, timeout: float = 30.0) -> None:
    """Poll a condition (bounded); fail the test if it never holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


@contextmanager
def loopback_http(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """A stdlib HTTP server for `handler` on a free loopback port; yields its base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def fast_config(**overrides: Any) -> SimulatorConfig:
    """Short jobs so a whole sheet runs in a second or two."""
    values: dict[str, Any] = {"capacity": 8, "min_duration": 0.05, "max_duration": 0.2, "seed": 1}
    values.update(overrides)
    return SimulatorConfig(**values)


def cli_env(server: SimulatorServer | None, **extra: str) -> dict[str, str]:
    """Environment for the CLI: token and base URL of the simulator, no terminal."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNCOMFY_", "BATCHGEN_"))}
    env["CI"] = "true"
    env["RUNCOMFY_API_TOKEN"] = TOKEN
    if server is not None:
        env["RUNCOMFY_BASE_URL"] = server.base_url
    env.update(extra)
    return env


PG_SERVER_URL = os.environ.get("BATCHGEN_TEST_PG_URL", "")


@contextmanager
def fresh_pg_database() -> Iterator[str]:
    """The pg_url fixture's database, for a test that needs more than one."""
    if not PG_SERVER_URL:
        pytest.skip("BATCHGEN_TEST_PG_URL is not set")
    import uuid

    import sqlalchemy as sa

    name = f"batchgen_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(PG_SERVER_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        url = sa.engine.make_url(PG_SERVER_URL).set(database=name)
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def run_cli(
    args: Sequence[str], server: SimulatorServer | None, *, timeout: float = 120, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run `batchgen ARGS` as a user would, and wait for it."""
    return subprocess.run(
        [sys.executable, "-m", "batchgen", *map(str, args)],
        env=cli_env(server, **env),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


# every background CLI a test started; conftest reaps them after each test, failed or not
STARTED: list[subprocess.Popen[str]] = []


def start_cli(
    args: Sequence[str], server: SimulatorServer | None, **env: str
) -> subprocess.Popen[str]:
    """Start `batchgen ARGS` in the background (killed after the test if still running)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "batchgen", *map(str, args)],
        env=cli_env(server, **env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    STARTED.append(proc)
    return proc


def ad_rows(count: int, **columns: Any) -> list[dict[str, Any]]:
    """`count` distinct valid rows, with extra user columns."""
    rows = []
    for i in range(count):
        row = {"prompt": f"Product {i} spins slowly on a pedestal", "first_frame_image_url": IMAGE}
        row.update({k: (v(i) if callable(v) else v) for k, v in columns.items()})
        rows.append(row)
    return rows


def write_csv(path: Path, rows: list[dict[str, Any]], **fmt: Any) -> Path:
    """A CSV with the union of the rows' keys as header."""
    headers = list(dict.fromkeys(k for row in rows for k in row))
    with path.open("w", newline="", encoding=fmt.pop("encoding", "utf-8")) as handle:
        writer = csv.writer(handle, **fmt)
        writer.writerow(headers)
        for row in rows:
            writer.writerow([row.get(h, "") for h in headers])
    return path


def write_xlsx(path: Path, rows: list[dict[str, Any]], *, extra_sheet: bool = True) -> Path:
    """An xlsx with a bold header, a custom column width and a second worksheet."""
    headers = list(dict.fromkeys(k for row in rows for k in row))
    wb = Workbook()
    ws = wb.active
    ws.title = "Ads"
    ws.append(headers)
    for cell in ws[1]:
        cell.font = Font(bold=True)
    for row in rows:
        ws.append([row.get(h) for h in headers])
    ws.column_dimensions["A"].width = 42
    if extra_sheet:
        wb.create_sheet("Notes")["A1"] = "keep me"
    wb.save(path)
    return path


def read_csv(path: Path) -> list[dict[str, str]]:
    """The rows of a CSV as dicts."""
    with path.open(newline="", encoding="utf-8-sig") as handle:
        return list(csv.DictReader(handle))


def ledger_rows(db: Path) -> list[dict[str, Any]]:
    """Every job in a ledger file, read with plain sqlite3 ([] before the run made it)."""
    if not db.exists():
        return []
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        conn.row_factory = sqlite3.Row
        try:
            return [dict(r) for r in conn.execute("SELECT * FROM jobs ORDER BY sheet_row, key")]
        except sqlite3.OperationalError:  # the run has not migrated it yet
            return []
