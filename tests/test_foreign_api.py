"""batchgen against a second, independent stand-in of the API that answers in other shapes.

It is written with the standard library only, shares no code with batchgen's simulator and
uses the variations API.md allows: `succeeded` for success, `output.videos` lists, no
timestamps, no status in the submit answer, statuses in capitals, a job that starts as
`pending`, and an `error_code` answer with HTTP 200 now and then.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, ClassVar

import pytest
from openpyxl import load_workbook

from tests.helpers import TOKEN, ad_rows, loopback_http, read_csv, run_cli, write_csv, write_xlsx

JOB_SECONDS = 0.3


class _Api(BaseHTTPRequestHandler):
    jobs: ClassVar[dict[str, dict[str, Any]]] = {}
    calls: ClassVar[int] = 0
    failure: ClassVar[str | None] = None  # when set, every job ends FAILED with this error
    lock = threading.Lock()
    protocol_version = "HTTP/1.1"

    def _send(self, code: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _authorised(self) -> bool:
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            self._send(401, {"error_code": 401, "message": "bad token"})
            return False
        return True

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        if not self._authorised():
            return
        if self.path.startswith("/v1/models/"):
            request_id = uuid.uuid4().hex
            with self.lock:
                self.jobs[request_id] = {"payload": body, "at": time.monotonic()}
            base = f"http://127.0.0.1:{self.server.server_address[1]}/v1/requests/{request_id}"
            self._send(200, {"request_id": request_id, "status_url": f"{base}/status"})
            return
        self._send(404, {"error_code": 404001, "message": "no such call"})

    def do_GET(self) -> None:
        if not self._authorised():
            return
        parts = self.path.split("?")[0].strip("/").split("/")
        job = self.jobs.get(parts[2]) if len(parts) == 4 else None
        if job is None:
            self._send(404, {"error_code": 404001, "message": "request_id not found"})
            return
        with self.lock:
            _Api.calls += 1
            flaky = _Api.calls % 7 == 0
        if flaky:  # an error with HTTP 200: must be retried, not believed
            self._send(200, {"error_code": 500001, "error_message": "internal error"})
            return
        age = time.monotonic() - job["at"]
        status = "PENDING" if age < 0.05 else "IN_PROGRESS" if age < JOB_SECONDS else "SUCCEEDED"
        if status == "SUCCEEDED" and self.failure is not None:
            status = "FAILED"
        answer: dict[str, Any] = {"request_id": parts[2], "status": status}
        if status == "FAILED":
            answer["error"] = self.failure
        if parts[3] == "result" and status == "SUCCEEDED":
            answer["output"] = {"videos": [f"https://cdn.example.net/{parts[2]}.mp4"]}
        self._send(200, answer)

    def log_message(self, *args: object) -> None:
        """Quiet."""


@pytest.fixture
def foreign_api() -> Iterator[str]:
    _Api.jobs = {}
    _Api.calls = 0
    _Api.failure = None
    with loopback_http(_Api) as url:
        yield url


def test_a_csv_and_an_xlsx_run_against_another_implementation(
    tmp_path: Path, foreign_api: str
) -> None:
    csv_sheet = write_csv(tmp_path / "ads.csv", ad_rows(30, team=lambda i: f"t{i}"))
    xlsx_sheet = write_xlsx(tmp_path / "ads.xlsx", ad_rows(20, variant=lambda i: f"v{i}"))

    for sheet in (csv_sheet, xlsx_sheet):
        result = run_cli(["run", sheet, "--base-url", foreign_api, "--concurrency", "8"], None)
        assert result.returncode == 0, result.stdout + result.stderr
    assert len(_Api.jobs) == 50

    rows = read_csv(csv_sheet)
    assert [r["team"] for r in rows] == [f"t{i}" for i in range(30)]
    for row in rows:
        assert row["status"] == "completed" and row["request_id"] in _Api.jobs
        assert row["video_url"] == f"https://cdn.example.net/{row['request_id']}.mp4"
    ws = load_workbook(xlsx_sheet)["Ads"]
    headers = [c.value for c in ws[1]]
    status = headers.index("status")
    assert all(ws.cell(r, status + 1).value == "completed" for r in range(2, 22))

    for sheet in (csv_sheet, xlsx_sheet):
        assert run_cli(["run", sheet, "--base-url", foreign_api], None).returncode == 0
    assert len(_Api.jobs) == 50


def test_an_error_text_with_half_an_emoji_is_stored_and_written(
    tmp_path: Path, foreign_api: str
) -> None:
    # JSON can carry a lone surrogate (an emoji cut in half by the server); no UTF-8 file
    # or SQLite ledger can hold one
    _Api.failure = "moderation rejected the prompt \ud83d"
    sheet = write_csv(tmp_path / "ads.csv", ad_rows(6))

    result = run_cli(["run", sheet, "--base-url", foreign_api, "--concurrency", "4"], None)

    assert result.returncode == 1, result.stdout + result.stderr  # jobs failed, nothing else
    rows = read_csv(sheet)
    assert [r["status"] for r in rows] == ["failed"] * 6
    assert all(r["error"] == "moderation rejected the prompt ?" for r in rows)
    status = run_cli(["status", sheet], None)
    assert status.returncode == 0 and "6 failed" in status.stdout + status.stderr, status
