"""A run ends: when the API stops answering mid-run, the run stops after --give-up-after."""

from __future__ import annotations

import json
import re
import subprocess
import threading
import uuid
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, ClassVar

from tests.helpers import (
    ad_rows,
    ledger_rows,
    loopback_http,
    read_csv,
    run_cli,
    start_cli,
    wait_until,
    write_csv,
)


def _simulator(*args: str) -> tuple[subprocess.Popen[str], str]:
    """`batchgen simulate` in its own process (so it can be killed), and its base URL."""
    proc = start_cli(["simulate", "--port", "0", *args], None)
    assert proc.stdout is not None
    first = proc.stdout.readline()
    match = re.search(r"http://127\.0\.0\.1:\d+", first)
    assert match, first
    return proc, match.group(0)


def test_an_api_that_dies_mid_run_ends_the_run_with_every_job_in_its_honest_state(
    tmp_path: Path,
) -> None:
    sheet = write_csv(tmp_path / "ads.csv", ad_rows(6))
    db = tmp_path / "l.db"
    sim, url = _simulator("--capacity", "4", "--min-duration", "60", "--max-duration", "90")
    run = start_cli(
        ["run", sheet, "--db", db, "--concurrency", "4", "--give-up-after", "3"],
        None,
        RUNCOMFY_BASE_URL=url,
    )
    wait_until(lambda: sum(1 for r in ledger_rows(db) if r["request_id"]) == 4)
    sim.kill()  # the API dies with four jobs running and two waiting
    sim.communicate(timeout=10)

    _, err = run.communicate(timeout=90)

    assert run.returncode == 1, err
    assert re.search(r"no answer from the API at \S+ for \d+ s: waiting on .*4 job", err)
    assert "has not answered for" in err and "rerun to continue" in err
    rows = ledger_rows(db)
    followed = [r for r in rows if r["request_id"]]
    assert len(followed) == 4 and {r["state"] for r in followed} <= {"in_queue", "in_progress"}
    assert [r["state"] for r in rows if not r["request_id"]] == ["pending", "pending"]
    # the sheet says so too, with the ids the next run follows
    shown = read_csv(sheet)
    assert sorted(r["request_id"] for r in shown if r["request_id"]) == sorted(
        r["request_id"] for r in followed
    )
    assert all(r["status"] in ("in_queue", "in_progress", "pending") for r in shown)


def test_give_up_after_is_a_job_file_key_and_must_be_positive(tmp_path: Path) -> None:
    sheet = write_csv(tmp_path / "ads.csv", ad_rows(1))
    job = tmp_path / "nightly.toml"
    job.write_text(f'sheet = "{sheet.name}"\ngive_up_after = 0\n')

    result = run_cli(["run", job], None)

    assert result.returncode == 2
    assert "give_up_after must be above 0 seconds" in result.stderr
    flag = run_cli(["run", sheet, "--give-up-after", "-1"], None)
    assert flag.returncode == 2


class _HangingApi(BaseHTTPRequestHandler):
    """Takes submits and answers checks until `dead` is set; then never answers at all."""

    dead = threading.Event()
    released = threading.Event()
    submitted: ClassVar[list[str]] = []
    protocol_version = "HTTP/1.1"

    def _send(self, body: dict[str, Any]) -> None:
        if self.dead.is_set():
            self.released.wait(60)  # a server that accepted the call and went silent
            return
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        request_id = uuid.uuid4().hex
        self.submitted.append(request_id)
        self._send({"request_id": request_id, "status": "in_queue"})

    def do_GET(self) -> None:
        request_id = self.path.split("?")[0].strip("/").split("/")[2]
        self._send({"request_id": request_id, "status": "in_progress"})

    def log_message(self, *args: object) -> None:
        """Quiet."""


def test_an_api_that_stops_answering_without_closing_ends_the_run(tmp_path: Path) -> None:
    sheet = write_csv(tmp_path / "ads.csv", ad_rows(5))
    db = tmp_path / "l.db"
    _HangingApi.dead.clear()
    _HangingApi.released.clear()
    _HangingApi.submitted = []
    with loopback_http(_HangingApi) as url:
        try:
            run = start_cli(
                ["run", sheet, "--db", db, "--concurrency", "3", "--give-up-after", "3"],
                None,
                RUNCOMFY_BASE_URL=url,
            )
            wait_until(lambda: sum(1 for r in ledger_rows(db) if r["request_id"]) == 3)
            _HangingApi.dead.set()  # every call from now on waits for an answer in vain

            _, err = run.communicate(timeout=90)
        finally:
            _HangingApi.released.set()

    assert run.returncode == 1, err
    assert re.search(r"no answer from the API at \S+ for \d+ s: waiting on", err), err
    assert "has not answered for" in err and "rerun to continue" in err
    rows = ledger_rows(db)
    followed = [r for r in rows if r["request_id"]]
    assert sorted(r["request_id"] for r in followed) == sorted(_HangingApi.submitted)
    assert {r["state"] for r in followed} <= {"in_queue", "in_progress"}
    assert [r["state"] for r in rows if not r["request_id"]] == ["pending", "pending"]
