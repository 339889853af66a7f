"""Sheet rows → validated job specs: per-model values, expansion and job identity.

What a header means is in `columns` (and `headers`); a cell's coercion is in `_cells`.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from batchgen._cells import CACHE_LIMIT, as_text, coerce_cached, is_empty
from batchgen._outputcols import OUTPUT_COLUMNS as OUTPUT_COLUMNS
from batchgen.columns import (
    JOB_ID_COLUMN,
    MODEL_COLUMN,
    TAKES_COLUMN,
    Reading,
    column_keys,
    key_of,
)
from batchgen.errors import SheetError
from batchgen.headers import FIELD_PREFIX, defaults_by_key, map_headers, where_text
from batchgen.models import (
    RESULT_ROLES,
    ModelCatalog,
    ModelSpec,
    load_catalog,
)
from batchgen.plan import JobSpec as JobSpec
from batchgen.plan import Problem as Problem
from batchgen.plan import SheetPlan as SheetPlan
from batchgen.plan import variant_values

MAX_TAKES = 100


def job_key(model_id: str, normalised: Mapping[str, Any], take: int, occurrence: int) -> str:
    """A stable identity for a job: model id + normalised input + take (+ duplicate count)."""
    ident: dict[str, Any] = {"model": model_id, "input": dict(normalised), "take": take}
    if occurrence > 1:
        ident["occurrence"] = occurrence
    blob = json.dumps(ident, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:32]


def build_plan(
    headers: Sequence[str],
    rows: Sequence[tuple[int, Sequence[Any]]],
    model: ModelSpec | Sequence[ModelSpec],
    *,
    columns: Mapping[str, str] | None = None,
    defaults: Mapping[str, Any] | None = None,
    sheet_name: str = "sheet",
    catalog: ModelCatalog | None = None,
    bad_cells: Mapping[int, Sequence[tuple[str, str]]] | None = None,
    reading: Reading | None = None,
) -> SheetPlan:
    """Validate every (row number, values) pair and expand valid rows into job specs.

    `model` is the sheet's model (or models, from `--model a|b`); a `model` column names a
    row's own, by id or alias, looked up in `catalog` (the shipped models by default).
    `bad_cells` names rows the sheet reader found unfit (row → (column, rule)): invalid rows.
    `reading` says which headers are the team's own and where the header was found.
    """
    reading = reading or Reading()
    default_models = [model] if isinstance(model, ModelSpec) else list(model)
    catalog = catalog or ModelCatalog(list(load_catalog()) + default_models)
    keys = column_keys(catalog)
    column_map = map_headers(
        headers, keys, columns=columns, ignore=reading.ignore, sheet_name=sheet_name
    )
    mapping = column_map.fields
    by_key = defaults_by_key(keys, defaults or {})
    sheet = _Sheet(headers, mapping, by_key, catalog, default_models)
    _check_required(sheet, rows, sheet_name, reading)
    plan = SheetPlan(row_count=len(rows), columns=column_map)
    plan.multi_model = MODEL_COLUMN in mapping or len(default_models) > 1
    seen: dict[str, int] = {}
    for number, values in rows:
        if bad_cells and number in bad_cells:
            plan.invalid[number] = [Problem(number, col, rule) for col, rule in bad_cells[number]]
            continue
        _plan_row(plan, seen, sheet, number, values)
    for (model_name, column, message), (first, count) in sheet.warned.items():
        rows_said = f" ({count} rows)" if count > 1 else ""
        plan.warnings.append(Problem(first, column, message + rows_said, model_name))
    return plan


@dataclass
class _Sheet:
    """What every row of one sheet shares: its columns, defaults and models."""

    headers: Sequence[str]
    mapping: Mapping[str, int]
    defaults: Mapping[str, Any]
    catalog: ModelCatalog
    default_models: list[ModelSpec]
    warned: dict[tuple[str, str, str], tuple[int, int]] = field(default_factory=dict)

    def column(self, key: str) -> str:
        """The header a key is read from (the key itself when it comes from [defaults])."""
        index = self.mapping.get(key)
        return self.headers[index] if index is not None else key.removeprefix(FIELD_PREFIX)

    def raw(self, values: Sequence[Any], key: str) -> Any:
        """A row's cell for a key, else its [defaults] value."""
        index = self.mapping.get(key)
        value = values[index] if index is not None and index < len(values) else None
        return self.defaults.get(key) if is_empty(value) else value

    def warn(self, row: int, model: ModelSpec, key: str, message: str) -> None:
        """Count a warning once per model, column and message, remembering its first row."""
        slot = (model.name, self.column(key), message)
        first, count = self.warned.get(slot, (row, 0))
        self.warned[slot] = (first, count + 1)

    @property
    def primary(self) -> ModelSpec:
        """The sheet's first model: its job_id jobs keep their bare ids."""
        return self.default_models[0]


def _check_required(
    sheet: _Sheet,
    rows: Sequence[tuple[int, Sequence[Any]]],
    sheet_name: str,
    reading: Reading,
) -> None:
    """A model the sheet uses whose required input has no column and no default."""
    used = list(sheet.default_models)
    if MODEL_COLUMN in sheet.mapping:
        names = {
            part.strip()
            for _, values in rows
            for part in str(sheet.raw(values, MODEL_COLUMN) or "").split("|")
            if part.strip()
        }
        used = [m for m in (sheet.catalog.find(n) for n in sorted(names)) if m is not None]
        used = used or list(sheet.default_models)
    for model in dict.fromkeys(used):
        missing = [
            name
            for name in model.required
            if key_of(model, name) not in sheet.mapping
            and is_empty(sheet.defaults.get(key_of(model, name)))
        ]
        if missing:
            said = ", ".join(
                f"'{n}'" + (f" (or '{r}')" if (r := model.role_of(n)) and r != n else "")
                for n in missing
            )
            plural = "s" if len(missing) > 1 else ""
            needed = f" for {model.name}" if len(used) > 1 else ""
            where = where_text(
                [model.role_of(n) or n for n in missing],
                sheet.headers,
                header_row=reading.header_row,
                searched=reading.header_searched,
                other_sheets=reading.other_sheets,
            )
            raise SheetError(f"{sheet_name}: missing required column{plural} {said}{needed}{where}")


def _row_models(
    sheet: _Sheet, number: int, values: Sequence[Any], problems: list[Problem]
) -> list[ModelSpec]:
    raw = sheet.raw(values, MODEL_COLUMN)
    if is_empty(raw):
        return list(sheet.default_models)
    models: list[ModelSpec] = []
    for part in as_text(raw).split("|"):
        name = part.strip()
        if not name:
            continue
        found = sheet.catalog.find(name)
        if found is None:
            message = sheet.catalog.unknown_message(name)
            problems.append(Problem(number, sheet.column(MODEL_COLUMN), message))
        elif found not in models:
            models.append(found)
    return models or list(sheet.default_models)


def _plan_row(
    plan: SheetPlan,
    seen: dict[str, int],
    sheet: _Sheet,
    number: int,
    values: Sequence[Any],
) -> None:
    problems: list[Problem] = []
    models = _row_models(sheet, number, values, problems)
    takes, job_id = _takes_and_id(values, sheet.headers, sheet.mapping, number, problems)
    if job_id is not None:
        first_row = seen.setdefault(f"job_id:{job_id}", number)
        if first_row != number:
            column = sheet.column(JOB_ID_COLUMN)
            problems.append(
                Problem(number, column, f"job_id '{job_id}' is already used on row {first_row}")
            )
    per_model = {m.model_id: _model_choices(plan, sheet, m, number, values) for m in models}
    if problems:  # the whole row: its models' own problems are said as the row's
        plan.invalid[number] = problems + [
            Problem(p.row, p.column, f"{p.model}: {p.message}")
            for _, bad in per_model.values()
            for p in bad
        ]
        return
    jobs: list[JobSpec] = []
    for model in models:
        choices, bad = per_model[model.model_id]
        if bad:
            plan.invalid.setdefault(number, []).extend(bad)
            continue
        plan.models[model.model_id] = model
        jobs += _expand(plan, seen, sheet, model, number, choices, takes, job_id)
    for job in jobs[1:] if job_id is not None else []:
        # `id[take 2]` is also a job_id another row could use: one key, two jobs
        first_row = seen.setdefault(f"job_id:{job.key}", number)
        if first_row != number:
            column = sheet.column(JOB_ID_COLUMN)
            message = f"job_id '{job_id}' makes job '{job.key}', the job_id of row {first_row}"
            plan.invalid[number] = [Problem(number, column, message)]
            return
    plan.jobs.extend(jobs)


def _model_choices(
    plan: SheetPlan, sheet: _Sheet, model: ModelSpec, number: int, values: Sequence[Any]
) -> tuple[dict[str, list[Any]], list[Problem]]:
    """One model's values for a row (each multi-value cell split), and its problems."""
    problems: list[Problem] = []
    choices: dict[str, list[Any]] = {}
    for name, spec in model.fields.items():
        key = key_of(model, name)
        column = sheet.column(key)
        raw = sheet.raw(values, key)
        if is_empty(raw):
            if spec.required:
                problems.append(
                    Problem(number, column, f"{name} is required but the cell is empty", model.name)
                )
            continue
        parts = str(raw).split("|") if spec.multi and isinstance(raw, str) else [raw]
        coerced = []
        for part in parts:
            outcome = coerce_cached(spec, part, name)
            if isinstance(outcome, ValueError):
                problems.append(Problem(number, column, str(outcome), model.name))
            else:
                coerced.append(outcome)
        if coerced:
            choices[name] = list(dict.fromkeys(coerced))
        if spec.soft_max_length and name in choices:
            text = str(choices[name][0])
            if len(text) > spec.soft_max_length:
                plan.warnings.append(
                    Problem(
                        number,
                        column,
                        f"{name} is {len(text)} characters; under {spec.soft_max_length} "
                        "gives the best results",
                        model.name if plan.multi_model else "",
                    )
                )
    _not_taken(sheet, model, number, values, problems)
    return choices, problems


def _not_taken(
    sheet: _Sheet, model: ModelSpec, number: int, values: Sequence[Any], problems: list[Problem]
) -> None:
    """Given inputs this model has no field for: invalid where they change the result."""
    for key in sheet.mapping.keys() | sheet.defaults.keys():
        if key in (TAKES_COLUMN, JOB_ID_COLUMN, MODEL_COLUMN) or is_empty(sheet.raw(values, key)):
            continue
        if key.startswith(FIELD_PREFIX):
            if key.removeprefix(FIELD_PREFIX) not in model.fields:
                sheet.warn(
                    number, model, key, f"{model.name} has no input '{sheet.column(key)}'; left out"
                )
            continue
        if key in model.roles:
            continue
        if key in RESULT_ROLES:
            what = (
                "a text-to-video model takes no image"
                if (key in ("image", "end_image") and model.kind == "t2v")
                else f"{model.name} takes no {key.replace('_', ' ')}"
            )
            problems.append(
                Problem(number, sheet.column(key), f"{what}; the video would ignore it", model.name)
            )
        else:
            sheet.warn(
                number,
                model,
                key,
                f"{model.name} takes no {key.replace('_', ' ')}; left out, the model decides",
            )


def _expand(
    plan: SheetPlan,
    seen: dict[str, int],
    sheet: _Sheet,
    model: ModelSpec,
    number: int,
    choices: Mapping[str, list[Any]],
    takes: int,
    job_id: str | None,
) -> list[JobSpec]:
    """A model's jobs for one row: one per combination of its multi-value cells and take."""
    names = list(choices)
    combos = list(itertools.product(*(choices[n] for n in names)))
    many = len(combos) * takes > 1
    # a job_id row's jobs for any model but the sheet's first get the model in their key,
    # so naming another model later adds jobs and never re-keys the first model's
    suffix = "" if model is sheet.primary else f"@{model.model_id}"
    jobs: list[JobSpec] = []
    for number_in_row, combo in enumerate(combos):
        payload = dict(zip(names, combo, strict=True))
        normalised = {n: payload.get(n, s.default) for n, s in model.fields.items()}
        varied = [n for n in names if len(choices[n]) > 1]
        label = ", ".join(f"{n}={payload[n]}" for n in varied)
        values = variant_values(model, {n: payload[n] for n in varied})
        for take in range(1, takes + 1):
            took = f"take {take}" if takes > 1 else ""
            # `ratio=9:16, take 2`: in keys (never changed: a new key is a new, paid job)
            take_label = ", ".join(x for x in (label, took) if x)
            variant = ", ".join(x for x in (*values, took) if x)  # `9:16, take 2`
            if job_id is not None:
                # the row's first job keeps the bare id, so adding takes or variants later
                # never re-keys (and re-pays for) the job that already ran
                first = number_in_row == 0 and take == 1
                key = job_id + suffix if first or not many else f"{job_id}{suffix}[{take_label}]"
            else:
                key = job_key(model.model_id, normalised, take, 1)
                seen[key] = seen.get(key, 0) + 1
                if seen[key] > 1:  # an identical row above: this one is another job
                    key = job_key(model.model_id, normalised, take, seen[key])
            cost = _cost_cached(model, normalised)
            named = model.name if plan.multi_model else ""
            shown = ", ".join(x for x in (named, variant) if x)
            former = ", ".join(x for x in (named, take_label) if x)
            jobs.append(
                JobSpec(key, number, model.model_id, payload, take, shown, cost, model.name, former)
            )
    return jobs


_COSTS: dict[tuple[int, str, tuple[Any, ...]], float | None] = {}


def _cost_cached(model: ModelSpec, normalised: Mapping[str, Any]) -> float | None:
    """The model's cost estimate, once per distinct priced combination."""
    by = [*model.pricing.get("by", []), model.duration_field or ""]
    # by the spec object too: a job file's [prices] gives the same id another price
    cache_key = (id(model), model.model_id, tuple(normalised.get(n) for n in by))
    if cache_key not in _COSTS:
        if len(_COSTS) >= CACHE_LIMIT:
            _COSTS.clear()
        _COSTS[cache_key] = model.estimate_cost(normalised)
    return _COSTS[cache_key]


def _takes_and_id(
    values: Sequence[Any],
    headers: Sequence[str],
    mapping: Mapping[str, int],
    number: int,
    problems: list[Problem],
) -> tuple[int, str | None]:
    takes = 1
    index = mapping.get(TAKES_COLUMN)
    raw = values[index] if index is not None and index < len(values) else None
    if not is_empty(raw):
        text = as_text(raw)
        try:
            takes = int(float(text))
            if takes != float(text) or not 1 <= takes <= MAX_TAKES:
                raise ValueError
        except ValueError:
            column = headers[index] if index is not None else TAKES_COLUMN
            problems.append(
                Problem(number, column, f"takes '{text}' is not a whole number 1–{MAX_TAKES}")
            )
            takes = 1
    job_id = None
    index = mapping.get(JOB_ID_COLUMN)
    raw = values[index] if index is not None and index < len(values) else None
    if not is_empty(raw):
        job_id = as_text(raw)
    return takes, job_id
