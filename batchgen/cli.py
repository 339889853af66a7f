"""The `batchgen` command: parsing and printing only; the work is in runner and batch.

The user's commands are here; `simulate`, `demo` and `bench` are in `cli_tools`. `runner`
(and with it the worker pool and the HTTP client) is imported only by the commands that
call the API, so `--help`, `status`, `check` and `report` start without them.
"""

from __future__ import annotations

import json
import signal
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from batchgen import batch, cli_tools, console
from batchgen.config import RunConfig, build_config
from batchgen.errors import EXIT_CANNOT_START, EXIT_SIGINT, EXIT_SIGTERM, BatchgenError
from batchgen.models import DEFAULT_MODEL_ID

if TYPE_CHECKING:
    from batchgen.runner import RunResult

_VERBOSE = {"on": False}

DB_HELP = (
    "Ledger: a file path or an SQLAlchemy URL. Default: $BATCHGEN_DB, else a SQLite file "
    "beside the sheet named SHEET.batchgen.db."
)


def _common(func: Callable[..., Any]) -> Callable[..., Any]:
    """Options every sheet command takes."""
    options = [
        click.argument("target", metavar="SHEET_OR_JOBFILE"),
        click.option("--db", default=None, help=DB_HELP),
        click.option(
            "--sheet",
            "sheet_name",
            default=None,
            help="Worksheet of an .xlsx (default: the first).",
        ),
        click.option("--model", default=None, help=f"Model id (default: {DEFAULT_MODEL_ID})."),
        click.option(
            "--base-url",
            default=None,
            help="API base URL (default: $RUNCOMFY_BASE_URL, else RunComfy's).",
        ),
        click.option(
            "--verbose", "-v", is_flag=True, help="More detail, and tracebacks on errors."
        ),
        click.option(
            "--quiet", "-q", is_flag=True, help="Only warnings, errors and the final summary."
        ),
        click.option(
            "--json", "as_json", is_flag=True, help="Print a machine-readable summary on stdout."
        ),
        click.option("--log-file", default=None, help="Also append log lines to this file."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def setup_output(verbose: bool, quiet: bool, log_file: str | None) -> None:
    """Logging to stderr (and --log-file) at the level the flags ask for."""
    _VERBOSE["on"] = verbose
    console.setup_logging(verbose=verbose, quiet=quiet, log_file=log_file, stream=sys.stderr)


def _config(target: str, **flags: Any) -> RunConfig:
    return build_config(target, **flags)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="batchgen")
def cli() -> None:
    """Run prompt sheets as generation jobs on RunComfy's Model API."""


@cli.command()
@_common
@click.option(
    "--concurrency",
    type=click.IntRange(min=1),
    default=None,
    help="At most N jobs submitted and not finished at the provider (default 4).",
)
@click.option(
    "--output",
    type=click.Path(path_type=Path),
    default=None,
    help="Write results here instead of into the sheet.",
)
@click.option("--retry-failed", is_flag=True, default=None, help="Submit failed jobs again.")
@click.option(
    "--resubmit-unknown",
    is_flag=True,
    default=None,
    help="Submit jobs of unknown fate again (may pay twice).",
)
@click.option(
    "--strict", is_flag=True, default=None, help="Refuse the whole sheet if any row is invalid."
)
@click.option(
    "--max-cost",
    type=click.FloatRange(min=0),
    default=None,
    help="Cap on the estimated dollars submitted.",
)
@click.option(
    "--download",
    type=click.Path(path_type=Path),
    default=None,
    help="Download each result video into this folder.",
)
@click.option(
    "--job-timeout",
    type=click.FloatRange(min=1),
    default=None,
    help="Seconds before a job is reported as stuck (default 1800).",
)
@click.option(
    "--cancel-on-exit",
    is_flag=True,
    default=None,
    help="On SIGINT/SIGTERM, cancel jobs still queued.",
)
@click.option(
    "--rate",
    type=click.FloatRange(min=0.01),
    default=None,
    help="At most R API requests per second.",
)
def run(
    target: str, verbose: bool, quiet: bool, as_json: bool, log_file: str | None, **flags: Any
) -> None:
    """Run every job of SHEET_OR_JOBFILE (.xlsx, .csv or .toml) and write results back.

    The API token comes from RUNCOMFY_API_TOKEN. The ledger is --db, else $BATCHGEN_DB,
    else SHEET.batchgen.db beside the sheet. Exit codes: 0 all completed, 1 some failed,
    invalid, cancelled or unknown, 2 nothing could start, 75 the sheet is already being
    run, 130/143 interrupted.
    """
    setup_output(verbose, quiet, log_file)
    config = _config(target, **flags)
    sys.exit(run_and_report(config, quiet=quiet, as_json=as_json).exit_code)


def run_and_report(
    config: RunConfig, *, quiet: bool, as_json: bool, token: str | None = None
) -> RunResult:
    """Run a batch with progress on the terminal (or log lines), then print its summary."""
    from batchgen import runner

    reporter = console.RunReporter(live=console.is_terminal(), quiet=quiet)
    try:
        result = runner.run_batch(config, events=reporter, observer=reporter, token=token)
    finally:
        reporter.stop()
    lines = console.final_lines(
        result.outcome, written=str(result.written_to) if result.written_to else None
    )
    if result.stopped_by:
        lines.insert(0, f"stopped by {result.stopped_by}; rerun the same command to continue")
    out_err = as_json
    for line in lines:  # the final summary is printed even with --quiet
        click.echo(line, err=out_err)
    if as_json:
        summary = result.outcome.as_dict() | {
            "exit_code": result.exit_code,
            "stopped_by": result.stopped_by,
            "written_to": str(result.written_to) if result.written_to else None,
            "api_calls": result.calls,
            "notices": result.notices,
        }
        click.echo(json.dumps(summary, indent=2))
    return result


@cli.command()
@_common
@click.option(
    "--images", is_flag=True, help="Also fetch each distinct image and check its size and shape."
)
def check(
    target: str,
    verbose: bool,
    quiet: bool,
    as_json: bool,
    log_file: str | None,
    images: bool,
    **flags: Any,
) -> None:
    """Validate SHEET_OR_JOBFILE and estimate its cost; submits nothing. Exit 0 if all valid."""
    setup_output(verbose, quiet, log_file)
    config = _config(target, **flags)
    checked = batch.check_batch(config, images=images)
    plan = checked.batch.plan
    problems = [
        p for row in sorted(plan.invalid) for p in plan.invalid[row]
    ] + checked.image_problems
    if as_json:
        click.echo(
            json.dumps(
                {
                    "rows": plan.row_count,
                    "jobs": len(plan.jobs),
                    "invalid_rows": sorted({p.row for p in problems}),
                    "problems": [
                        {"row": p.row, "column": p.column, "message": p.message} for p in problems
                    ],
                    "warnings": [
                        {"row": p.row, "column": p.column, "message": p.message}
                        for p in plan.warnings
                    ],
                    "estimated_cost_usd": round(checked.estimated_cost, 4),
                },
                indent=2,
            )
        )
    else:
        click.echo(f"{config.sheet.name}: {plan.row_count} rows, {len(plan.jobs)} jobs")
        for problem in problems:
            click.echo(f"error: {problem}")
        for warning in plan.warnings:
            click.echo(f"warning: {warning}")
        click.echo(f"estimated cost: ${checked.estimated_cost:.2f} for {len(plan.jobs)} valid jobs")
        click.echo(
            "all rows valid" if not problems else f"{len({p.row for p in problems})} invalid row(s)"
        )
    sys.exit(0 if not problems else 1)


@cli.command()
@_common
def status(
    target: str, verbose: bool, quiet: bool, as_json: bool, log_file: str | None, **flags: Any
) -> None:
    """Jobs by state, spend so far, and the run holding the sheet (if any)."""
    setup_output(verbose, quiet, log_file)
    config = _config(target, **flags)
    info = batch.batch_status(config)
    outcome = info.outcome
    holder = info.holder
    if as_json:
        data = outcome.as_dict()
        data["running"] = (
            {
                "pid": holder.pid,
                "host": holder.host,
                "started_at": holder.started_at,
                "progress": holder.progress,
            }
            if holder
            else None
        )
        click.echo(json.dumps(data, indent=2))
        return
    for line in console.final_lines(outcome, written=None):
        click.echo(line)
    if holder:
        import time as _time

        started = _time.strftime("%Y-%m-%d %H:%M:%S", _time.localtime(holder.started_at))
        eta = batch.eta_seconds(outcome, holder)
        click.echo(
            f"running: process {holder.pid} on {holder.host}, started {started}"
            + (f", about {eta / 60:.0f} min left" if eta is not None else "")
        )
    else:
        click.echo("no run in progress")


@cli.command()
@_common
def cancel(
    target: str, verbose: bool, quiet: bool, as_json: bool, log_file: str | None, **flags: Any
) -> None:
    """Cancel every job of the sheet still queued at the provider."""
    setup_output(verbose, quiet, log_file)
    config = _config(target, **flags)
    from batchgen import runner

    result = runner.cancel_batch(config)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "cancelled_rows": result.cancelled,
                    "not_cancellable_rows": result.not_cancellable,
                    "errors": result.errors,
                },
                indent=2,
            )
        )
        return
    click.echo(f"cancelled {len(result.cancelled)} queued job(s)")
    if result.not_cancellable:
        rows = ", ".join(str(r) for r in sorted(result.not_cancellable))
        click.echo(
            f"{len(result.not_cancellable)} job(s) already running cannot be cancelled "
            f"(the API cannot stop them); rows {rows}"
        )
    for error in result.errors:
        click.echo(f"error: {error}", err=True)


@cli.command(name="report")
@_common
@click.option(
    "--output",
    "-o",
    "report_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Where to write the page (default: SHEET.report.html beside the sheet).",
)
def report_command(
    target: str,
    verbose: bool,
    quiet: bool,
    as_json: bool,
    log_file: str | None,
    report_path: Path | None,
    **flags: Any,
) -> None:
    """Write one HTML page of every job: its video, prompt, parameters and status."""
    setup_output(verbose, quiet, log_file)
    config = _config(target, **flags)
    out = report_path or config.sheet.with_name(config.sheet.name + ".report.html")
    written = batch.report_batch(config, out)
    if as_json:
        click.echo(json.dumps({"written_to": str(written)}, indent=2))
    else:
        click.echo(str(written))


for _command in cli_tools.COMMANDS:
    cli.add_command(_command)


def _terminate(signum: int, _frame: object) -> None:
    # outside the worker pool (which handles signals itself) SIGTERM ends us with 143
    raise SystemExit(EXIT_SIGTERM)


def main(argv: list[str] | None = None) -> None:
    """Entry point: maps batchgen's errors to one-line messages and exit codes."""
    signal.signal(signal.SIGTERM, _terminate)
    try:
        cli.main(args=argv, prog_name="batchgen", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(EXIT_CANNOT_START)
    except click.exceptions.Abort:
        sys.exit(EXIT_SIGINT)
    except BatchgenError as exc:
        if _VERBOSE["on"]:
            traceback.print_exc()
        click.echo(f"batchgen: error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("batchgen: interrupted", err=True)
        sys.exit(EXIT_SIGINT)
    except Exception as exc:  # a bug: one line unless --verbose
        if _VERBOSE["on"]:
            traceback.print_exc()
        click.echo(
            f"batchgen: internal error: {type(exc).__name__}: {exc} "
            "(rerun with --verbose for details)",
            err=True,
        )
        sys.exit(3)


if __name__ == "__main__":
    main()
