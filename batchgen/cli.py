"""The `batchgen` command: parsing and printing only; the work is in runner and batch.

`run` and `check` are here, with the entry point that maps errors to exit codes; `status`,
`cancel` and `report` are in `cli_ledger`, `simulate`, `demo` and `bench` in `cli_tools`,
and the options every sheet command shares in `cli_options`. `runner` (and with it the
worker pool and the HTTP client) is imported only by the commands that call the API, so
`--help`, `status`, `check` and `report` start without them.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from batchgen import batch, cli_ledger, cli_models, cli_tools, console, report
from batchgen.cli_options import VERBOSE, config_for, setup_output, sheet_options
from batchgen.config import RunConfig
from batchgen.errors import EXIT_CANNOT_START, EXIT_SIGINT, EXIT_SIGTERM, BatchgenError
from batchgen.paths import shown

if TYPE_CHECKING:
    from batchgen.runner import RunResult


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="batchgen")
def cli() -> None:
    """Run prompt sheets as generation jobs on RunComfy's Model API."""


@cli.command(short_help="Run every job of a sheet or job file and write the results back.")
@sheet_options
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
    config = config_for(target, log_file=log_file, **flags)
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
    if result.sheet_note:
        lines.append(result.sheet_note)
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
            "sheet_note": result.sheet_note,
        }
        click.echo(json.dumps(summary, indent=2))
    return result


@cli.command(short_help="Validate a sheet and estimate its cost; submits nothing.")
@sheet_options
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
    config = config_for(target, **flags)
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


for _command in (*cli_ledger.COMMANDS, *cli_tools.COMMANDS, *cli_models.COMMANDS):
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
    if VERBOSE["on"] and code != EXIT_SIGINT:
        traceback.print_exc()
    click.echo(message, err=True)
    console.to_log_file(message, level=logging.ERROR)
    return code


if __name__ == "__main__":
    main()
