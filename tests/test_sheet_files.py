"""The sheet's files: nothing injected, read-only refused, temporary files cleaned, bad cells."""

from __future__ import annotations

import csv
import json
import os
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, ClassVar

import pytest

from batchgen.simulator import Simulator, SimulatorServer
from tests.helpers import (
    IMAGE,
    ad_rows,
    fast_config,
    ledger_rows,
    loopback_http,
    read_csv,
    run_cli,
    start_cli,
    wait_until,
    write_csv,
)

# what an API (or whoever sits in its place) may answer, that a spreadsheet would run
INJECTIONS = ["=cmd|' /C calc'!A0", "+SUM(1,1)", "@SUM(1,1)", "-2+3", "\t=1+1", "\r=1+1"]


class _FailingApi(BaseHTTPRequestHandler):
    """Every job fails at once, with the error text its prompt's number picks."""

    jobs: ClassVar[dict[str, int]] = {}
    lock = threading.Lock()
    protocol_version = "HTTP/1.1"

    def _send(self, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
        request_id = uuid.uuid4().hex
        with self.lock:
            self.jobs[request_id] = int(body["prompt"].split()[1])
        self._send({"request_id": request_id, "status": "in_queue"})

    def do_GET(self) -> None:
        request_id = self.path.split("?")[0].strip("/").split("/")[2]
        error = INJECTIONS[self.jobs[request_id]]
        self._send({"request_id": request_id, "status": "failed", "error": error})

    def log_message(self, *args: object) -> None:
        """Quiet."""


@pytest.fixture
def failing_api() -> Iterator[str]:
    _FailingApi.jobs = {}
    with loopback_http(_FailingApi) as url:
        yield url


def _raw_cells(path: Path) -> list[list[str]]:
    """A CSV's cells exactly as stored (a spreadsheet would see these)."""
    with path.open(newline="", encoding="utf-8-sig") as handle:
        return list(csv.reader(handle))


def test_api_text_never_lands_in_a_csv_as_a_formula(tmp_path: Path, failing_api: str) -> None:
    sheet = write_csv(tmp_path / "ads.csv", ad_rows(len(INJECTIONS)))

    result = run_cli(["run", sheet, "--base-url", failing_api, "--db", tmp_path / "l.db"], None)

    assert result.returncode == 1, result.stderr
    cells = _raw_cells(sheet)
    error = cells[0].index("error")
    assert [row[error] for row in cells[1:]] == ["'" + text for text in INJECTIONS]
    results = _raw_cells(tmp_path / "ads.results.csv")
    error = results[0].index("error")
    assert sorted(row[error] for row in results[1:]) == sorted("'" + t for t in INJECTIONS)
    for row in [*cells, *results]:
        assert not any(value.startswith(("=", "+", "-", "@", "\t", "\r")) for value in row)
    # the ledger keeps the text as the API said it
    assert sorted(r["error"] for r in ledger_rows(tmp_path / "l.db")) == sorted(INJECTIONS)


def test_a_read_only_sheet_is_refused_before_anything_is_paid(
    tmp_path: Path, sim: SimulatorServer
) -> None:
    sheet = write_csv(tmp_path / "ads.csv", ad_rows(3))
    before = sheet.read_bytes()
    sheet.chmod(0o444)

    refused = run_cli(["run", sheet], sim)

    assert refused.returncode == 2
    assert "read-only" in refused.stderr and "--output" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    assert sim.simulator.submissions() == []
    assert sheet.read_bytes() == before

    out = tmp_path / "out.csv"
    elsewhere = run_cli(["run", sheet, "--output", out], sim)

    assert elsewhere.returncode == 0, elsewhere.stderr
    assert sheet.read_bytes() == before and oct(sheet.stat().st_mode & 0o777) == "0o444"
    assert [r["status"] for r in read_csv(out)] == ["completed"] * 3

    out.chmod(0o444)  # with --output, the output is what must be writable
    again = run_cli(["run", sheet, "--output", out], sim)
    assert again.returncode == 2 and "out.csv: is read-only" in again.stderr


def test_stale_temporary_files_of_an_interrupted_write_are_removed(
    tmp_path: Path, sim: SimulatorServer
) -> None:
    sheet = write_csv(tmp_path / "ads.csv", ad_rows(2))
    ours = [".ads.csv.k3j_x9q2.tmp", ".ads.results.csv.0abcdefg.tmp"]
    theirs = [".ads.csv.tmp", ".ads.csv.TOOLONG12.tmp", ".other.csv.k3j_x9q2.tmp", "ads.csv.bak"]
    for name in ours + theirs:
        (tmp_path / name).write_text("half a sheet")

    result = run_cli(["run", sheet], sim)

    assert result.returncode == 0, result.stderr
    for name in ours:
        assert not (tmp_path / name).exists()
    for name in theirs:
        assert (tmp_path / name).read_text() == "half a sheet"
    assert "temporary file(s) of an interrupted write-back" in result.stderr


def test_a_write_failing_after_jobs_were_paid_is_exit_1_with_the_results_kept(
    tmp_path: Path,
) -> None:
    sheet = write_csv(tmp_path / "ads.csv", ad_rows(4))
    db = tmp_path / "l.db"
    with SimulatorServer(Simulator(fast_config(min_duration=1.0, max_duration=1.5))) as server:
        proc = start_cli(["run", sheet, "--db", db], server)
        wait_until(lambda: len(server.simulator.submissions()) == 4)
        sheet.chmod(0o444)  # someone locks the file while the jobs run
        _, err = proc.communicate(timeout=60)

        assert proc.returncode == 1, err
        assert "could not be written" in err and "read-only" in err
        assert f"batchgen status {sheet}" in err and "--output" in err
        assert {r["state"] for r in ledger_rows(db)} == {"completed"}

        sheet.chmod(0o644)
        status = run_cli(["status", sheet, "--db", db], server)
        assert "4/4 done: 4 completed" in status.stdout
        rerun = run_cli(["run", sheet, "--db", db], server)
        assert rerun.returncode == 0, rerun.stderr
        assert [r["status"] for r in read_csv(sheet)] == ["completed"] * 4
        assert len(server.simulator.submissions()) == 4


def test_a_nul_byte_or_a_huge_cell_makes_only_its_row_invalid(
    tmp_path: Path, sim: SimulatorServer
) -> None:
    sheet = tmp_path / "ads.csv"
    huge = "x" * 1_000_000
    lines = [
        "prompt,first_frame_image_url,notes",
        f"A calm product shot,{IMAGE},ok",
        f"A shot with a\x00NUL,{IMAGE},ok",
        f'"{huge}",{IMAGE},ok',
        f"Another calm shot,{IMAGE},{huge}",
        f"The last calm shot,{IMAGE},ok",
    ]
    sheet.write_bytes(("\n".join(lines) + "\n").encode())

    check = run_cli(["check", sheet], None)

    assert check.returncode == 1, check.stderr
    assert "row 3, column 'prompt': holds a NUL character" in check.stdout
    assert "row 4, column 'prompt': holds 1,000,000 characters" in check.stdout
    assert "row 5, column 'notes': holds 1,000,000 characters" in check.stdout
    assert "3 invalid row(s)" in check.stdout

    run = run_cli(["run", sheet, "--db", tmp_path / "l.db"], sim)

    assert run.returncode == 1, run.stderr
    assert len(sim.simulator.submissions()) == 2
    data = sheet.read_bytes()
    assert b"A shot with a\x00NUL" in data and huge.encode() in data  # kept as they were
    csv.field_size_limit(2_000_000)
    statuses = [r["status"] for r in read_csv(sheet)]
    assert statuses == ["completed", "invalid", "invalid", "invalid", "completed"]
    assert os.path.getsize(sheet) > 2_000_000
