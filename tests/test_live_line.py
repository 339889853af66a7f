"""The live line in a real terminal (a pty): log lines above it, never on it; an honest pace."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

from batchgen.simulator import Simulator, SimulatorServer
from tests.helpers import ad_rows, cli_env, fast_config, ledger_rows, run_cli, write_csv

_CSI = re.compile(r"\x1b\[([?0-9;]*)([A-Za-z])")


def screen(output: str) -> list[str]:
    """The terminal's lines after `output`: enough of a VT100 for rich's live display."""
    lines: list[list[str]] = [[]]
    row = col = 0
    i = 0
    while i < len(output):
        match = _CSI.match(output, i)
        if match:
            args, command = match.groups()
            n = int(args) if args.isdigit() else 1
            if command == "A":
                row = max(0, row - n)
            elif command == "K":
                lines[row] = lines[row][:col] if args in ("", "0") else []
            elif command == "G":
                col = n - 1
            i = match.end()
            continue
        char = output[i]
        i += 1
        if char == "\r":
            col = 0
        elif char == "\n":
            row += 1
            if row == len(lines):
                lines.append([])
        elif char == "\x1b" or ord(char) < 32:
            continue
        else:
            line = lines[row]
            line.extend(" " * (col - len(line)))
            if col < len(line):
                line[col] = char
            else:
                line.append(char)
            col += 1
    return ["".join(line).rstrip() for line in lines]


def _run_in_a_terminal(args: list[str], server: SimulatorServer, until: callable) -> str:  # type: ignore[valid-type]
    main, child = pty.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 200, 0, 0))
    env = cli_env(server, TERM="xterm-256color")
    env.pop("CI")
    proc = subprocess.Popen(
        [sys.executable, "-m", "batchgen", *args],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=child,
    )
    os.close(child)
    chunks: list[bytes] = []
    signalled = False
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            if not signalled and until(b"".join(chunks).decode("utf-8", "replace")):
                proc.send_signal(signal.SIGINT)
                signalled = True
            ready, _, _ = select.select([main], [], [], 0.2)
            if not ready:
                continue
            try:
                data = os.read(main, 65536)
            except OSError:  # the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        os.close(main)
    assert proc.returncode == 130
    return b"".join(chunks).decode("utf-8", "replace")


def test_after_a_resume_the_live_line_estimates_nothing_and_a_warning_gets_its_own_line(
    tmp_path: Path,
) -> None:
    rows = ad_rows(6)
    sheet = write_csv(tmp_path / "ads.csv", rows[:3])
    db = tmp_path / "l.db"
    with SimulatorServer(Simulator(fast_config())) as fast:
        assert run_cli(["run", sheet, "--db", db], fast).returncode == 0
    write_csv(sheet, rows)  # three more rows: a resume with 3 of 6 done
    slow = Simulator(fast_config(capacity=1, min_duration=30, max_duration=30))
    with SimulatorServer(slow) as server:
        output = _run_in_a_terminal(
            ["run", sheet, "--db", db],
            server,
            until=lambda text: (
                "in_progress" in text and sum(1 for r in ledger_rows(db) if r["request_id"]) == 6
            ),
        )

    lines = screen(output)
    live = [line for line in lines if line.startswith("batchgen ")]
    assert live, output
    # three jobs done by an earlier run are no pace of this one: no estimate yet
    assert all("ETA --" in line and "/min" not in line for line in live), live
    assert any("3/6" in line for line in live)
    warning = [line for line in lines if "SIGINT received" in line]
    assert len(warning) == 1, lines
    assert re.fullmatch(r"\d\d:\d\d:\d\d WARNING SIGINT received: .*", warning[0]), warning
