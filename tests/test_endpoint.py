"""The API's address, through the real CLI: checked before anything is sent, and a submit
answered by something that is not the Model API stops the run with every job still pending."""

from __future__ import annotations

import json
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import ClassVar

import pytest

from batchgen.simulator import SimulatorServer
from tests.helpers import TOKEN, ad_rows, ledger_rows, loopback_http, read_csv, run_cli, write_csv


class _NotTheApi(BaseHTTPRequestHandler):
    """What a wrong base URL reaches: a redirecting proxy, a web server, a missing route."""

    answer: ClassVar[int] = 301
    posts: ClassVar[list[str]] = []
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        _NotTheApi.posts.append(self.path)
        body = json.dumps({"detail": "Not Found"}).encode() if self.answer != 301 else b""
        self.send_response(self.answer)
        if self.answer == 301:
            self.send_header("Location", "https://elsewhere.example" + self.path)
        if self.answer == 405:
            self.send_header("Allow", "GET")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        """Quiet."""


@pytest.fixture
def not_the_api() -> Iterator[str]:
    _NotTheApi.posts = []
    with loopback_http(_NotTheApi) as url:
        yield url


@pytest.mark.parametrize("answer", [301, 404, 405])
def test_a_submit_answered_by_something_else_stops_the_run_and_leaves_the_jobs_pending(
    tmp_path: Path, not_the_api: str, sim: SimulatorServer, answer: int
) -> None:
    _NotTheApi.answer = answer
    sheet = write_csv(tmp_path / "ads.csv", ad_rows(6))
    db = tmp_path / "ads.db"

    result = run_cli(["run", sheet, "--db", db, "--base-url", not_the_api + "/typo"], None)

    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    message = [line for line in result.stderr.splitlines() if "base URL" in line]
    assert message, result.stderr
    assert f"HTTP {answer}" in message[0] and not_the_api + "/typo" in message[0]
    assert TOKEN not in result.stdout + result.stderr
    assert 1 <= len(_NotTheApi.posts) <= 4  # the run stopped at the first answers
    assert {r["state"] for r in ledger_rows(db)} == {"pending"}
    assert {r["status"] for r in read_csv(sheet)} <= {"pending", ""}

    # the right address then runs them all, without --resubmit-unknown
    fixed = run_cli(["run", sheet, "--db", db], sim)
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert len(sim.simulator.submissions()) == 6


@pytest.mark.parametrize(
    ("base_url", "said"),
    [
        ("127.0.0.1:8787", "http://127.0.0.1:8787"),  # no scheme: the fix is suggested
        ("localhost:8787", "http://localhost:8787"),
        ("model-api.runcomfy.net", "https://model-api.runcomfy.net"),
        ("http://model-api.runcomfy.net", "in clear"),  # the token would travel unencrypted
        ("http://10.1.2.3:8787", "in clear"),
        ("ftp://127.0.0.1/", "http"),
        ("https://", "host"),
        ("https://user:pw@model-api.runcomfy.net", "user name or password"),
        ("https://model-api.runcomfy.net/?x=1", "query"),
        ("http://127.0.0.1:99999", "port"),
    ],
)
def test_a_base_url_that_is_not_safe_to_send_the_token_to_is_refused_first(
    tmp_path: Path, base_url: str, said: str
) -> None:
    sheet = write_csv(tmp_path / "ads.csv", ad_rows(2))
    before = sheet.read_bytes()

    result = run_cli(["run", sheet, "--base-url", base_url], None)

    assert result.returncode == 2, result.stdout + result.stderr
    assert said in result.stderr and "--base-url" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert sheet.read_bytes() == before
    assert not (tmp_path / "ads.csv.batchgen.db").exists()  # not even a ledger was made


def test_the_environment_and_a_job_file_are_checked_and_named_too(tmp_path: Path) -> None:
    sheet = write_csv(tmp_path / "ads.csv", ad_rows(2))
    from_env = run_cli(["run", sheet], None, RUNCOMFY_BASE_URL="http://api.example.com")
    assert from_env.returncode == 2
    assert "RUNCOMFY_BASE_URL" in from_env.stderr and "in clear" in from_env.stderr

    job = tmp_path / "nightly.toml"
    job.write_text('sheet = "ads.csv"\nbase_url = "127.0.0.1:8787"\n', encoding="utf-8")
    from_job = run_cli(["run", job], None)
    assert from_job.returncode == 2
    assert "nightly.toml" in from_job.stderr and "http://127.0.0.1:8787" in from_job.stderr


def test_plain_http_to_this_machine_by_name_is_allowed(
    tmp_path: Path, sim: SimulatorServer
) -> None:
    sheet = write_csv(tmp_path / "ads.csv", ad_rows(2))
    port = sim.base_url.rsplit(":", 1)[1]

    result = run_cli(["run", sheet, "--base-url", f"http://localhost:{port}"], None)

    assert result.returncode == 0, result.stdout + result.stderr
