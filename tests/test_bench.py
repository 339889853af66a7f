"""The benchmark in miniature: every figure is measured and sane (no timing thresholds)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from batchgen.bench import benchmark as bench
from batchgen.bench.naive import load_sheet, run_naive
from batchgen.bench.scenarios import QUICK_SCENARIOS
from batchgen.errors import ConfigError
from batchgen.simulator import Simulator, SimulatorServer
from tests.helpers import TOKEN, fast_config, read_csv

# Smaller than bench.QUICK_SIZES: the naive runner polls every 2 s and commits every change.
# Calls per job are at least 2 (a submit and one look at the job), whatever the pacing.
SMALL = {
    "jobs": 8,
    "capacity": 4,
    "min_duration": 0.05,
    "max_duration": 0.15,
    "instant_jobs": 40,
    "instant_repeats": 1,
    "rows": 2000,
}


def _sane(value: float | None, *, low: float = 0.0, high: float = math.inf) -> bool:
    return value is not None and math.isfinite(value) and low < value < high


def test_the_small_benchmark_fills_every_figure_for_both_runners(tmp_path: Path) -> None:
    result = bench.run_benchmark(**SMALL, workdir=tmp_path)

    for who, figures in (("batchgen", result.batchgen), ("naive", result.naive)):
        assert figures is not None, who
        completed = {"sched": SMALL["jobs"], "instant": SMALL["instant_jobs"]}
        if who == "batchgen":  # and its library entry point on the instant jobs
            completed["library"] = SMALL["instant_jobs"]
            assert _sane(figures.instant_library_jobs_per_s), figures
            assert len(figures.instant_library_runs) == SMALL["instant_repeats"], figures
        assert figures.completed == completed, (who, figures)
        assert _sane(figures.efficiency, high=1.5), (who, figures)
        assert _sane(figures.sched_ideal_s) and _sane(figures.sched_wall_s), (who, figures)
        assert _sane(figures.calls_per_job, low=1.99, high=50), (who, figures)
        assert _sane(figures.instant_jobs_per_s), (who, figures)
        assert _sane(figures.instant_calls_per_job, low=1.99, high=50), (who, figures)
        assert len(figures.instant_runs) == SMALL["instant_repeats"], (who, figures)
        for name in (
            "load_s",
            "write_s",
            "resume_s",
            "load_cpu_s",
            "write_cpu_s",
            "resume_cpu_s",
            "csv_load_s",
            "csv_write_s",
        ):
            assert _sane(getattr(figures, name), high=600), (who, name, figures)
        assert _sane(figures.peak_rss_mb, low=5, high=64_000), (who, figures)
        # the provider scenarios, each run by both runners against the same simulator settings
        # (a scenario with --rate is batchgen's alone: the naive runner has none)
        ran = [s for s in QUICK_SCENARIOS if who == "batchgen" or s.rate is None]
        assert set(figures.scenarios) == {s.name for s in ran}, who
        for scenario in ran:
            got = figures.scenarios[scenario.name]
            assert got["completed"] == scenario.jobs, (who, scenario.name, got)
            assert _sane(got["efficiency"], high=1.5), (who, scenario.name, got)
            assert _sane(got["calls_per_job"], low=1.99, high=50), (who, scenario.name, got)
            assert 0 <= got["share_429"] < 1, (who, scenario.name, got)
        # the rerun of a completed sheet with nothing to do, and the commands' start-up
        for kind in ("csv", "xlsx"):
            got = figures.rerun[kind]
            assert _sane(got["s"], high=600), (who, kind, got)
            assert _sane(got["rss_mb"], low=5, high=64_000), (who, kind, got)
            if who == "batchgen":  # its first rerun takes the whole way; none touches the sheet
                assert _sane(got["first_s"], high=600) and got["untouched"], (kind, got)
        assert _sane(figures.startup_ms["help"], high=60_000), (who, figures.startup_ms)
    assert _sane(result.batchgen.startup_ms["status"], high=60_000), result.batchgen.startup_ms
    assert result.batchgen.scenarios["rate"]["share_429"] > 0  # it met the limit, and learned
    assert result.naive is not None and "rate-given" not in result.naive.scenarios
    assert result.machine.cores >= 1 and result.machine.cpu and result.machine.python

    text = bench.table_text(result, width=140)
    for label, attribute, *_ in bench._ROWS:
        line = next((ln for ln in text.splitlines() if label.strip() in ln), None)
        assert line is not None, label
        if not attribute.startswith("instant_library"):  # batchgen's library entry point only
            assert "—" not in line, line  # both runners have every figure
    assert result.machine.cpu in text and f"{result.machine.cores} cores" in text
    assert "rerun of a completed 2,000-row sheet" in text and "start-up" in text
    assert len(result.machine.speed_ms) == 2 and "sum(range(10**6))" in text
    for scenario in QUICK_SCENARIOS:
        assert scenario.title in text


def test_the_ideal_packs_durations_fifo_onto_the_slots() -> None:
    assert bench.packed_makespan([1.0, 1.0, 1.0, 1.0], 2) == 2.0
    assert bench.packed_makespan([3.0, 1.0, 1.0, 1.0], 2) == 3.0
    assert bench.packed_makespan([], 4) == 0.0


def test_the_generated_xlsx_loads_as_a_valid_sheet(tmp_path: Path) -> None:
    from batchgen.config import build_config
    from batchgen.runner import load_batch

    sheet = bench.write_xlsx_sheet(tmp_path / "ads.xlsx", 50)

    batch = load_batch(build_config(sheet))

    assert len(batch.plan.jobs) == 50 and not batch.plan.invalid
    assert batch.table.headers[:2] == ["prompt", "first_frame_image_url"]


def test_the_naive_runner_completes_a_sheet_and_a_rerun_submits_nothing(tmp_path: Path) -> None:
    sheet = bench.write_csv_sheet(tmp_path / "ads.csv", 6)
    db = tmp_path / "naive.db"
    with SimulatorServer(Simulator(fast_config())) as server:
        first = run_naive(sheet, base_url=server.base_url, token=TOKEN, db=db, poll=0.1)
        again = run_naive(sheet, base_url=server.base_url, token=TOKEN, db=db, poll=0.1)
        submitted = {s.request_id for s in server.simulator.submissions()}

    assert first.counts == {"completed": 6} and first.calls["submit"] == 6
    assert again.counts == {"completed": 6} and again.calls["submit"] == 0
    rows = read_csv(sheet)
    assert [r["owner"] for r in rows] == [f"team {i % 37}" for i in range(6)]
    assert {r["status"] for r in rows} == {"completed"}
    assert {r["request_id"] for r in rows} == submitted
    assert all(r["video_url"].endswith(".mp4") for r in rows)
    assert len(load_sheet(sheet).jobs) == 6  # its own output columns are not inputs


def test_sizes_default_to_full_or_quick_and_options_override_them() -> None:
    assert bench.benchmark_sizes() == bench.FULL_SIZES
    quick = bench.benchmark_sizes(quick=True, jobs=7, rows=None)
    assert quick == {**bench.QUICK_SIZES, "jobs": 7}


def test_impossible_sizes_are_refused_before_anything_starts() -> None:
    with pytest.raises(ConfigError):
        bench.run_benchmark(min_duration=2.0, max_duration=1.0)
    with pytest.raises(ConfigError):
        bench.run_benchmark(capacity=0)
