"""Sheet rows → validated job specs: header mapping, coercion, expansion and job identity."""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

from batchgen.errors import SheetError
from batchgen.models import FieldSpec, ModelSpec

OUTPUT_COLUMNS = ("request_id", "status", "video_url", "error")
TAKES_COLUMN = "takes"
JOB_ID_COLUMN = "job_id"
MAX_TAKES = 100
_TRUE = {"true", "yes", "y", "1", "on"}
_FALSE = {"false", "no", "n", "0", "off"}
_WINDOWS_PATH = re.compile(r"^[a-zA-Z]:[\\/]|^\\\\")


@dataclass(frozen=True)
class Problem:
    """One thing wrong (or worth a warning) with one cell of the sheet."""

    row: int
    column: str
    message: str

    def __str__(self) -> str:
        return f"row {self.row}, column '{self.column}': {self.message}"


@dataclass(frozen=True)
class JobSpec:
    """One job to run: what to send, and where in the sheet it came from."""

    key: str
    row: int
    model_id: str
    payload: dict[str, Any]
    take: int
    label: str  # the varying values that tell this job apart from its row's others
    estimated_cost: float | None


@dataclass
class SheetPlan:
    """Every job of a sheet, and the rows that could not become jobs."""

    jobs: list[JobSpec] = field(default_factory=list)
    invalid: dict[int, list[Problem]] = field(default_factory=dict)
    warnings: list[Problem] = field(default_factory=list)
    row_count: int = 0

    def jobs_by_row(self) -> dict[int, list[JobSpec]]:
        """Jobs grouped by sheet row number, in job order."""
        grouped: dict[int, list[JobSpec]] = {}
        for job in self.jobs:
            grouped.setdefault(job.row, []).append(job)
        return grouped


def _norm(header: str) -> str:
    return str(header).strip().lower()


def map_columns(
    headers: Sequence[str],
    model: ModelSpec,
    *,
    columns: Mapping[str, str] | None = None,
    sheet_name: str = "sheet",
) -> dict[str, int]:
    """Map model fields (and `takes`/`job_id`) to column indexes; two for one field is an error."""
    aliases = {_norm(header): name for name, header in (columns or {}).items()}
    wanted = set(model.fields) | {TAKES_COLUMN, JOB_ID_COLUMN}
    found: dict[str, int] = {}
    for index, header in enumerate(headers):
        key = _norm(header)
        name = aliases.get(key, key)
        if name not in wanted:
            continue
        if name in found:
            first = headers[found[name]]
            raise SheetError(
                f"{sheet_name}: columns '{first}' and '{header}' both map to the field '{name}'"
            )
        found[name] = index
    return found


def _as_text(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, dt.time):
        # Excel turns a typed "16:9" into the time 16:09; give the ratio back
        return f"{value.hour}:{value.minute}"
    return str(value).strip()


def _coerce_one(spec: FieldSpec, value: Any, label: str) -> Any:
    """Coerce one non-empty cell value to the field's type; raise ValueError with the rule."""
    kind = spec.type
    if kind == "boolean":
        if isinstance(value, bool):
            return value
        text = _as_text(value).lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise ValueError(
            f"{label} '{_as_text(value)}' is not a yes/no value (TRUE/FALSE, yes/no, 1/0)"
        )
    if kind in ("integer", "number"):
        text = _as_text(value)
        try:
            number = float(value) if not isinstance(value, str) else float(text)
        except (TypeError, ValueError):
            raise ValueError(f"{label} '{text}' is not a number") from None
        if kind == "integer":
            if not number.is_integer():
                raise ValueError(f"{label} '{text}' is not a whole number")
            number = int(number)
        low, high = spec.minimum, spec.maximum
        if (low is not None and number < low) or (high is not None and number > high):
            raise ValueError(f"{label} {text} is outside {_fmt(low)}–{_fmt(high)}")
        return number
    text = _as_text(value)
    if kind == "enum":
        for allowed in spec.values:
            if text.lower() in (allowed.lower(), allowed.lower().rstrip("p")):
                return allowed
        raise ValueError(f"{label} '{text}' is not one of {', '.join(spec.values)}")
    if kind == "url":
        return _check_url(text, label)
    if not text:
        raise ValueError(f"{label} is blank")
    return text


def _fmt(number: float | None) -> str:
    return "" if number is None else f"{number:g}"


def _check_url(text: str, label: str) -> str:
    if _WINDOWS_PATH.match(text) or text.startswith(("/", "~", "file:")):
        raise ValueError(
            f"{label} '{text}' is a file on a computer, not a web link; "
            "upload the image and use its https:// address"
        )
    parsed = urlparse(text)
    if parsed.scheme.lower() not in ("http", "https") or not parsed.netloc:
        raise ValueError(
            f"{label} '{text}' is not a web link; use the image's full https:// address"
        )
    return text


def _is_empty(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


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
    model: ModelSpec,
    *,
    columns: Mapping[str, str] | None = None,
    defaults: Mapping[str, Any] | None = None,
    sheet_name: str = "sheet",
) -> SheetPlan:
    """Validate every (row number, values) pair and expand valid rows into job specs."""
    mapping = map_columns(headers, model, columns=columns, sheet_name=sheet_name)
    defaults = dict(defaults or {})
    missing = [n for n in model.required if n not in mapping and _is_empty(defaults.get(n))]
    if missing:
        names = ", ".join(f"'{n}'" for n in missing)
        plural = "s" if len(missing) > 1 else ""
        raise SheetError(f"{sheet_name}: missing required column{plural} {names}")
    plan = SheetPlan(row_count=len(rows))
    seen: dict[str, int] = {}
    for number, values in rows:
        _plan_row(plan, seen, number, values, headers, mapping, model, defaults)
    return plan


def _plan_row(
    plan: SheetPlan,
    seen: dict[str, int],
    number: int,
    values: Sequence[Any],
    headers: Sequence[str],
    mapping: Mapping[str, int],
    model: ModelSpec,
    defaults: Mapping[str, Any],
) -> None:
    problems: list[Problem] = []
    choices: dict[str, list[Any]] = {}
    for name, spec in model.fields.items():
        index = mapping.get(name)
        column = headers[index] if index is not None else name
        raw = values[index] if index is not None and index < len(values) else None
        if _is_empty(raw):
            raw = defaults.get(name)
        if _is_empty(raw):
            if spec.required:
                problems.append(
                    Problem(number, column, f"{name} is required but the cell is empty")
                )
            continue
        parts = str(raw).split("|") if spec.multi and isinstance(raw, str) else [raw]
        coerced = []
        for part in parts:
            outcome = _coerce_cached(spec, part, name)
            if isinstance(outcome, ValueError):
                problems.append(Problem(number, column, str(outcome)))
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
                    )
                )
    takes, job_id = _takes_and_id(values, headers, mapping, number, problems)
    if job_id is not None:
        first_row = seen.setdefault(f"job_id:{job_id}", number)
        if first_row != number:
            column = headers[mapping[JOB_ID_COLUMN]]
            problems.append(
                Problem(number, column, f"job_id '{job_id}' is already used on row {first_row}")
            )
    if problems:
        plan.invalid[number] = problems
        return
    names = list(choices)
    combos = list(itertools.product(*(choices[n] for n in names)))
    many = len(combos) * takes > 1
    jobs: list[JobSpec] = []
    for number_in_row, combo in enumerate(combos):
        payload = dict(zip(names, combo, strict=True))
        normalised = {n: payload.get(n, s.default) for n, s in model.fields.items()}
        label = ", ".join(f"{n}={payload[n]}" for n in names if len(choices[n]) > 1)
        for take in range(1, takes + 1):
            take_label = ", ".join(x for x in (label, f"take {take}" if takes > 1 else "") if x)
            if job_id is not None:
                # the row's first job keeps the bare id, so adding takes or variants later
                # never re-keys (and re-pays for) the job that already ran
                first = number_in_row == 0 and take == 1
                key = job_id if first or not many else f"{job_id}[{take_label}]"
            else:
                key = job_key(model.model_id, normalised, take, 1)
                seen[key] = seen.get(key, 0) + 1
                if seen[key] > 1:  # an identical row above: this one is another job
                    key = job_key(model.model_id, normalised, take, seen[key])
            cost = _cost_cached(model, normalised)
            jobs.append(JobSpec(key, number, model.model_id, payload, take, take_label, cost))
    for job in jobs[1:] if job_id is not None else []:
        # `id[take 2]` is also a job_id another row could use: one key, two jobs
        first_row = seen.setdefault(f"job_id:{job.key}", number)
        if first_row != number:
            column = headers[mapping[JOB_ID_COLUMN]]
            message = f"job_id '{job_id}' makes job '{job.key}', the job_id of row {first_row}"
            plan.invalid[number] = [Problem(number, column, message)]
            return
    plan.jobs.extend(jobs)


# Sheets repeat the same settings on row after row: coerce each distinct cell value once.
_COERCED: dict[tuple[int, str, Any], Any] = {}
_COSTS: dict[tuple[str, tuple[Any, ...]], float | None] = {}
_CACHE_LIMIT = 100_000


def _coerce_cached(spec: FieldSpec, value: Any, label: str) -> Any:
    """`_coerce_one`, remembered per distinct (field, value); a ValueError is returned."""
    if spec.type == "string":  # prompts are nearly all different: nothing to remember
        try:
            return _coerce_one(spec, value, label)
        except ValueError as exc:
            return exc
    cache_key = (id(spec), type(value).__name__, value)  # specs live as long as the process
    try:
        return _COERCED[cache_key]
    except KeyError:
        pass
    except TypeError:  # an unhashable value: coerce it every time
        cache_key = None  # type: ignore[assignment]
    try:
        outcome: Any = _coerce_one(spec, value, label)
    except ValueError as exc:
        outcome = exc
    if cache_key is not None and len(_COERCED) < _CACHE_LIMIT:
        _COERCED[cache_key] = outcome
    return outcome


def _cost_cached(model: ModelSpec, normalised: Mapping[str, Any]) -> float | None:
    """The model's cost estimate, once per distinct priced combination."""
    by = model.pricing.get("by", []) + (["duration"] if "duration" in model.fields else [])
    cache_key = (model.model_id, tuple(normalised.get(n) for n in by))
    if cache_key not in _COSTS:
        if len(_COSTS) >= _CACHE_LIMIT:
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
    if not _is_empty(raw):
        text = _as_text(raw)
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
    if not _is_empty(raw):
        job_id = _as_text(raw)
    return takes, job_id
