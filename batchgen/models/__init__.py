"""API models as data: one JSON file per model id; adding a model is adding a file.

A file names the model's id, a short alias, its kind (t2v or i2v), where its schema was read,
its inputs with their rules, the role each input plays (prompt, image, duration, ...) and,
where one is published, its price table. `--models-dir` adds or overrides files.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import Any

from batchgen.errors import ConfigError
from batchgen.paths import shown

DEFAULT_MODEL_ID = "bytedance/seedance-v1.5-pro/image-to-video"
# beside this file; importlib.resources trips over the editable install's package mapping
_HERE = Path(__file__).resolve().parent
KINDS = ("t2v", "i2v")
FIELD_TYPES = ("string", "url", "enum", "integer", "number", "boolean")
# The team's words for what a model takes; each model file maps them to its own field names.
ROLES = (
    "prompt",
    "image",
    "end_image",
    "duration",
    "ratio",
    "resolution",
    "audio",
    "negative_prompt",
    "seed",
)
# A role a model does not take changes the video itself when given: such a job is invalid.
# The others are reported as a warning and left out (the model decides on its own).
RESULT_ROLES = ("prompt", "image", "end_image")


@dataclass(frozen=True)
class FieldSpec:
    """One input field of a model: its type and rule."""

    name: str
    type: str  # string | url | enum | integer | number | boolean
    required: bool = False
    default: Any = None
    values: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    soft_max_length: int | None = None
    multi: bool = False  # a cell may hold several values separated by "|"
    image: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, eq=False)  # compared and hashed by identity: one object per file
class ModelSpec:
    """A model of the Model API: its id, input fields, roles and price table."""

    model_id: str
    title: str
    fields: dict[str, FieldSpec]
    pricing: dict[str, Any]
    output: str = "video"
    alias: str = ""
    kind: str = "i2v"
    roles: dict[str, str] = field(default_factory=dict)  # role -> this model's field
    source: dict[str, str] = field(default_factory=dict)
    path: str = ""  # the data file it was read from
    shipped: bool = True

    @property
    def required(self) -> list[str]:
        """Names of the required fields."""
        return [f.name for f in self.fields.values() if f.required]

    @property
    def name(self) -> str:
        """The short name a person reads: the alias, else the id."""
        return self.alias or self.model_id

    def role_of(self, field_name: str) -> str | None:
        """The role a field of this model plays, if any."""
        for role, name in self.roles.items():
            if name == field_name:
                return role
        return None

    @property
    def required_roles(self) -> list[str]:
        """Required inputs in the team's terms (a role where one maps, else the field)."""
        return [self.role_of(n) or n for n in self.required]

    @property
    def priced(self) -> bool:
        """True when the file (or the user) gives this model a price."""
        return bool(self.pricing)

    def price_per_second(self) -> str:
        """The price as `batchgen models` shows it."""
        pricing = self.pricing
        if not pricing:
            return "unknown"
        table = pricing.get("table")
        per = pricing.get("per_seconds")
        values = sorted(_leaves(table))
        if not values:
            return "unknown"
        if not per:
            return (
                f"${values[0]:g}/job" if len(values) == 1 else f"${values[0]:g}-{values[-1]:g}/job"
            )
        low, high = values[0] / float(per), values[-1] / float(per)
        return f"${low:.4g}/s" if low == high else f"${low:.4g}-{high:.4g}/s"

    def estimate_cost(self, payload: Mapping[str, Any]) -> float | None:
        """Estimated dollars for one job with this (validated) input, or None if unpriced."""
        pricing = self.pricing
        if not pricing:
            return None
        node: Any = pricing["table"]
        for key in pricing.get("by", []):
            value = payload.get(key, self.fields[key].default)
            text = str(value).lower() if isinstance(value, bool) else str(value)
            if not isinstance(node, dict) or text not in node:
                return None
            node = node[text]
        per_seconds = pricing.get("per_seconds")
        if per_seconds:
            duration = self.duration_field
            if duration is None:
                return None
            seconds = payload.get(duration, self.fields[duration].default)
            if seconds is None:  # no duration given and no published default
                return None
            return round(float(node) * float(seconds) / float(per_seconds), 6)
        return float(node)

    @property
    def duration_field(self) -> str | None:
        """The field that holds the clip's length in seconds, if the model has one."""
        name = self.roles.get("duration", "duration")
        return name if name in self.fields else None

    def with_price(self, dollars: float) -> ModelSpec:
        """This model priced by the user: dollars per second of video (per job without one)."""
        per_second = self.duration_field is not None
        pricing = {"table": float(dollars), "by": [], "source": "the job file's [prices]"}
        if per_second:
            pricing["per_seconds"] = 1
        return replace(self, pricing=pricing)


def _leaves(node: Any) -> Iterable[float]:
    if isinstance(node, dict):
        for value in node.values():
            yield from _leaves(value)
    elif isinstance(node, int | float) and not isinstance(node, bool):
        yield float(node)


def _file_name(model_id: str) -> str:
    return model_id.replace("/", "__") + ".json"


class _Malformed(Exception):
    """A data file breaks a rule: the key and the rule."""

    def __init__(self, key: str, rule: str) -> None:
        super().__init__(f"{key}: {rule}")


def _need(data: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if key not in data:
        raise _Malformed(f"{where}{key}", "is missing")
    value = data[key]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise _Malformed(f"{where}{key}", f"must be a {_json_name(names)}")
    return value


def _json_name(python: str) -> str:
    return python.replace("str", "string").replace("dict", "table").replace("list", "list")


def _parse_field(name: str, raw: Any) -> FieldSpec:
    where = f"inputs.{name}."
    if not isinstance(raw, dict):
        raise _Malformed(f"inputs.{name}", "must be a table")
    kind = _need(raw, "type", str, where)
    if kind not in FIELD_TYPES:
        raise _Malformed(f"{where}type", f"'{kind}' is not one of {', '.join(FIELD_TYPES)}")
    values = raw.get("values", [])
    if kind == "enum" and (not isinstance(values, list) or not values):
        raise _Malformed(f"{where}values", "an enum needs a non-empty list of values")
    for bound in ("minimum", "maximum"):
        if bound in raw and (
            not isinstance(raw[bound], int | float) or isinstance(raw[bound], bool)
        ):
            raise _Malformed(f"{where}{bound}", "must be a number")
    low, high = raw.get("minimum"), raw.get("maximum")
    if low is not None and high is not None and low > high:
        raise _Malformed(f"{where}minimum", f"{low} is above the maximum {high}")
    image = raw.get("image", {})
    if not isinstance(image, dict):
        raise _Malformed(f"{where}image", "must be a table")
    return FieldSpec(
        name=name,
        type=kind,
        required=bool(raw.get("required", False)),
        default=raw.get("default"),
        values=tuple(str(v) for v in values),
        minimum=low,
        maximum=high,
        soft_max_length=raw.get("soft_max_length"),
        multi=bool(raw.get("multi", False)),
        image=dict(image),
    )


def _parse(data: Any, *, path: str = "", shipped: bool = True) -> ModelSpec:
    """A ModelSpec from a data file's JSON; _Malformed names the key and the rule."""
    if not isinstance(data, dict):
        raise _Malformed("(top level)", "must be a JSON object")
    model_id = _need(data, "model_id", str, "")
    if model_id.count("/") < 1 or model_id != model_id.strip() or " " in model_id:
        raise _Malformed("model_id", f"'{model_id}' is not a model id like vendor/model/endpoint")
    inputs = _need(data, "inputs", dict, "")
    if not inputs:
        raise _Malformed("inputs", "must name at least one input")
    fields = {name: _parse_field(name, raw) for name, raw in inputs.items()}
    kind = data.get("kind", "i2v")
    if kind not in KINDS:
        raise _Malformed("kind", f"'{kind}' is not one of {', '.join(KINDS)}")
    roles = data.get("roles", {})
    if not isinstance(roles, dict):
        raise _Malformed("roles", "must be a table of role = input field")
    for role, name in roles.items():
        if role not in ROLES:
            raise _Malformed(f"roles.{role}", f"is not a role (roles: {', '.join(ROLES)})")
        if name not in fields:
            raise _Malformed(f"roles.{role}", f"names '{name}', which is not one of the inputs")
    if kind == "t2v" and "image" in roles:
        raise _Malformed("roles.image", "a text-to-video model (kind t2v) takes no image")
    alias = data.get("alias", "")
    if not isinstance(alias, str) or " " in alias or "|" in alias:
        raise _Malformed("alias", "must be a short name without spaces or '|'")
    pricing = data.get("pricing") or {}
    if not isinstance(pricing, dict):
        raise _Malformed("pricing", "must be a table")
    if pricing:
        _check_pricing(pricing, fields)
    source = data.get("source", {})
    return ModelSpec(
        model_id=model_id,
        title=str(data.get("title", model_id)),
        fields=fields,
        pricing=pricing,
        output=str(data.get("output", "video")),
        alias=alias,
        kind=kind,
        roles=dict(roles),
        source=dict(source) if isinstance(source, dict) else {},
        path=path,
        shipped=shipped,
    )


def _check_pricing(pricing: Mapping[str, Any], fields: Mapping[str, FieldSpec]) -> None:
    if "table" not in pricing:
        raise _Malformed("pricing.table", "is missing")
    by = pricing.get("by", [])
    if not isinstance(by, list):
        raise _Malformed("pricing.by", "must be a list of input names")
    for name in by:
        if name not in fields:
            raise _Malformed("pricing.by", f"names '{name}', which is not one of the inputs")
    if not list(_leaves(pricing["table"])):
        raise _Malformed("pricing.table", "holds no price")
    per = pricing.get("per_seconds")
    if per is not None and (not isinstance(per, int | float) or per <= 0):
        raise _Malformed("pricing.per_seconds", "must be a number of seconds above 0")


def read_model_file(path: Path, *, shipped: bool = False) -> ModelSpec:
    """Read and check one model file; a malformed one is a ConfigError naming file, key, rule."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{shown(path)}: cannot read the model file ({exc})") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{shown(path)}: line {exc.lineno}: not valid JSON ({exc.msg})") from None
    try:
        return _parse(data, path=str(path), shipped=shipped)
    except _Malformed as exc:
        raise ConfigError(f"{shown(path)}: {exc}") from None


@cache
def shipped_models() -> tuple[ModelSpec, ...]:
    """Every model file that comes with batchgen."""
    return tuple(read_model_file(p, shipped=True) for p in sorted(_HERE.glob("*.json")))


class ModelCatalog:
    """The models a command may use: the shipped files plus a user's own (which override)."""

    def __init__(self, models: Iterable[ModelSpec]) -> None:
        self.by_id: dict[str, ModelSpec] = {}
        for model in models:
            self.by_id[model.model_id] = model  # later files (the user's) win
        self._names: dict[str, ModelSpec] = {}
        for model in self.by_id.values():
            self._names[model.model_id.lower()] = model
        for model in self.by_id.values():
            if model.alias:
                other = self._names.get(model.alias.lower())
                if other is not None and other.model_id != model.model_id:
                    raise ConfigError(
                        f"{model.path}: alias '{model.alias}' is already the name of "
                        f"{other.model_id} ({other.path})"
                    )
                self._names[model.alias.lower()] = model

    def __iter__(self) -> Any:
        return iter(sorted(self.by_id.values(), key=lambda m: (not m.shipped, m.model_id)))

    def find(self, name: str) -> ModelSpec | None:
        """The model with this id or alias (any letter case), or None."""
        return self._names.get(name.strip().lower())

    def get(self, name: str) -> ModelSpec:
        """The model with this id or alias; a ConfigError names the nearest ones."""
        model = self.find(name)
        if model is None:
            raise ConfigError(self.unknown_message(name))
        return model

    def unknown_message(self, name: str) -> str:
        """Says a model name is unknown, with the nearest known names."""
        names = sorted({m.alias or m.model_id for m in self.by_id.values()})
        near = difflib.get_close_matches(name.strip().lower(), list(self._names), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(near)}?" if near else ""
        return f"unknown model '{name}'{hint} (known: {', '.join(names)}; see `batchgen models`)"

    def priced(self, prices: Mapping[str, Any]) -> ModelCatalog:
        """This catalog with the user's [prices] (by id or alias, dollars per second) applied."""
        models = dict(self.by_id)
        for name, value in prices.items():
            model = self.find(str(name))
            if model is None:
                raise ConfigError(f"[prices]: {self.unknown_message(str(name))}")
            if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
                raise ConfigError(
                    f"[prices] '{name}': must be dollars per second of video, a number >= 0"
                )
            models[model.model_id] = model.with_price(float(value))
        return ModelCatalog(models.values())


def load_catalog(models_dir: Path | str | None = None) -> ModelCatalog:
    """The shipped models, plus (overriding by id) every *.json in `models_dir`."""
    models = list(shipped_models())
    if models_dir is not None:
        folder = Path(models_dir).expanduser()
        if not folder.is_dir():
            raise ConfigError(f"models_dir {shown(folder)}: no such folder")
        models += [read_model_file(p) for p in sorted(folder.glob("*.json"))]
    return ModelCatalog(models)


@cache
def get_model(model_id: str = DEFAULT_MODEL_ID) -> ModelSpec:
    """A shipped model by id or alias."""
    return load_catalog().get(model_id)


def available_models() -> list[str]:
    """Model ids that have a shipped data file."""
    return sorted(m.model_id for m in shipped_models())
