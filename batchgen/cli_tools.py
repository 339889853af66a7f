"""The commands for trying and measuring batchgen: `simulate`, `demo` and `bench`.

They live apart from the user's commands in `cli` because they reach into the simulator and
the benchmark, rooms the runtime never enters; each imports what it needs only when it runs.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

import click

from batchgen.errors import ConfigError
from batchgen.paths import shown

SAMPLE_SHEETS = Path(__file__).resolve().parent.parent / "sample_sheets"


# (flag, Faults field, what it does): one rate flag per kind of fault
FAULT_FLAGS = (
    ("--fault-500", "error_500", "HTTP 500; a submit creates no job"),
    ("--fault-429", "rate_limit_429", "a random 429 + Retry-After (see --rate-limit for a limit)"),
    ("--fault-drop-before", "drop_before", "connection closed before anything is done"),
    ("--fault-drop-after", "drop_after", "connection cut after the call is done (job created)"),
    ("--fault-truncated-json", "truncated_json", "the call is done, its JSON answer cut in half"),
    ("--fault-error-200", "error_code_200", "HTTP 200 with an error_code; no job created"),
    ("--fault-slow", "slow", "answer only after --slow-seconds (on top of any other fault)"),
)


def _fault_options(command: Any) -> Any:
    """Add the per-kind fault rate flags to the simulate command."""
    for flag, _, meaning in reversed(FAULT_FLAGS):
        option = click.option(
            flag, type=click.FloatRange(0, 1), default=None, help=f"Chance a call gets: {meaning}."
        )
        command = option(command)
    return command


@click.command(short_help="Serve a local stand-in for the Model API: rehearse without a token.")
@click.option(
    "--host", default="127.0.0.1", show_default=True, help="Address to listen on (loopback)."
)
@click.option("--port", type=int, default=8787, show_default=True)
@click.option(
    "--capacity",
    type=click.IntRange(min=1),
    default=4,
    show_default=True,
    help="Jobs processed at once.",
)
@click.option(
    "--durations",
    type=click.Choice(["uniform", "lognormal", "mixture"]),
    default="uniform",
    show_default=True,
    help="How job durations are drawn: uniform in [min, max]; lognormal (--median-duration, "
    "--duration-sigma); mixture: uniform, but a --long-share of jobs --long-factor times longer.",
)
@click.option(
    "--min-duration", type=float, default=2.0, show_default=True, help="Shortest job, seconds."
)
@click.option(
    "--max-duration", type=float, default=6.0, show_default=True, help="Longest job, seconds."
)
@click.option(
    "--median-duration", type=float, default=1.0, show_default=True, help="Lognormal median, s."
)
@click.option(
    "--duration-sigma", type=float, default=1.0, show_default=True, help="Lognormal sigma."
)
@click.option(
    "--long-share",
    type=click.FloatRange(0, 1),
    default=0.1,
    show_default=True,
    help="Mixture: share of long jobs.",
)
@click.option(
    "--long-factor",
    type=click.FloatRange(min=0),
    default=5.0,
    show_default=True,
    help="Mixture: how many times longer they run.",
)
@click.option(
    "--rate-limit",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="At most R API calls a second (a token bucket over every call); 429 + Retry-After "
    'beyond it. Change it mid-run with POST /_sim/limit {"rate_limit": R}.',
)
@click.option(
    "--rate-burst",
    type=click.FloatRange(min=1),
    default=None,
    help="Calls the bucket takes at once (default: one second's worth).",
)
@click.option(
    "--retry-after-format",
    type=click.Choice(["seconds", "fractional", "date", "none"]),
    default="seconds",
    show_default=True,
    help="How the limit's 429 says when to come back: whole seconds, rounded up (HTTP's "
    "delay-seconds); the exact seconds to 1 ms; an HTTP-date; or no Retry-After at all.",
)
@click.option(
    "--failure-rate",
    type=click.FloatRange(0, 1),
    default=0.0,
    show_default=True,
    help="Share of jobs that end failed.",
)
@click.option(
    "--fault-rate",
    type=click.FloatRange(0, 1),
    default=0.0,
    show_default=True,
    help="Chance that a call fails in some way (spread over every fault kind but slow "
    "answers; a --fault-KIND flag sets its own kind's share).",
)
@_fault_options
@click.option(
    "--slow-seconds",
    type=click.FloatRange(min=0),
    default=0.5,
    show_default=True,
    help="How late a slow answer comes.",
)
@click.option(
    "--retry-after",
    type=click.FloatRange(min=0),
    default=0.05,
    show_default=True,
    help="Seconds sent in Retry-After with a random 429.",
)
@click.option(
    "--token", default=None, help="Accept only this token (default: any non-empty token)."
)
@click.option("--seed", type=int, default=None, help="Make durations, failures and faults repeat.")
def simulate(
    host: str,
    port: int,
    capacity: int,
    durations: str,
    min_duration: float,
    max_duration: float,
    median_duration: float,
    duration_sigma: float,
    long_share: float,
    long_factor: float,
    rate_limit: float | None,
    rate_burst: float | None,
    retry_after_format: str,
    failure_rate: float,
    fault_rate: float,
    slow_seconds: float,
    retry_after: float,
    token: str | None,
    seed: int | None,
    **fault_kinds: float | None,
) -> None:
    """Serve a local stand-in for RunComfy's Model API until Ctrl-C.

    \b
    Aim a run at it from another shell (it prints these lines with its port):
      export RUNCOMFY_BASE_URL=http://127.0.0.1:8787
      export RUNCOMFY_API_TOKEN=simulated
    or per command: batchgen run SHEET --base-url http://127.0.0.1:8787

    Token: any non-empty token is accepted, or with --token only that one. Image URLs: any
    http:// or https:// address; the simulator never fetches images (check --images does).
    Rehearse on a copy of the sheet: the simulator's results written into the real sheet
    would count as done.
    """
    from batchgen import simulator

    timing = {"slow_seconds": slow_seconds, "retry_after": retry_after}
    faults = simulator.Faults.spread(fault_rate, **timing)
    for flag, field, _ in FAULT_FLAGS:
        rate = fault_kinds.get(flag.lstrip("-").replace("-", "_"))
        if rate is not None:
            setattr(faults, field, rate)
    try:
        config = simulator.SimulatorConfig(
            capacity=capacity,
            durations=durations,
            min_duration=min_duration,
            max_duration=max_duration,
            median_duration=median_duration,
            duration_sigma=duration_sigma,
            long_share=long_share,
            long_factor=long_factor,
            rate_limit=rate_limit,
            rate_burst=rate_burst,
            retry_after_format=retry_after_format,
            failure_rate=failure_rate,
            token=token,
            seed=seed,
            faults=faults,
        )
        simulator.check_config(config)
    except ValueError as exc:
        raise ConfigError(f"simulate: {exc}") from None
    simulator.serve(host=host, port=port, config=config)


@click.command(short_help="Run a sample sheet against the built-in simulator; no token needed.")
@click.option(
    "--dir",
    "directory",
    type=click.Path(path_type=Path),
    default=Path("batchgen-demo"),
    show_default=True,
    help="Where the demo sheet and its results go.",
)
@click.option("--verbose", "-v", is_flag=True)
def demo(directory: Path, verbose: bool) -> None:
    """Run a sample sheet against the built-in simulator; needs no token."""
    from batchgen import simulator
    from batchgen.batch import report_batch
    from batchgen.cli import run_and_report
    from batchgen.cli_options import setup_output
    from batchgen.config import build_config

    setup_output(verbose, False, None)
    directory.mkdir(parents=True, exist_ok=True)
    sheet = directory / "demo_ads.xlsx"
    source = SAMPLE_SHEETS / "demo_ads.xlsx"
    if not source.is_file():
        raise ConfigError(
            f"the demo sheet {source} is missing; run the demo from a clone of batchgen"
        )
    shutil.copyfile(source, sheet)
    for stale in directory.glob("demo_ads.xlsx.batchgen.db*"):
        stale.unlink()
    sim = simulator.Simulator(
        simulator.SimulatorConfig(
            capacity=6, min_duration=0.5, max_duration=2.0, seed=7, failure_rate=0.0
        )
    )
    with simulator.SimulatorServer(sim) as server:
        click.echo(f"simulator running at {server.base_url}")
        config = build_config(
            sheet, base_url=server.base_url, concurrency=8, download=directory / "videos"
        )
        result = run_and_report(config, quiet=False, as_json=False, token="demo-token")
    page = report_batch(config, directory / "report.html")
    click.echo(f"demo sheet with results: {shown(sheet)}")
    click.echo(f"videos: {shown(directory / 'videos')}")
    click.echo(f"open the report in a browser: {page.resolve().as_uri()}")
    sys.exit(result.exit_code)


@click.command(short_help="Benchmark batchgen and a naive runner against the simulator.")
@click.option(
    "--jobs", type=click.IntRange(min=1), default=None, help="Jobs in the scheduling run [300]."
)
@click.option(
    "--capacity",
    type=click.IntRange(min=1),
    default=None,
    help="Simulated provider capacity C; runners use concurrency 2C [30].",
)
@click.option(
    "--min-duration",
    type=click.FloatRange(min=0),
    default=None,
    help="Shortest simulated job, seconds [0.5].",
)
@click.option(
    "--max-duration",
    type=click.FloatRange(min=0),
    default=None,
    help="Longest simulated job, seconds [1.5].",
)
@click.option(
    "--instant-jobs",
    type=click.IntRange(min=1),
    default=None,
    help="Jobs of zero duration for the local-overhead run [2000].",
)
@click.option(
    "--rows", type=click.IntRange(min=1), default=None, help="Rows of the size sheets [100000]."
)
@click.option("--no-naive", is_flag=True, help="Leave out the naive runner.")
@click.option(
    "--quick",
    is_flag=True,
    help="Small sizes: 20 jobs, C=4, 0.05-0.15 s, 200 instant jobs, 2000 rows.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON, not a table.")
def bench(
    jobs: int | None,
    capacity: int | None,
    min_duration: float | None,
    max_duration: float | None,
    instant_jobs: int | None,
    rows: int | None,
    no_naive: bool,
    quick: bool,
    as_json: bool,
) -> None:
    """Benchmark batchgen (and a naive runner) against the simulator; takes a few minutes."""
    from rich.console import Console

    from batchgen.bench import benchmark

    sizes = benchmark.benchmark_sizes(
        quick=quick,
        jobs=jobs,
        capacity=capacity,
        min_duration=min_duration,
        max_duration=max_duration,
        instant_jobs=instant_jobs,
        rows=rows,
    )
    result = benchmark.run_benchmark(**sizes, naive=not no_naive)
    if as_json:
        click.echo(benchmark.result_json(result))
    else:
        Console().print(benchmark.format_table(result))


COMMANDS = (simulate, demo, bench)
