"""What a run prints: a live rich display in a terminal, plain log lines elsewhere, and the
same story with timestamps in --log-file."""

from __future__ import annotations

import logging
import os
import sys
import time
from collections import Counter
from typing import Any, TextIO

from batchgen.errors import ConfigError
from batchgen.ledger import JobRecord
from batchgen.paths import shown
from batchgen.report import Outcome, sheet_status

log = logging.getLogger("batchgen")
STATE_ORDER = (
    "pending",
    "in_queue",
    "in_progress",
    "completed",
    "failed",
    "cancelled",
    "unknown",
)
FINISHED = ("completed", "failed", "cancelled")  # a job's end; invalid rows never start
LEFT = ("pending", "in_queue", "in_progress")
MAX_FAILURE_LINES = 20
SUMMARY_EVERY = 30.0
# `extra` of a record the terminal already shows another way (the final summary on stdout,
# the live line): it goes to the log file only
FILE_ONLY = {"file_only": True}
_FILE_FORMAT = logging.Formatter("%(asctime)s %(levelname)s %(message)s")


class _TerminalHandler(logging.Handler):
    """Log lines to the terminal; above the live display while one is shown, never on it."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__()
        self.stream = stream
        self.console: Any = None  # the live display's rich console, while it runs

    def filter(self, record: logging.LogRecord) -> bool:
        """Leave out what the terminal shows another way."""
        return not getattr(record, "file_only", False) and super().filter(record)

    def emit(self, record: logging.LogRecord) -> None:
        """Print one line."""
        try:
            message = self.format(record)
            if self.console is not None:
                # rich clears its live line, prints this above it and draws the line again
                self.console.print(message, markup=False, highlight=False, soft_wrap=True)
            else:
                self.stream.write(message + "\n")
                self.stream.flush()
        except Exception:
            self.handleError(record)


_HANDLERS: dict[str, Any] = {}


def setup_logging(*, verbose: bool, quiet: bool, log_file: str | None, stream: TextIO) -> None:
    """Plain log lines to `stream` (and `log_file`); httpx stays quiet unless --verbose."""
    root = logging.getLogger("batchgen")
    for handler in root.handlers:
        handler.close()
    root.handlers.clear()
    _HANDLERS.clear()
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    terminal = _TerminalHandler(stream)
    terminal.setLevel(logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO)
    terminal.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    root.addHandler(terminal)
    _HANDLERS["terminal"] = terminal
    _HANDLERS["verbose"] = verbose
    root.propagate = False
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.DEBUG if verbose else logging.WARNING)
    if log_file:
        add_log_file(log_file)


def add_log_file(path: str | os.PathLike[str]) -> None:
    """Append every log line, with date and time, to `path` too (once per path)."""
    target = os.path.abspath(os.fspath(path))
    if _HANDLERS.get("file") == target:
        return
    try:
        handler = logging.FileHandler(target, encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            f"cannot open the log file {shown(target)}: {exc.strerror or exc}"
        ) from None
    handler.setLevel(logging.DEBUG if _HANDLERS.get("verbose") else logging.INFO)
    handler.setFormatter(_FILE_FORMAT)
    logging.getLogger("batchgen").addHandler(handler)
    _HANDLERS["file"] = target


def to_log_file(line: str, *, level: int = logging.INFO) -> None:
    """Record in the log file a line the terminal gets another way (stdout, an error line)."""
    if not log.hasHandlers():
        # a command that set up no logging (`batchgen models`): without a handler, logging's
        # last resort would print the line to stderr a second time
        return
    log.log(level, "%s", line, extra=FILE_ONLY)


def summary_line(counts: Counter[str] | dict[str, int], total: int) -> str:
    """`12/30 done: 10 completed, 2 failed, 18 in_progress; 1 invalid row` in state order.

    `total` counts invalid rows too (as Outcome.jobs does); they are counted apart, since
    they never run.
    """
    invalid = counts.get("invalid", 0)
    done = sum(counts.get(s, 0) for s in FINISHED)
    parts = [f"{counts[s]} {s}" for s in STATE_ORDER if counts.get(s)]
    line = f"{done}/{total - invalid} done: " + (", ".join(parts) if parts else "nothing to do")
    if invalid:
        line += f"; {invalid} invalid row{'s' if invalid != 1 else ''}"
    return line


class RunReporter:
    """Follows job changes; prints plain lines, or drives a rich live display on a terminal."""

    def __init__(self, *, live: bool, quiet: bool = False) -> None:
        self.live = live and not quiet
        self.quiet = quiet
        self.counts: Counter[str] = Counter()
        self.total = 0
        self.spend = 0.0
        self.started = time.monotonic()
        self.finished_here = 0  # jobs this run saw finish: its own pace, not a resumed one's
        self._last_summary = time.monotonic()
        self._failures_shown = 0
        self._progress: Any = None
        self._task: Any = None

    def start(self, batch: Any, start: Outcome) -> None:
        """Count the jobs as the run begins."""
        self.counts, self.total, self.spend = (
            Counter(start.counts),
            start.jobs,
            start.estimated_spend,
        )
        self.started = self._last_summary = time.monotonic()
        log.info(
            "run %s: %d rows, %s",
            shown(batch.config.sheet),
            batch.plan.row_count,
            summary_line(self.counts, self.total),
        )
        for shown_rows, (row, problems) in enumerate(sorted(batch.plan.invalid.items())):
            log.warning(
                "row %d invalid: %s",
                row,
                "; ".join(str(p.message) for p in problems),
                extra=FILE_ONLY if shown_rows >= MAX_FAILURE_LINES else None,  # the file has all
            )
        if self.live:
            self._start_live()

    def _start_live(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self._progress = Progress(
            TextColumn("[bold]batchgen[/]"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TimeElapsedColumn(),
            TextColumn("{task.description}", markup=False),
            console=Console(file=sys.stderr),
            transient=False,
            redirect_stdout=False,
            redirect_stderr=False,
        )
        self._task = self._progress.add_task(
            self._describe(), total=self._jobs(), completed=self._done()
        )
        self._progress.start()
        terminal = _HANDLERS.get("terminal")
        if terminal is not None:
            terminal.console = self._progress.console

    def _jobs(self) -> int:
        return self.total - self.counts.get("invalid", 0)

    def _done(self) -> int:
        return sum(self.counts.get(s, 0) for s in FINISHED)

    def pace(self) -> tuple[float | None, float | None]:
        """Jobs a minute and seconds left, from the jobs this run finished (None before one)."""
        if not self.finished_here:
            return None, None
        elapsed = max(time.monotonic() - self.started, 1e-6)
        per_second = self.finished_here / elapsed
        left = sum(self.counts.get(s, 0) for s in LEFT)
        return per_second * 60, left / per_second

    def _describe(self) -> str:
        parts = [f"{self.counts[s]} {s}" for s in STATE_ORDER if self.counts.get(s)]
        if self.counts.get("invalid"):
            parts.append(f"{self.counts['invalid']} invalid")
        rate, left = self.pace()
        pace = "ETA --" if rate is None or left is None else f"{rate:.1f}/min, ETA {_clock(left)}"
        return f"{', '.join(parts)} | {pace} | ${self.spend:.2f}"

    def job_changed(self, record: JobRecord, previous: str) -> None:
        """Count a state change; report failures; a periodic summary."""
        old, new = sheet_status(previous), sheet_status(record.state)
        if old != new:
            self.counts[old] -= 1
            self.counts[new] += 1
            if new in FINISHED and old not in FINISHED:
                self.finished_here += 1
        if previous == "submitting" and record.request_id and record.estimated_cost:
            self.spend += record.estimated_cost
        if new in ("failed", "unknown") and old != new:
            self._failure(record, new)
        if old != new:
            log.debug("row %s job %s: %s → %s", record.sheet_row, record.key[:8], old, new)
        if self._progress is not None:
            self._progress.update(self._task, completed=self._done(), description=self._describe())
        self.tick()

    def tick(self) -> None:
        """The periodic summary, if one is due (the live line shows it in a terminal)."""
        if time.monotonic() - self._last_summary < SUMMARY_EVERY:
            return
        self._last_summary = time.monotonic()
        rate, left = self.pace()
        pace = "" if rate is None or left is None else f", {rate:.1f}/min, ETA {_clock(left)}"
        log.info(
            "%s, est. spend $%.2f%s",
            summary_line(self.counts, self.total),
            self.spend,
            pace,
            extra=FILE_ONLY if self._progress is not None else None,
        )

    def _failure(self, record: JobRecord, state: str) -> None:
        self._failures_shown += 1
        if self._failures_shown == MAX_FAILURE_LINES + 1:
            log.warning("more failures follow; the sheet's error column has them all")
        log.warning(
            "row %s %s: %s",
            record.sheet_row,
            state,
            record.error or "",
            extra=FILE_ONLY if self._failures_shown > MAX_FAILURE_LINES else None,  # file: all
        )

    def notice(self, message: str) -> None:
        """Pass on something the user should read."""
        log.warning("%s", message)

    def stop(self) -> None:
        """End the live display."""
        terminal = _HANDLERS.get("terminal")
        if terminal is not None:
            terminal.console = None
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


def _clock(seconds: float) -> str:
    whole = round(seconds)
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"


def final_lines(outcome: Outcome, *, written: str | None, jobfile: bool = False) -> list[str]:
    """The closing summary: counts, spend, every problem row by number, and what to do next."""
    lines = [summary_line(outcome.counts, outcome.jobs)]
    lines.append(
        f"estimated spend ${outcome.estimated_spend:.2f}"
        + (f", reported cost ${outcome.actual_cost:.2f}" if outcome.actual_cost else "")
    )
    for state in (
        "failed",
        "invalid",
        "cancelled",
        "unknown",
        "pending",
        "in_queue",
        "in_progress",
    ):
        rows = outcome.problem_rows.get(state)
        if rows:
            shown_rows = ", ".join(str(r) for r in rows[:50]) + (" …" if len(rows) > 50 else "")
            lines.append(f"{state} rows: {shown_rows}")
    if outcome.hidden_rows:
        shown_rows = ", ".join(str(r) for r in outcome.hidden_rows[:50])
        more = " …" if len(outcome.hidden_rows) > 50 else ""
        option = "`include_hidden = true`" if jobfile else "--include-hidden"
        lines.append(f"hidden rows, not run ({option} runs them): {shown_rows}{more}")
    lines.extend(next_steps(outcome, jobfile=jobfile))
    if written:
        lines.append(f"results written to {shown(written)}")
    return lines


def next_steps(outcome: Outcome, *, jobfile: bool = False) -> list[str]:
    """What to do about the problem rows: how to retry, and what to check first."""

    def flag(option: str, key: str) -> str:
        # a job file's own key first when the run came from one
        if jobfile:
            return f"`{key} = true` in the job file (or {option})"
        return f"{option} (or `{key} = true` in a job file)"

    steps = []
    if outcome.problem_rows.get("unknown"):
        steps.append(
            "unknown jobs may have been submitted without an answer: check the RunComfy "
            "dashboard first (a job there is paid for), then rerun with "
            + flag("--resubmit-unknown", "resubmit_unknown")
            + " to submit the rest again"
        )
    if outcome.problem_rows.get("failed"):
        steps.append(
            "failed jobs are not submitted again on their own; the error column says why. "
            "To submit them again (they are paid again), rerun with "
            + flag("--retry-failed", "retry_failed")
        )
    if outcome.problem_rows.get("cancelled"):
        steps.append(
            "cancelled jobs stay cancelled; to submit them, rerun with "
            + flag("--retry-cancelled", "retry_cancelled")
        )
    if outcome.problem_rows.get("invalid"):
        steps.append("fix the invalid rows (the error column says why) and rerun")
    return steps


def is_terminal(stream: TextIO = sys.stderr) -> bool:
    """True for an interactive terminal (and not in CI)."""
    return stream.isatty() and not os.environ.get("CI")
