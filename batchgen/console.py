"""What a run prints: a live rich display in a terminal, a few plain log lines elsewhere."""

from __future__ import annotations

import logging
import sys
import time
from collections import Counter
from typing import Any, TextIO

from batchgen.ledger import JobRecord
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
    "invalid",
)
MAX_FAILURE_LINES = 20
SUMMARY_EVERY = 30.0


def setup_logging(*, verbose: bool, quiet: bool, log_file: str | None, stream: TextIO) -> None:
    """Plain log lines to `stream` (and `log_file`); httpx stays quiet unless --verbose."""
    root = logging.getLogger("batchgen")
    root.handlers.clear()
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    handler = logging.StreamHandler(stream)
    handler.setLevel(logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    root.addHandler(handler)
    if log_file:
        file_handler = logging.FileHandler(log_file, encoding="utf-8")
        file_handler.setLevel(logging.DEBUG if verbose else logging.INFO)
        file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        root.addHandler(file_handler)
    root.propagate = False
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.DEBUG if verbose else logging.WARNING)


def summary_line(counts: Counter[str] | dict[str, int], total: int) -> str:
    """`12/30 done: 10 completed, 2 failed, 18 in_progress` in state order."""
    done = sum(counts.get(s, 0) for s in ("completed", "failed", "cancelled", "invalid"))
    parts = [f"{counts[s]} {s}" for s in STATE_ORDER if counts.get(s)]
    return f"{done}/{total} done: " + (", ".join(parts) if parts else "nothing to do")


class RunReporter:
    """Follows job changes; prints plain lines, or drives a rich live display on a terminal."""

    def __init__(self, *, live: bool, quiet: bool = False) -> None:
        self.live = live and not quiet
        self.quiet = quiet
        self.counts: Counter[str] = Counter()
        self.total = 0
        self.spend = 0.0
        self.started = time.monotonic()
        self._last_summary = time.monotonic()
        self._failures_shown = 0
        self._display: Any = None
        self._progress: Any = None
        self._task: Any = None

    def start(self, batch: Any, start: Outcome) -> None:
        """Count the jobs as the run begins."""
        self.counts, self.total, self.spend = start.counts, start.jobs, start.estimated_spend
        log.info(
            "run %s: %d rows, %s",
            batch.config.sheet.name,
            batch.plan.row_count,
            summary_line(self.counts, self.total),
        )
        for row, problems in sorted(batch.plan.invalid.items())[:MAX_FAILURE_LINES]:
            log.warning("row %d invalid: %s", row, "; ".join(str(p.message) for p in problems))
        if self.live:
            self._start_live()

    def _start_live(self) -> None:
        from rich.progress import (
            BarColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._progress = Progress(
            TextColumn("[bold]batchgen[/]"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            TextColumn("{task.description}"),
            transient=False,
        )
        self._task = self._progress.add_task(
            self._describe(), total=self.total, completed=self._done()
        )
        self._progress.start()

    def _done(self) -> int:
        return sum(self.counts.get(s, 0) for s in ("completed", "failed", "cancelled", "invalid"))

    def _describe(self) -> str:
        parts = [f"{self.counts[s]} {s}" for s in STATE_ORDER if self.counts.get(s)]
        elapsed = max(time.monotonic() - self.started, 1e-6)
        rate = self.counts.get("completed", 0) / elapsed * 60
        return f"{', '.join(parts)} | {rate:.1f}/min | ${self.spend:.2f}"

    def job_changed(self, record: JobRecord, previous: str) -> None:
        """Count a state change; report failures; a periodic summary without a terminal."""
        old, new = sheet_status(previous), sheet_status(record.state)
        if old != new:
            self.counts[old] -= 1
            self.counts[new] += 1
        if previous == "submitting" and record.request_id and record.estimated_cost:
            self.spend += record.estimated_cost
        if new in ("failed", "unknown") and old != new:
            self._failure(record, new)
        if old != new:
            log.debug("row %s job %s: %s → %s", record.sheet_row, record.key[:8], old, new)
        if self._progress is not None:
            self._progress.update(self._task, completed=self._done(), description=self._describe())
        elif time.monotonic() - self._last_summary >= SUMMARY_EVERY:
            self._last_summary = time.monotonic()
            log.info("%s, est. spend $%.2f", summary_line(self.counts, self.total), self.spend)

    def _failure(self, record: JobRecord, state: str) -> None:
        self._failures_shown += 1
        if self._failures_shown <= MAX_FAILURE_LINES:
            log.warning("row %s %s: %s", record.sheet_row, state, record.error or "")
        elif self._failures_shown == MAX_FAILURE_LINES + 1:
            log.warning("more failures follow; the sheet's error column has them all")

    def notice(self, message: str) -> None:
        """Pass on something the user should read."""
        log.warning("%s", message)

    def stop(self) -> None:
        """End the live display."""
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


def final_lines(outcome: Outcome, *, written: str | None) -> list[str]:
    """The closing summary: counts, spend, and every problem row by number."""
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
            shown = ", ".join(str(r) for r in rows[:50]) + (" …" if len(rows) > 50 else "")
            lines.append(f"{state} rows: {shown}")
    if outcome.problem_rows.get("unknown"):
        lines.append(
            "unknown jobs may have been submitted without an answer; check the RunComfy "
            "dashboard, then rerun with --resubmit-unknown to submit them again"
        )
    if written:
        lines.append(f"results written to {written}")
    return lines


def is_terminal(stream: TextIO = sys.stderr) -> bool:
    """True for an interactive terminal (and not in CI)."""
    import os

    return stream.isatty() and not os.environ.get("CI")
