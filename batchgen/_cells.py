"""One sheet cell to one typed input value: the coercion rules every model's fields share."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any
from urllib.parse import urlparse

from batchgen.models import FieldSpec

_TRUE = {"true", "yes", "y", "1", "on"}
_FALSE = {"false", "no", "n", "0", "off"}
_WINDOWS_PATH = re.compile(r"^[a-zA-Z]:[\\/]|^\\\\")


def as_text(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, dt.time):
        # Excel turns a typed "16:9" into the time 16:09; give the ratio back
        return f"{value.hour}:{value.minute}"
    return str(value).strip()


def coerce_one(spec: FieldSpec, value: Any, label: str) -> Any:
    """Coerce one non-empty cell value to the field's type; raise ValueError with the rule."""
    kind = spec.type
    if kind == "boolean":
        if isinstance(value, bool):
            return value
        text = as_text(value).lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise ValueError(
            f"{label} '{as_text(value)}' is not a yes/no value (TRUE/FALSE, yes/no, 1/0)"
        )
    if kind in ("integer", "number"):
        text = as_text(value)
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
    text = as_text(value)
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


def is_empty(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


# Sheets repeat the same settings on row after row: coerce each distinct cell value once.
_COERCED: dict[tuple[int, str, Any], Any] = {}
CACHE_LIMIT = 100_000


def coerce_cached(spec: FieldSpec, value: Any, label: str) -> Any:
    """`coerce_one`, remembered per distinct (field, value); a ValueError is returned."""
    if spec.type == "string":  # prompts are nearly all different: nothing to remember
        try:
            return coerce_one(spec, value, label)
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
        outcome: Any = coerce_one(spec, value, label)
    except ValueError as exc:
        outcome = exc
    if cache_key is not None and len(_COERCED) < CACHE_LIMIT:
        _COERCED[cache_key] = outcome
    return outcome
