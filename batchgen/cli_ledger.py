"""The commands on what a sheet's ledger holds: `status`, `report`, and `cancel`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from batchgen import batch, console
from batchgen.cli_options import config_for, setup_output, sheet_options
from batchgen.paths import shown


@click.command(short_help="Show jobs by state, the spend so far and the run in progress.")
@sheet_options
def status(
    target: str, verbose: bool, quiet: bool, as_json: bool, log_file: str | None, **flags: Any
) -> None:
    """Jobs by state, spend so far, and the run holding the sheet (if any)."""
    setup_output(verbose, quiet, log_file)
    config = config_for(target, **flags)
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


@click.command(short_help="Stop a sheet's spending: no more submits, queued jobs cancelled.")
@sheet_options
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
    config = config_for(target, log_file=log_file, **flags)
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


@click.command(name="report", short_help="Write one HTML page of every job and its video.")
@sheet_options
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
    config = config_for(target, **flags)
    out = report_path or config.sheet.with_name(config.sheet.name + ".report.html")
    written = batch.report_batch(config, out, compare=compare)
    if as_json:
        click.echo(json.dumps({"written_to": str(written)}, indent=2))
    else:
        click.echo(shown(written))


COMMANDS = (status, cancel, report_command)
