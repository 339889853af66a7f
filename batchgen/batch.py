"""A batch without the API: load and validate a sheet, read the ledger's view of it, write it.

`status`, `check` and `report` need only this, so they never import the worker pool or the
HTTP client; `runner` builds a run on top of it.
"""

from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from batchgen import paths, report, sheets
from batchgen.columns import Reading, header_test
from batchgen.config import RunConfig
from batchgen.errors import ConfigError, SheetError
from batchgen.ledger import JobRecord, Ledger, LockInfo, ledger_url
from batchgen.models import ModelCatalog, ModelSpec, load_catalog
from batchgen.specs import Problem, SheetPlan, build_plan

if TYPE_CHECKING:
    from batchgen.imagecheck import ImageProblem
    from batchgen.shown import Shown


@contextlib.contextmanager
def bulk_allocations() -> Iterator[None]:
    """Pause the cycle collector while a sheet's worth of live objects is built.

    Rows, jobs and records are data the run keeps, not garbage; with 100,000 rows the
    collector's repeated scans of them cost more than building them.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@dataclass
class Batch:
    """A loaded sheet, its model and its validated plan."""

    config: RunConfig
    table: sheets.Table
    model: ModelSpec  # the sheet's first model
    plan: SheetPlan
    catalog: ModelCatalog | None = None

    @property
    def scope(self) -> str:
        """The lock scope: the sheet's absolute path."""
        return str(self.config.sheet.resolve())


@bulk_allocations()
def load_batch(config: RunConfig) -> Batch:
    """Read and validate the sheet; nothing is sent and nothing is written."""
    catalog = config_catalog(config)
    models = config_models(config, catalog)
    test = header_test(
        models, catalog, columns=config.columns, defaults=config.defaults, ignore=config.ignore
    )
    table = sheets.load_sheet(
        config.sheet,
        sheet_name=config.sheet_name,
        header=sheets.HeaderRule(row=config.header_row, test=test),
        encoding=config.encoding,
    )
    reading = Reading(
        ignore=config.ignore,
        header_row=table.header_row,
        header_searched=config.header_row is None,
        other_sheets=table.other_sheets,
    )
    plan = build_plan(
        table.headers,
        [(row.number, row.values) for row in table.rows],
        models,
        columns=config.columns,
        defaults=config.defaults,
        sheet_name=config.sheet.name,
        catalog=catalog,
        bad_cells=table.bad_cells,
        reading=reading,
    )
    if not config.include_hidden:
        plan.hidden = dict(table.hidden_rows)
    return Batch(config, table, models[0], plan, catalog)


def set_aside_hidden(batch: Batch, ledger: Ledger | None, shown: Shown | None = None) -> set[str]:
    """Hidden rows are not run: their jobs leave the plan, but for those submitted before
    the row was hidden (the ledger knows them, or the row's cells show a request_id), which
    are followed and written, never submitted again; their keys."""
    plan = batch.plan
    jobs = [job for job in plan.jobs if job.row in plan.hidden]
    submitted: set[str] = set()
    if ledger is not None and jobs:
        records = ledger.get_jobs([job.key for job in jobs], payloads=False)
        submitted = {k for k, r in records.items() if r.request_id or r.state != "pending"}
    if shown is not None:
        # a lost ledger: what the sheet shows is adopted (resume), so it must stay planned
        submitted |= {j.key for j in jobs if j.key not in submitted and shown.cells(j.row)}
    return plan.set_aside_hidden(submitted)


def reload_batch(batch: Batch) -> Batch:
    """The batch's sheet read again from disk the way it was read: its worksheet, header rule
    and (a CSV) encoding; a person's office program keeps a file's encoding when it saves."""
    doc = batch.table._csv
    encoding = doc.encoding if doc is not None else batch.config.encoding
    config = replace(batch.config, encoding=encoding, sheet_name=batch.table.sheet_name)
    reloaded = load_batch(config)
    reloaded.config = batch.config
    return reloaded


def config_catalog(config: RunConfig) -> ModelCatalog:
    """The shipped models, the user's models_dir, and the job file's [prices]."""
    catalog = load_catalog(config.models_dir)
    try:
        return catalog.priced(config.prices)
    except ConfigError as exc:  # [prices] is only ever in a job file: say which
        where = f"{paths.shown(config.jobfile)}: " if config.jobfile else ""
        raise ConfigError(f"{where}{exc}") from None


def config_models(config: RunConfig, catalog: ModelCatalog) -> list[ModelSpec]:
    """The models `--model a|b` (or the job file's `model`) names, by id or alias."""
    names = [n.strip() for n in config.model.split("|") if n.strip()]
    return list(dict.fromkeys(catalog.get(name) for name in names))


def check_prices(batch: Batch) -> None:
    """With --max-cost, a model without a price cannot be run: its cost is unknown."""
    if batch.config.max_cost is None:
        return
    unpriced = batch.plan.unpriced
    if unpriced:
        names = ", ".join(m.name for m in unpriced)
        first = unpriced[0].name
        raise ConfigError(
            f"--max-cost cannot bound the cost of {names}: no price is known for "
            f"{'it' if len(unpriced) == 1 else 'them'} (a job without a duration has none "
            f'either); set one in the job file, e.g. [prices] "{first}" = 0.05 '
            "(dollars per second of video), or run without --max-cost"
        )


def open_ledger(config: RunConfig) -> Ledger:
    """The ledger for this batch (migrated)."""
    return Ledger(ledger_url(config.db, config.sheet))


@bulk_allocations()
def plan_records(batch: Batch, ledger: Ledger) -> dict[str, JobRecord]:
    """The ledger's records of the plan's jobs (inputs come from the plan, not decoded)."""
    return ledger.get_jobs([job.key for job in batch.plan.jobs], payloads=False)


@bulk_allocations()
def write_sheet(batch: Batch, records: Mapping[str, JobRecord]) -> Path:
    """Write output cells and the per-job table back to the sheet (atomically)."""
    results = sheets.Results(
        headers=list(report.RESULT_HEADERS),
        rows=report.results_rows(batch.plan, records, source=source_name(batch.table)),
    )
    return sheets.write_back(
        batch.table,
        report.sheet_cells(batch.plan, records),
        results=results,
        output=batch.config.output,
    )


def source_name(table: sheets.Table) -> str:
    """What the results table calls the sheet its jobs came from: the worksheet, or the CSV."""
    return table.sheet_name or table.path.name


@dataclass
class StatusReport:
    """What `batchgen status` shows."""

    batch: Batch
    outcome: report.Outcome
    holder: LockInfo | None


def batch_status(config: RunConfig) -> StatusReport:
    """Jobs by state from the ledger, and the run holding the sheet, if any."""
    batch = load_batch(config)
    ledger = open_ledger(config)
    try:
        set_aside_hidden(batch, ledger)
        records = plan_records(batch, ledger)
        holder = ledger.live_lock_holder(batch.scope)
    finally:
        ledger.close()
    return StatusReport(batch, report.outcome(batch.plan, records), holder)


@dataclass
class CheckResult:
    """What `batchgen check` found; a row with a bad image is invalid, and its jobs not valid."""

    batch: Batch
    estimated_cost: float
    image_problems: list[ImageProblem] = field(default_factory=list)
    invalid_rows: list[int] = field(default_factory=list)
    valid_jobs: int = 0
    by_model: dict[str, ModelCost] = field(default_factory=dict)  # by alias (or id)
    unwritable: str | None = None  # why a run could not write its results back (then exit 1)


@dataclass
class ModelCost:
    """One model's share of a check: its valid jobs, their estimate, and those unpriced."""

    jobs: int = 0
    estimated_cost: float = 0.0
    unpriced_jobs: int = 0


def check_batch(config: RunConfig, *, images: bool = False) -> CheckResult:
    """Validate a sheet (and optionally its images) and estimate its cost; sends nothing."""
    batch = load_batch(config)
    set_aside_hidden(batch, None)  # check reads no ledger: every hidden row is set aside
    for model in batch.plan.unpriced:
        jobs = [job for job in batch.plan.jobs if job.model_id == model.model_id]
        unknown = [job for job in jobs if job.estimated_cost is None]
        why = "no price is published" if not model.priced else "no duration is given"
        batch.plan.warnings.append(
            Problem(
                unknown[0].row,
                "model",
                f"price unknown for {len(unknown)} job(s) ({why}); the estimate leaves them "
                f'out and --max-cost refuses them until the job file sets [prices] "{model.name}" '
                "= DOLLARS_PER_SECOND",
                model.name,
            )
        )
    problems: list[ImageProblem] = []
    if images:
        from batchgen import imagecheck

        problems = imagecheck.check_images(batch.plan, batch.model)
    bad_images = {row for problem in problems for row in problem.rows}
    valid = [job for job in batch.plan.jobs if job.row not in bad_images]
    cost = sum(job.estimated_cost or 0.0 for job in valid)
    invalid = sorted(set(batch.plan.invalid) | bad_images)
    by_model: dict[str, ModelCost] = {}
    for job in valid:
        share = by_model.setdefault(job.model_name or job.model_id, ModelCost())
        share.jobs += 1
        share.estimated_cost += job.estimated_cost or 0.0
        share.unpriced_jobs += job.estimated_cost is None
    unwritable = None
    try:  # what would make a run fail to deliver is found here, not after paying
        sheets.check_writable(batch.table, output=config.output, jobs=len(batch.plan.jobs))
    except SheetError as exc:
        unwritable = str(exc)
    return CheckResult(batch, cost, problems, invalid, len(valid), by_model, unwritable)


def eta_seconds(outcome: report.Outcome, holder: LockInfo) -> float | None:
    """A rough time left for the run holding the sheet, from its pace so far."""
    done = sum(outcome.counts.get(s, 0) for s in ("completed", "failed", "cancelled"))
    left = sum(outcome.counts.get(s, 0) for s in ("pending", "in_queue", "in_progress"))
    elapsed = time.time() - holder.started_at
    if done == 0 or elapsed <= 0:
        return None
    return left * elapsed / done


def report_batch(config: RunConfig, out: Path, *, compare: bool = True) -> Path:
    """Write the sheet's HTML report (videos, prompts, statuses from the ledger) to `out`."""
    batch = load_batch(config)
    ledger = open_ledger(config)
    try:
        set_aside_hidden(batch, ledger)
        records = plan_records(batch, ledger)
    finally:
        ledger.close()
    from batchgen import htmlreport

    return htmlreport.render_report(
        title=config.sheet.name, plan=batch.plan, records=records, out=out, compare=compare
    )
