"""The `batchgen` command: parsing and printing only; the work is in runner and batch.

The user's commands are here; `simulate`, `demo` and `bench` are in `cli_tools`. `runner`
(and with it the worker pool and the HTTP client) is imported only by the commands that
call the API, so `--help`, `status`, `check` and `report` start without them.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from batchgen import batch, cli_models, cli_tools, console, report
from batchgen.config import RunConfig, build_config
from batchgen.errors import EXIT_CANNOT_START, EXIT_SIGINT, EXIT_SIGTERM, BatchgenError
from batchgen.models import DEFAULT_MODEL_ID
from batchgen.paths import shown

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
        click.option(
            "--model",
            default=None,
            help=f"Model id or alias, or several as a|b|c (default: {DEFAULT_MODEL_ID}).",
        ),
        click.option(
            "--models-dir",
            type=click.Path(path_type=Path),
            default=None,
            help=cli_models.MODELS_DIR_HELP,
        ),
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
        click.option(
            "--log-file",
            default=None,
            help="Also append everything the command reports, with date and time, to this file.",
        ),
        click.option(
            "--header-row",
            type=click.IntRange(min=1),
            default=None,
            help="Row N is the header (default: the first row naming the required columns).",
        ),
        click.option(
            "--ignore-column",
            "ignore",
            multiple=True,
            metavar="NAME",
            help="A header of the team's own, never read as an input (repeatable).",
        ),
        click.option(
            "--encoding",
            default=None,
            metavar="NAME",
            help="A CSV's text encoding, e.g. cp1251 (default: detected).",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def setup_output(verbose: bool, quiet: bool, log_file: str | None) -> None:
    """Logging to stderr (and --log-file) at the level the flags ask for."""
    _VERBOSE["on"] = verbose
    console.setup_logging(verbose=verbose, quiet=quiet, log_file=log_file, stream=sys.stderr)


def _config(target: str, **flags: Any) -> RunConfig:
    config = build_config(target, **flags)
    if config.log_file is not None:  # `log_file` of a job file (a --log-file is open already)
        console.add_log_file(config.log_file)
    return config


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="batchgen")
def cli() -> None:
    """Run prompt sheets as generation jobs on RunComfy's Model API."""


@cli.command(short_help="Run every job of a sheet or job file and write the results back.")
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
    "--retry-cancelled",
    is_flag=True,
    default=None,
    help="Submit jobs cancelled by `batchgen cancel` again.",
)
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
    "--give-up-after",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Stop (exit 1) when the API has not answered for this many seconds (default 300).",
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
    config = _config(target, log_file=log_file, **flags)
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
        result.outcome,
        written=str(result.written_to) if result.written_to else None,
        jobfile=config.jobfile is not None,
    )
    if result.stopped_by:
        lines.insert(0, f"stopped by {result.stopped_by}; rerun the same command to continue")
    if result.cancelled_by:
        lines.insert(
            0,
            f"cancelled by `batchgen cancel` ({result.cancelled_by}): nothing more was "
            "submitted; jobs that were already running were followed to their end",
        )
    for line in lines:  # the final summary is printed even with --quiet
        click.echo(line, err=as_json)
        console.to_log_file(line)
    if as_json:
        summary = result.outcome.as_dict() | {
            "exit_code": result.exit_code,
            "stopped_by": result.stopped_by,
            "written_to": str(result.written_to) if result.written_to else None,
            "api_calls": result.calls,
            "notices": result.notices,
            "cancelled_by": result.cancelled_by,
        }
        click.echo(json.dumps(summary, indent=2))
    return result


@cli.command(short_help="Validate a sheet and estimate its cost; submits nothing.")
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
    problems = [p for row in sorted(plan.invalid) for p in plan.invalid[row]]
    unsure = plan.columns.unsure
    if as_json:
        click.echo(
            json.dumps(
                {
                    "rows": plan.row_count,
                    "jobs": len(plan.jobs),
                    "valid_jobs": checked.valid_jobs,
                    "invalid_rows": checked.invalid_rows,
                    "problems": [
                        {"row": p.row, "column": p.column, "message": p.message, "model": p.model}
                        for p in problems
                    ],
                    "image_problems": [vars(p) for p in checked.image_problems],
                    "warnings": [
                        {"row": p.row, "column": p.column, "message": p.message, "model": p.model}
                        for p in plan.warnings
                    ],
                    "estimated_cost_usd": round(checked.estimated_cost, 4),
                    "by_model": {
                        name: {
                            "jobs": share.jobs,
                            "estimated_cost_usd": round(share.estimated_cost, 4),
                            "unpriced_jobs": share.unpriced_jobs,
                        }
                        for name, share in checked.by_model.items()
                    },
                    "unwritable": checked.unwritable,
                }
                | report.sheet_reading(checked.batch.table, plan),
                indent=2,
            )
        )
    else:
        click.echo(f"{shown(config.sheet)}: {plan.row_count} rows, {len(plan.jobs)} jobs")
        for line in report.reading_lines(checked.batch.table, plan):
            click.echo(line)
        for line in report.problem_lines(problems):
            click.echo(f"error: {line}")
        for image_problem in checked.image_problems:
            click.echo(f"error: {image_problem}")
        for line in report.problem_lines(plan.warnings):
            click.echo(f"warning: {line}")
        invalid = len(checked.invalid_rows)
        click.echo(
            f"estimated cost: ${checked.estimated_cost:.2f} for {checked.valid_jobs} valid "
            f"job(s) of {plan.row_count - invalid} valid row(s)"
        )
        for name, share in checked.by_model.items() if plan.multi_model else ():
            unknown = f", {share.unpriced_jobs} without a price" if share.unpriced_jobs else ""
            click.echo(f"  {name}: {share.jobs} job(s), ${share.estimated_cost:.2f}{unknown}")
        click.echo("all rows valid" if not invalid else f"{invalid} invalid row(s)")
        if unsure:
            click.echo(f"{len(unsure)} header(s) need your word: run refuses the sheet until then")
        if checked.unwritable:
            click.echo(f"error: a run could not write its results back: {checked.unwritable}")
    failed = checked.invalid_rows or unsure or checked.unwritable
    sys.exit(1 if failed else 0)


@cli.command(short_help="Show jobs by state, the spend so far and the run in progress.")
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


@cli.command(short_help="Stop a sheet's spending: no more submits, queued jobs cancelled.")
@_common
def cancel(
    target: str, verbose: bool, quiet: bool, as_json: bool, log_file: str | None, **flags: Any
) -> None:
    """Stop the spending of SHEET_OR_JOBFILE.

    A run in progress (on any host sharing the ledger) learns of it through the ledger within
    seconds and submits nothing more; its rows never submitted end `cancelled`. Every job
    still queued at RunComfy is cancelled; running ones cannot be and are listed. A later run
    submits cancelled jobs only with --retry-cancelled. Exit codes: 0 done, 1 partly done (a
    cancel call failed, or the run in progress did not confirm in time), 2 nothing done.
    """
    setup_output(verbose, quiet, log_file)
    config = _config(target, log_file=log_file, **flags)
    from batchgen.cancel import cancel_batch

    result = cancel_batch(config)
    run = result.run
    if as_json:
        info = {"pid": run.pid, "host": run.host, "confirmed": result.confirmed} if run else None
        click.echo(
            json.dumps(
                {
                    "run_in_progress": info,
                    "cancelled_rows": result.cancelled,
                    "not_cancellable_rows": result.not_cancellable,
                    "never_submitted_rows": result.never_submitted,
                    "errors": result.errors,
                    "exit_code": result.exit_code,
                },
                indent=2,
            )
        )
    lines = []
    if run is not None:
        who = f"the run in progress (process {run.pid} on {run.host})"
        lines.append(
            f"{who} submits nothing more"
            if result.confirmed
            else f"{who} has not confirmed yet; it submits nothing more once it reads the ledger"
        )
    lines.append(f"cancelled {len(result.cancelled)} queued job(s)")
    if result.never_submitted:
        rows = ", ".join(str(r) for r in result.never_submitted)
        lines.append(f"{len(result.never_submitted)} row(s) never submitted end cancelled: {rows}")
    if result.not_cancellable:
        rows = ", ".join(str(r) for r in result.not_cancellable)
        lines.append(
            f"{len(result.not_cancellable)} job(s) already running cannot be cancelled "
            f"(the API cannot stop them; they finish and are paid for): rows {rows}"
        )
    lines += [f"error: {error}" for error in result.errors]
    for line in lines:
        click.echo(line, err=as_json or line.startswith("error:"))
        console.to_log_file(line)
    sys.exit(result.exit_code)


@cli.command(name="report", short_help="Write one HTML page of every job and its video.")
@_common
@click.option(
    "--output",
    "-o",
    "report_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Where to write the page (default: SHEET.report.html beside the sheet).",
)
@click.option(
    "--compare/--no-compare",
    default=True,
    show_default=True,
    help="When the sheet names several models, a table of rows against models.",
)
def report_command(
    target: str,
    verbose: bool,
    quiet: bool,
    as_json: bool,
    log_file: str | None,
    report_path: Path | None,
    compare: bool,
    **flags: Any,
) -> None:
    """Write one HTML page of every job: its video, prompt, parameters and status."""
    setup_output(verbose, quiet, log_file)
    config = _config(target, **flags)
    out = report_path or config.sheet.with_name(config.sheet.name + ".report.html")
    written = batch.report_batch(config, out, compare=compare)
    if as_json:
        click.echo(json.dumps({"written_to": str(written)}, indent=2))
    else:
        click.echo(shown(written))


for _command in (*cli_tools.COMMANDS, *cli_models.COMMANDS):
    cli.add_command(_command)


def _terminate(signum: int, _frame: object) -> None:
    # outside the worker pool (which handles signals itself) SIGTERM ends us with 143
    raise SystemExit(EXIT_SIGTERM)


def main(argv: list[str] | None = None) -> None:
    """Entry point: maps batchgen's errors to one-line messages and exit codes."""
    signal.signal(signal.SIGTERM, _terminate)
    code = _main(argv)
    console.to_log_file(f"exit {code}")  # the log's last word on every command
    sys.exit(code)


def _main(argv: list[str] | None) -> int:
    try:
        cli.main(args=argv, prog_name="batchgen", standalone_mode=False)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return EXIT_CANNOT_START
    except click.exceptions.Abort:
        return EXIT_SIGINT
    except BatchgenError as exc:
        return _fail(f"batchgen: error: {exc}", exc.exit_code)
    except KeyboardInterrupt:
        return _fail("batchgen: interrupted", EXIT_SIGINT)
    except Exception as exc:  # a bug: one line unless --verbose
        message = f"batchgen: internal error: {type(exc).__name__}: {exc}"
        return _fail(message + " (rerun with --verbose for details)", 3)
    return 0


def _fail(message: str, code: int) -> int:
    if _VERBOSE["on"] and code != EXIT_SIGINT:
        traceback.print_exc()
    click.echo(message, err=True)
    console.to_log_file(message, level=logging.ERROR)
    return code


if __name__ == "__main__":
    main()
