"""The benchmark's table: one row a figure, a column for batchgen, one for the naive runner."""

from __future__ import annotations

import io
import json
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from batchgen.bench.scenarios import SCENARIOS

if TYPE_CHECKING:
    from batchgen.bench.benchmark import BenchResult, Figures

TARGETS = {
    "efficiency": "≥ 0.95",
    "calls_per_job": "≤ 3.5",
    "instant_jobs_per_s": "≥ 1000",
    "load_s": "< 10",
    "write_s": "< 20",
    "resume_s": "< 2",
    "peak_rss_mb": "< 1024",
}

# (label, attribute, format, target key)
_ROWS: tuple[tuple[str, str, str, str | None], ...] = (
    ("efficiency (ideal / wall)", "efficiency", "{:.3f}", "efficiency"),
    ("  scheduling run wall s", "sched_wall_s", "{:.2f}", None),
    ("  ideal s (FIFO on C slots)", "sched_ideal_s", "{:.2f}", None),
    ("  provider busy span s", "sched_span_s", "{:.2f}", None),
    ("calls per job", "calls_per_job", "{:.2f}", "calls_per_job"),
    ("instant jobs/s (end to end, median)", "instant_jobs_per_s", "{:.0f}", "instant_jobs_per_s"),
    ("  each instant run, jobs/s", "instant_runs", "{}", None),
    ("  instant calls per job", "instant_calls_per_job", "{:.2f}", None),
    ("  same, run_batch alone, jobs/s", "instant_library_jobs_per_s", "{:.0f}", None),
    ("  each run_batch run, jobs/s", "instant_library_runs", "{}", None),
    ("load + validate s (the xlsx)", "load_s", "{:.2f}", "load_s"),
    ("  load CPU s", "load_cpu_s", "{:.2f}", None),
    ("write back s (the xlsx)", "write_s", "{:.2f}", "write_s"),
    ("  write CPU s", "write_cpu_s", "{:.2f}", None),
    ("resume s", "resume_s", "{:.3f}", "resume_s"),
    ("  resume CPU s", "resume_cpu_s", "{:.3f}", None),
    ("peak memory MB", "peak_rss_mb", "{:.0f}", "peak_rss_mb"),
    ("  load s, same rows as csv", "csv_load_s", "{:.2f}", None),
    ("  write s, same rows as csv", "csv_write_s", "{:.2f}", None),
    ("  peak memory MB, csv", "csv_peak_rss_mb", "{:.0f}", None),
)


def _cell(figures: Figures | None, attribute: str, fmt: str) -> str:
    value = None if figures is None else getattr(figures, attribute)
    if isinstance(value, list):
        return ", ".join(str(item) for item in value) if value else "—"
    return "—" if value is None else fmt.format(value)


def format_table(result: BenchResult) -> Any:
    """The results as one rich Table: a column for batchgen, one for the naive runner."""
    from rich.table import Table

    s = result.settings
    title = (
        f"batchgen bench: {s['jobs']} jobs, C={s['capacity']}, concurrency {s['concurrency']}, "
        f"{s['min_duration']:g}–{s['max_duration']:g} s; {s['instant_jobs']} instant jobs at "
        f"concurrency {s['instant_concurrency']}; {s['rows']:,} rows"
    )
    table = Table(title=title, caption=f"machine: {result.machine.line()}")
    table.add_column("figure")
    table.add_column("batchgen", justify="right")
    table.add_column("naive", justify="right")
    table.add_column("target", justify="right")
    for label, attribute, fmt, target in _ROWS:
        table.add_row(
            label,
            _cell(result.batchgen, attribute, fmt),
            _cell(result.naive, attribute, fmt),
            TARGETS.get(target or "", ""),
        )
    for scenario in SCENARIOS[s.get("scenarios", "none")]:
        table.add_section()
        table.add_row(scenario.title)
        for label, name, fmt in _SCENARIO_ROWS:
            if name == "share_429" and not scenario.rate_limit:
                continue
            cells = [
                _scenario_cell(figures, scenario.name, name, fmt)
                for figures in (result.batchgen, result.naive)
            ]
            target = SCENARIO_TARGETS.get((scenario.name, name), "")
            table.add_row(label, *cells, target)
    _rerun_rows(table, result)
    return table


# (label, kind, figure, format, target) of the rerun section
_RERUN_ROWS = (
    ("  CSV: first rerun s (the whole way; marks the sheet)", "csv", "first_s", "{:.2f}", ""),
    ("  CSV: later reruns s (marked), median", "csv", "s", "{:.2f}", "≤ 1.5× naive"),
    ("  CSV: later reruns, peak memory MB", "csv", "rss_mb", "{:.0f}", "< 250"),
    ("  CSV: first rerun, peak memory MB", "csv", "first_rss_mb", "{:.0f}", ""),
    ("  xlsx: first rerun s (the whole way; marks the sheet)", "xlsx", "first_s", "{:.2f}", ""),
    ("  xlsx: later reruns s (marked), median", "xlsx", "s", "{:.2f}", "≤ 1.5× naive"),
    ("  xlsx: later reruns, peak memory MB", "xlsx", "rss_mb", "{:.0f}", ""),
    ("  xlsx: first rerun, peak memory MB", "xlsx", "first_rss_mb", "{:.0f}", ""),
)
# (label, figure, target) of the start-up rows
_STARTUP_ROWS = (
    ("  `--help` ms, median", "help", "≤ 1.1× naive"),
    ("  `status` ms (a completed ledger of the jobs above), median", "status", "≤ 1.1× naive"),
)


def _rerun_rows(table: Any, result: BenchResult) -> None:
    """The rerun of a completed sheet with nothing to do, and the commands' start-up."""
    s = result.settings
    if result.batchgen.rerun:
        table.add_section()
        table.add_row(f"rerun of a completed {s['rows']:,}-row sheet, nothing to do")
        for label, kind, name, fmt, target in _RERUN_ROWS:
            cells = [
                _figure(None if figures is None else figures.rerun.get(kind), name, fmt)
                for figures in (result.batchgen, result.naive)
            ]
            table.add_row(label, *cells, target)
    if result.batchgen.startup_ms:
        table.add_section()
        table.add_row(f"start-up, each command a fresh process ({s['startup_repeats']} runs)")
        naive_help = None if result.naive is None else result.naive.startup_ms.get("help")
        for label, name, target in _STARTUP_ROWS:
            ours = _figure(result.batchgen.startup_ms, name, "{:.0f}")
            # the naive runner has no status command: its --help is the yardstick of both
            theirs = "—" if naive_help is None else f"{naive_help:.0f}"
            table.add_row(label, ours, theirs if name == "help" else "", target)


def _figure(figures: dict[str, Any] | None, name: str, fmt: str) -> str:
    value = None if figures is None else figures.get(name)
    return "—" if value is None else fmt.format(value)


# (label, figure, format) of each provider scenario's rows
_SCENARIO_ROWS = (
    ("  efficiency (ideal / wall)", "efficiency", "{:.3f}"),
    ("  wall s", "wall_s", "{:.2f}"),
    ("  ideal s", "ideal_s", "{:.2f}"),
    ("  calls per job", "calls_per_job", "{:.2f}"),
    ("  share of calls answered 429", "share_429", "{:.3f}"),
)
SCENARIO_TARGETS = {
    ("rate", "efficiency"): "≥ 0.85",
    ("rate", "share_429"): "≤ 0.05",
    ("rate-given", "share_429"): "0",
    ("tail", "efficiency"): "≥ naive",
    ("tail", "calls_per_job"): "< naive",
    ("equal", "efficiency"): "≥ 0.90",
    ("equal", "calls_per_job"): "≤ 4.7",
}


def _scenario_cell(figures: Figures | None, scenario: str, name: str, fmt: str) -> str:
    value = None if figures is None else figures.scenarios.get(scenario, {}).get(name)
    return "—" if value is None else fmt.format(value)


def table_text(result: BenchResult, *, width: int = 110) -> str:
    """The table as plain text (no colours), for logs and tests."""
    from rich.console import Console

    console = Console(file=io.StringIO(), width=width, color_system=None, record=True)
    console.print(format_table(result))
    return console.export_text()


def result_json(result: BenchResult) -> str:
    """The whole result as JSON."""
    return json.dumps(asdict(result), indent=2)
