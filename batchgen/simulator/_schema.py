"""The simulator's input check: each model's own schema, read from the same data files.

Written apart from batchgen's own coercion (specs), so a test against the simulator proves
that what batchgen sends is what the model's schema takes, not what batchgen believes.
"""

from __future__ import annotations

from typing import Any

from batchgen.models import FieldSpec, ModelSpec


def _issue(name: str, msg: str, kind: str) -> dict[str, Any]:
    return {"loc": ["body", name], "msg": msg, "type": kind}


def _check_value(spec: FieldSpec, value: Any) -> str | None:
    """What is wrong with one value, or None."""
    kind = spec.type
    if kind == "boolean":
        return None if isinstance(value, bool) else "must be a boolean"
    if kind in ("integer", "number"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"must be an {kind}" if kind == "integer" else "must be a number"
        if kind == "integer" and isinstance(value, float) and not value.is_integer():
            return "must be a whole number"
        if spec.minimum is not None and value < spec.minimum:
            return f"must be at least {spec.minimum:g}"
        if spec.maximum is not None and value > spec.maximum:
            return f"must be at most {spec.maximum:g}"
        return None
    if not isinstance(value, str) or not value.strip():
        return "must be a non-empty string"
    if kind == "enum" and value not in spec.values:
        return f"must be one of {', '.join(spec.values)}"
    if kind == "url" and not value.lower().startswith(("http://", "https://")):
        return "must be an http(s) URL"
    return None


def validate_input(model: ModelSpec, payload: dict[str, Any]) -> list[dict[str, Any]]:
    """Problems with a submit's input for this model, as a FastAPI-style `detail` list."""
    detail = []
    for name, spec in model.fields.items():
        if name not in payload:
            if spec.required:
                detail.append(_issue(name, "field required", "missing"))
            continue
        problem = _check_value(spec, payload[name])
        if problem is not None:
            detail.append(_issue(name, problem, "value_error"))
    for name in sorted(set(payload) - set(model.fields)):
        # another model's field name sent here is batchgen's mistake, not the model's choice
        detail.append(_issue(name, f"extra field not permitted by {model.model_id}", "extra"))
    return detail
