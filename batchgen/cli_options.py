"""What every sheet command shares: its options, its logging set-up and its config."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from batchgen import cli_models, console
from batchgen.config import RunConfig, build_config
from batchgen.models import DEFAULT_MODEL_ID

# whether this command was given --verbose: the error mapping in cli prints tracebacks then
VERBOSE = {"on": False}

DB_HELP = (
    "Ledger: a file path or an SQLAlchemy URL. Default: $BATCHGEN_DB, else a SQLite file "
    "beside the sheet named SHEET.batchgen.db."
)


def sheet_options(func: Callable[..., Any]) -> Callable[..., Any]:
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
            "--include-hidden",
            is_flag=True,
            default=None,
            help="Run hidden rows too (by hand or by a filter); by default they are set aside.",
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
    VERBOSE["on"] = verbose
    console.setup_logging(verbose=verbose, quiet=quiet, log_file=log_file, stream=sys.stderr)


def config_for(target: str, **flags: Any) -> RunConfig:
    """The command's settings: its job file or sheet, then its flags, then the environment."""
    config = build_config(target, **flags)
    if config.log_file is not None:  # `log_file` of a job file (a --log-file is open already)
        console.add_log_file(config.log_file)
    return config
