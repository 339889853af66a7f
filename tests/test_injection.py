"""Nothing injected through the client, shown through the real CLI: a token is checked before
it goes in a header, and a request_id is checked and sent as one path segment, or not at all."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import unquote

import pytest

from tests.helpers import ad_rows, ledger_rows, loopback_http, read_csv, run_cli, write_csv


class _Recorder(BaseHTTPRequestHandler):
    """An API stand-in that records every request: its path as sent and its headers."""

    seen: ClassVar[list[tuple[str, str, dict[str, str]]]] = []
    ids: ClassVar[list[str]] = []  # request_ids handed out by submits, in turn
    done: ClassVar[bool] = True  # whether jobs are finished when asked
    lock = threading.Lock()
    protocol_version = "HTTP/1.1"

    def _record(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with self.lock:
            self.seen.append((self.command, self.path, dict(self.headers.items())))

    def _send(self, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        self._record()
        with self.lock:
            request_id = self.ids.pop(0)
        self._send({"request_id": request_id, "status": "in_queue"})

    def do_GET(self) -> None:
        self._record()
        parts = self.path.split("?")[0].split("/")  # "", "v1", "requests", ID, "status"
        request_id = unquote(parts[3])
        status = "completed" if self.done else "in_queue"
        self._send(
            {
                "request_id": request_id,
                "status": status,
                "output": {"video": f"https://cdn.example.net/{parts[3]}.mp4"},
            }
        )

    def log_message(self, *args: object) -> None:
        """Quiet."""


@pytest.fixture
def recorder() -> Iterator[str]:
    _Recorder.seen = []
    _Recorder.ids = []
    _Recorder.done = True
    with loopback_http(_Recorder) as url:
        yield url


@pytest.mark.parametrize(
    "token",
    [
        "s3cr3t-Q9\r\nX-Injected: y3s",
        "s3cr3t-Q9\nX-Injected: y3s",
        "s3cr3t-Q9\r",  # an env file saved with Windows line endings
        "s3cr3t Q9",
        " s3cr3t-Q9",
        "s3cr3t-Q9\t",
        "s3cr3t-Q9é",  # not ASCII: once an internal error (UnicodeEncodeError)
        "s3cr3t-Q9\x1b",
        "s3cr3t-Q9\u2028",
    ],
)
def test_a_token_that_cannot_go_in_a_header_as_it_is_is_refused_before_anything_is_sent(
    tmp_path: Path, recorder: str, token: str
) -> None:
    sheet = write_csv(tmp_path / "ads.csv", ad_rows(2))

    for command in (["run", sheet, "--base-url", recorder], ["cancel", sheet]):
        result = run_cli(command, None, RUNCOMFY_API_TOKEN=token, RUNCOMFY_BASE_URL=recorder)

        assert result.returncode == 2, result.stdout + result.stderr
        assert "RUNCOMFY_API_TOKEN" in result.stderr
        assert "internal error" not in result.stderr and "Traceback" not in result.stderr
        for piece in ("s3cr3t", "Q9", "Injected", "y3s"):
            assert piece not in result.stdout + result.stderr  # the token is never shown
    assert _Recorder.seen == []  # not even a request without the bad part


def test_a_request_id_that_could_name_another_path_is_never_sent(
    tmp_path: Path, recorder: str
) -> None:
    bad = [
        "../victim",
        "a/../../v1/requests/victim",
        "x?y",
        "a%2Fb",
        "..",
        "sp ace",
        "é",
        "z" * 129,
    ]
    _Recorder.ids = [*bad, "req:2026-12.06_ok"]
    sheet = write_csv(tmp_path / "ads.csv", ad_rows(len(_Recorder.ids)))
    db = tmp_path / "ads.db"

    result = run_cli(["run", sheet, "--db", db, "--base-url", recorder], None)

    assert result.returncode == 1, result.stdout + result.stderr  # some jobs are unknown
    rows = ledger_rows(db)
    unknown = [r for r in rows if r["state"] == "unknown"]
    assert len(unknown) == len(bad)
    assert all("request_id" in (r["error"] or "") for r in unknown)
    assert [r["request_id"] for r in rows if r["state"] == "completed"] == ["req:2026-12.06_ok"]
    gets = [path for method, path, _ in _Recorder.seen if method == "GET"]
    assert gets and all(p.startswith("/v1/requests/req%3A2026-12.06_ok/") for p in gets)


def test_a_request_id_tampered_with_after_the_submit_fails_that_job_and_is_not_sent(
    tmp_path: Path, recorder: str
) -> None:
    _Recorder.ids = ["job-a", "job-b", "job-c"]
    _Recorder.done = False
    sheet = write_csv(tmp_path / "ads.csv", ad_rows(3))
    db = tmp_path / "ads.db"
    first = run_cli(["run", sheet, "--db", db, "--base-url", recorder, "--job-timeout", "1"], None)
    assert first.returncode == 1, first.stdout + first.stderr
    assert {r["state"] for r in ledger_rows(db)} == {"in_queue"}
    # the ledger and the sheet both say the first job's id is a path that leads elsewhere
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE jobs SET request_id = '../victim' WHERE request_id = 'job-a'")
    for written in tmp_path.glob("*.csv"):  # the sheet and its results file
        text = written.read_text(encoding="utf-8")
        written.write_text(text.replace("job-a", "../victim"), encoding="utf-8")
    _Recorder.seen = []
    _Recorder.done = True

    again = run_cli(["run", sheet, "--db", db, "--base-url", recorder], None)

    assert again.returncode == 1, again.stdout + again.stderr
    states = {r["request_id"]: (r["state"], r["error"]) for r in ledger_rows(db)}
    assert states["job-b"][0] == states["job-c"][0] == "completed"
    assert states["../victim"][0] == "failed" and "request_id" in states["../victim"][1]
    assert [r["status"] for r in read_csv(sheet)].count("failed") == 1
    assert not [path for _, path, _ in _Recorder.seen if "victim" in path]
