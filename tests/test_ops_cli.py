"""The command as an operator meets it: simulate's directions, --help, paths, job file keys."""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import ad_rows, cli_env, read_csv, run_cli, start_cli, write_csv


def _read_until(proc: subprocess.Popen[str], marker: str, timeout: float = 30) -> str:
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    seen = b""
    deadline = time.monotonic() + timeout
    while marker.encode() not in seen:
        assert time.monotonic() < deadline, seen.decode()
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            chunk = os.read(fd, 4096)
            assert chunk, seen.decode()  # it ended early
            seen += chunk
    return seen.decode()


def test_simulate_prints_the_exact_lines_that_aim_a_run_at_it(tmp_path: Path) -> None:
    sim = start_cli(
        ["simulate", "--port", "0", "--min-duration", "0.05", "--max-duration", "0.1"], None
    )
    banner = _read_until(sim, "image URLs:")
    base = re.search(r"^  export RUNCOMFY_BASE_URL=(\S+)$", banner, re.M)
    token = re.search(r"^  export RUNCOMFY_API_TOKEN=(\S+)$", banner, re.M)
    flag = re.search(r"--base-url (\S+)$", banner, re.M)
    assert base and token and flag, banner
    assert flag.group(1) == base.group(1)
    assert "any non-empty token is accepted" in banner
    assert "any http:// or https:// address" in banner

    # the printed lines, as a user would paste them
    sheet = write_csv(tmp_path / "ads.csv", ad_rows(2))
    env = {"RUNCOMFY_BASE_URL": base.group(1), "RUNCOMFY_API_TOKEN": token.group(1)}
    assert run_cli(["run", sheet], None, **env).returncode == 0
    other = write_csv(tmp_path / "more.csv", ad_rows(2, prompt=lambda i: f"Shoe {i}"))
    assert run_cli(["run", other, "--base-url", flag.group(1)], None).returncode == 0
    assert {r["status"] for r in read_csv(sheet) + read_csv(other)} == {"completed"}

    sim.send_signal(signal.SIGINT)
    sim.communicate(timeout=30)
    assert sim.returncode == 0

    help_text = " ".join(run_cli(["simulate", "--help"], None).stdout.split())
    for words in (
        "export RUNCOMFY_BASE_URL=http://127.0.0.1:8787",
        "--base-url http://127.0.0.1:8787",
        "any non-empty token is accepted",
        "any http:// or https:// address",
    ):
        assert words in help_text, help_text


def test_the_command_list_says_whole_sentences() -> None:
    result = run_cli(["--help"], None)

    assert result.returncode == 0
    listing = result.stdout.split("Commands:", 1)[1]
    entries = re.split(r"\n  (?=\w)", "\n" + listing.strip("\n"))[1:]
    assert len(entries) >= 8
    for entry in entries:
        text = " ".join(entry.split()[1:])
        assert text.endswith(".") and "..." not in text, entry


def test_paths_are_printed_as_the_user_would_type_them(tmp_path: Path) -> None:
    (tmp_path / "sheets").mkdir()
    (tmp_path / "jobs").mkdir()
    write_csv(tmp_path / "sheets" / "ads.csv", ad_rows(2))
    (tmp_path / "jobs" / "nightly.toml").write_text('sheet = "../sheets/ads.csv"\n')
    from batchgen.simulator import Simulator, SimulatorServer
    from tests.helpers import fast_config

    with SimulatorServer(Simulator(fast_config())) as server:
        result = subprocess.run(
            [sys.executable, "-m", "batchgen", "run", "jobs/nightly.toml"],
            env=cli_env(server),
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )

    assert result.returncode == 0, result.stderr
    assert "run sheets/ads.csv: 2 rows" in result.stderr
    assert "results written to sheets/ads.csv" in result.stdout
    assert ".." not in result.stdout + result.stderr
    assert str(tmp_path) not in result.stdout + result.stderr

    (tmp_path / "jobs" / "other.toml").write_text('sheet = "../sheets/gone.csv"\n')
    missing = subprocess.run(
        [sys.executable, "-m", "batchgen", "check", "jobs/other.toml"],
        env=cli_env(None),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert missing.returncode == 2
    assert missing.stderr.strip() == "batchgen: error: sheets/gone.csv: no such file"


def test_a_job_file_takes_retry_cancelled_and_log_file(tmp_path: Path) -> None:
    write_csv(tmp_path / "ads.csv", ad_rows(1))
    jobfile = tmp_path / "batch.toml"
    jobfile.write_text('sheet = "ads.csv"\nretry_cancelled = true\nlog_file = "b.log"\n')

    result = run_cli(["check", jobfile], None)

    assert result.returncode == 0, result.stderr
    assert (tmp_path / "b.log").read_text(encoding="utf-8").rstrip().endswith("exit 0")


def test_paths_are_shown_relative_only_below_the_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A path below the cwd is shown relative to it; one outside it stays absolute, never `../`."""
    from batchgen.paths import shown

    (tmp_path / "work" / "jobs").mkdir(parents=True)
    (tmp_path / "sheets").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    assert shown("jobs/../jobs/ads.csv") == os.path.join("jobs", "ads.csv")
    assert shown("../sheets/ads.csv") == str((tmp_path / "sheets" / "ads.csv").resolve())
