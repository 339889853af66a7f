"""The benchmark's provider scenarios, each run by batchgen and the naive runner alike.

A request limit (429 + Retry-After beyond it, and no `--rate` given; then batchgen alone with
`--rate` at the limit, the figure a user who knows the limit gets), long-tailed job
durations, and concurrency equal to the provider's capacity: the cases where a runner must
learn the provider's limits or lose time noticing the last jobs. Each runner gets a fresh
simulator process with the same settings and seed.
"""

from __future__ import annotations

import heapq
import timeit
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from batchgen.bench.runs import RunFigures, simulated_run

CALL_KINDS = ("submit", "status", "result", "cancel")


@dataclass(frozen=True)
class Scenario:
    """One provider scenario: the simulator's settings and the run's."""

    name: str
    title: str  # what the table says it is
    jobs: int
    capacity: int
    concurrency: int
    min_duration: float = 0.5
    max_duration: float = 1.5
    sim_args: tuple[str, ...] = ()  # further `batchgen simulate` flags
    rate_limit: float | None = None  # the provider's calls a second, if limited
    rate: float | None = None  # batchgen's --rate; a scenario with one is batchgen's alone

    def args(self) -> tuple[str, ...]:
        """Every extra simulate flag, the request limit's included."""
        limit = () if self.rate_limit is None else ("--rate-limit", f"{self.rate_limit:g}")
        return (*self.sim_args, *limit)

    def runners(self, who_all: list[str]) -> list[str]:
        """Who runs it: the naive runner has no --rate, so a scenario with one is not its."""
        return [who for who in who_all if self.rate is None or who == "batchgen"]


LOGNORMAL = ("--durations", "lognormal", "--duration-sigma", "1")
FULL_SCENARIOS = (
    Scenario(
        "rate",
        "provider limit 20 calls/s, no --rate: 300 jobs, C=30, 0.5–1.5 s, concurrency 60",
        jobs=300,
        capacity=30,
        concurrency=60,
        rate_limit=20.0,
    ),
    Scenario(
        "rate-given",
        "the same with --rate 20 (batchgen only: the naive runner has no --rate)",
        jobs=300,
        capacity=30,
        concurrency=60,
        rate_limit=20.0,
        rate=20.0,
    ),
    Scenario(
        "tail",
        "lognormal durations (median 1 s, sigma 1): 300 jobs, C=30, concurrency 60",
        jobs=300,
        capacity=30,
        concurrency=60,
        sim_args=(*LOGNORMAL, "--median-duration", "1"),
    ),
    Scenario(
        "equal",
        "concurrency = capacity: 300 jobs, 30 of 30, 3–9 s",
        jobs=300,
        capacity=30,
        concurrency=30,
        min_duration=3.0,
        max_duration=9.0,
    ),
)
QUICK_SCENARIOS = (  # small: the naive runner polls every 2 s, and sleeps a second on a 429
    Scenario(
        "rate",
        "provider limit 8 calls/s, no --rate: 8 jobs, C=4, 0.05–0.15 s, concurrency 4",
        jobs=8,
        capacity=4,
        concurrency=4,
        min_duration=0.05,
        max_duration=0.15,
        rate_limit=8.0,
    ),
    Scenario(
        "rate-given",
        "the same with --rate 8 (batchgen only: the naive runner has no --rate)",
        jobs=8,
        capacity=4,
        concurrency=4,
        min_duration=0.05,
        max_duration=0.15,
        rate_limit=8.0,
        rate=8.0,
    ),
    Scenario(
        "tail",
        "lognormal durations (median 0.1 s, sigma 1): 8 jobs, C=4, concurrency 8",
        jobs=8,
        capacity=4,
        concurrency=8,
        sim_args=(*LOGNORMAL, "--median-duration", "0.1"),
    ),
    Scenario(
        "equal",
        "concurrency = capacity: 8 jobs, 4 of 4, 0.1–0.3 s",
        jobs=8,
        capacity=4,
        concurrency=4,
        min_duration=0.1,
        max_duration=0.3,
    ),
)
SCENARIOS = {"full": FULL_SCENARIOS, "quick": QUICK_SCENARIOS, "none": ()}


def packed_makespan(durations: list[float], slots: int) -> float:
    """The durations, in order, on `slots` workers that never idle: the FIFO makespan."""
    free = [0.0] * max(1, slots)
    end = 0.0
    for duration in durations:
        start = heapq.heappop(free)
        heapq.heappush(free, start + duration)
        end = max(end, start + duration)
    return end


def scenario_figures(scenario: Scenario, run: RunFigures) -> dict[str, Any]:
    """Efficiency against the ideal, calls a job and the share of calls answered 429.

    The ideal is the FIFO packing of the jobs' durations on the provider's slots; under a
    request limit R it is at least 2 calls a job (a submit and one look) at R a second.
    """
    ideal = packed_makespan([float(r["duration"]) for r in run.records], scenario.capacity)
    if scenario.rate_limit:
        ideal = max(ideal, 2 * scenario.jobs / scenario.rate_limit)
    calls = sum(run.stats.get(kind, 0) for kind in CALL_KINDS)
    return {
        "wall_s": run.wall_s,
        "ideal_s": ideal,
        "efficiency": ideal / run.wall_s if run.wall_s > 0 else None,
        "calls_per_job": calls / max(1, scenario.jobs),
        "share_429": run.stats.get("answered_429", 0) / calls if calls else None,
        "completed": run.completed,
    }


def run_scenario(who: str, scenario: Scenario, workdir: Path) -> dict[str, Any]:
    """One runner through one scenario against a fresh simulator process."""
    run = simulated_run(
        who,
        workdir=workdir,
        tag=f"scenario-{scenario.name}",
        jobs=scenario.jobs,
        capacity=scenario.capacity,
        min_duration=scenario.min_duration,
        max_duration=scenario.max_duration,
        concurrency=scenario.concurrency,
        sim_args=scenario.args(),
        rate=scenario.rate,
    )
    return scenario_figures(scenario, run)


def machine_speed_ms() -> float:
    """Milliseconds `sum(range(10**6))` takes here now (the best of 5): how fast this minute is."""
    return min(timeit.repeat("sum(range(10**6))", number=1, repeat=5)) * 1000
