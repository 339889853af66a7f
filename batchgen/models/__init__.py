"""API models as data: one JSON file per model id; adding a model is adding a file."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from batchgen.errors import ConfigError

DEFAULT_MODEL_ID = "bytedance/seedance-v1.5-pro/image-to-video"
# beside this file; importlib.resources trips over the editable install's package mapping
_HERE = Path(__file__).resolve().parent


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


@dataclass(frozen=True)
class ModelSpec:
    """A model of the Model API: its id, input fields and price table."""

    model_id: str
    title: str
    fields: dict[str, FieldSpec]
    pricing: dict[str, Any]
    output: str = "video"

    @property
    def required(self) -> list[str]:
        """Names of the required fields."""
        return [f.name for f in self.fields.values() if f.required]

    def estimate_cost(self, payload: dict[str, Any]) -> float | None:
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
        if per_seconds and "duration" in self.fields:
            seconds = payload.get("duration", self.fields["duration"].default)
            return round(float(node) * float(seconds) / float(per_seconds), 6)
        return float(node)


def _file_name(model_id: str) -> str:
    return model_id.replace("/", "__") + ".json"


def _parse(data: dict[str, Any]) -> ModelSpec:
    fields = {}
    for name, raw in data["inputs"].items():
        fields[name] = FieldSpec(
            name=name,
            type=raw["type"],
            required=bool(raw.get("required", False)),
            default=raw.get("default"),
            values=tuple(raw.get("values", ())),
            minimum=raw.get("minimum"),
            maximum=raw.get("maximum"),
            soft_max_length=raw.get("soft_max_length"),
            multi=bool(raw.get("multi", False)),
            image=dict(raw.get("image", {})),
        )
    return ModelSpec(
        model_id=data["model_id"],
        title=data.get("title", data["model_id"]),
        fields=fields,
        pricing=data.get("pricing", {}),
        output=data.get("output", "video"),
    )


@cache
def get_model(model_id: str = DEFAULT_MODEL_ID) -> ModelSpec:
    """Load the model spec for ``model_id`` from its data file."""
    path = _HERE / _file_name(model_id)
    if not path.is_file():
        known = ", ".join(available_models())
        raise ConfigError(f"unknown model '{model_id}' (known: {known})")
    return _parse(json.loads(path.read_text(encoding="utf-8")))


def available_models() -> list[str]:
    """Model ids that have a data file."""
    names = [p.name for p in _HERE.iterdir() if p.name.endswith(".json")]
    return sorted(n[: -len(".json")].replace("__", "/") for n in names)
