"""Sheet headers → column keys: roles, synonyms, small typos, `[columns]` and `ignore`.

A sheet speaks in roles (prompt, image, duration...) that each model file maps to its own
field; the keys a header can mean (a role, `field:NAME`, `takes`, `job_id`, `model`) come
from columns.column_keys. A header is mapped when it names a key after normalising (letter
case, spaces, underscores, a unit in parentheses) or is a sure synonym of a role; it needs
the user's word (`[columns]` or `ignore`) when it only resembles one (a typo, a loose
synonym, a unit batchgen does not send, a second header for a key already mapped).
"""

from __future__ import annotations

import difflib
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from batchgen.errors import ConfigError, SheetError

FIELD_PREFIX = "field:"
# Headers that mean the role whatever else the sheet says: mapped and printed.
ROLE_SYNONYMS: dict[str, tuple[str, ...]] = {
    "prompt": ("prompt text", "text prompt", "video prompt"),
    "image": (
        "image url",
        "image link",
        "start image",
        "start image url",
        "start frame",
        "first frame",
        "first frame image",
        "first frame url",
        "input image",
    ),
    "end_image": ("end image url", "end frame", "last frame", "last frame image", "last frame url"),
    "duration": ("length", "video length", "clip length", "duration seconds", "seconds"),
    "ratio": ("aspect ratio", "aspect"),
    "resolution": ("video resolution",),
    "audio": ("generate audio", "with audio", "sound"),
    "negative_prompt": ("negative", "negative prompt text"),
    "seed": ("random seed",),
}
# Headers that may mean the role, or may be the team's own: the user says which.
LOOSE_SYNONYMS: dict[str, tuple[str, ...]] = {
    "prompt": ("brief", "creative brief", "script", "description"),
    "image": ("hero image", "picture", "photo", "product image", "image file"),
    "duration": ("time", "secs", "runtime"),
    "ratio": ("format", "orientation", "aspect format"),
    "resolution": ("quality", "res"),
    "audio": ("music", "voice", "sound on"),
}
# Units a header may carry for a role and still mean what batchgen sends.
ROLE_UNITS: dict[str, tuple[str, ...]] = {
    "duration": ("s", "sec", "secs", "second", "in seconds", "seconds"),  # the last is said
}
_UNIT_RE = re.compile(r"^(.*?)\s*[(\[]\s*([^()\[\]]*?)\s*[)\]]\s*$")
_SEPARATORS = re.compile(r"[\s_\-./:*]+")
_TYPO_CUTOFF = 0.8


def normalise(header: object) -> str:
    """Case, width, spaces, underscores and punctuation folded: 'Image_URL ' → 'image url'."""
    text = unicodedata.normalize("NFKC", str(header)).casefold()
    return _SEPARATORS.sub(" ", text).strip()


def _split_unit(header: object) -> tuple[str, str | None]:
    """('duration', 's') from 'Duration (s)'; the unit is None when there is none."""
    m = _UNIT_RE.match(unicodedata.normalize("NFKC", str(header)).strip())
    if not m or not m.group(1).strip():
        return normalise(header), None
    return normalise(m.group(1)), normalise(m.group(2))


def shown(key: str) -> str:
    """A column key as a person reads it: the role, or the model's own field name."""
    return key.removeprefix(FIELD_PREFIX)


def resolve_key(keys: Mapping[str, str], name: str) -> str | None:
    """A `[columns]`/`[defaults]` name (role, field, or its normalised spelling) → its key."""
    found = keys.get(str(name).strip().lower())
    if found is not None:
        return found
    wanted = normalise(name)
    return next((key for known, key in keys.items() if normalise(known) == wanted), None)


@dataclass(frozen=True)
class HeaderMatch:
    """A header read as a model field, and why."""

    column: int
    header: str
    key: str
    how: str  # name | synonym | unit | typo | loose synonym | second header

    @property
    def field(self) -> str:
        """The role or field name the header is read as."""
        return shown(self.key)

    def __str__(self) -> str:
        return f"'{self.header}' → {self.field} ({self.how})"


@dataclass
class ColumnMap:
    """Where each field's values are, what was mapped by resemblance, what needs a word."""

    fields: dict[str, int] = field(default_factory=dict)
    mapped: list[HeaderMatch] = field(default_factory=list)  # printed by check and run
    unsure: list[HeaderMatch] = field(default_factory=list)  # check: exit 1; run: refused
    ignored: list[str] = field(default_factory=list)

    def unsure_text(self) -> str:
        """One line for the headers that need the user's word."""
        listed = "; ".join(f"'{m.header}' resembles {m.field} ({m.how})" for m in self.unsure)
        first = self.unsure[0]
        return (
            f'{listed} — map it in the job file ([columns] {first.field} = "{first.header}") '
            f'or mark it as yours (--ignore-column "{first.header}", or ignore = [...])'
        )


def _names(keys: Mapping[str, str]) -> dict[str, tuple[str, str]]:
    """Normalised header → (key, how) for names and sure synonyms."""
    names = {normalise(name): (key, "name") for name, key in keys.items()}
    roles = set(keys.values())
    for role, words in ROLE_SYNONYMS.items():
        if role in roles:
            for word in words:
                names.setdefault(word, (role, "synonym"))
    return names


def _loose(keys: Mapping[str, str]) -> dict[str, str]:
    roles = set(keys.values())
    return {word: role for role, words in LOOSE_SYNONYMS.items() if role in roles for word in words}


def _match(
    header: str, names: Mapping[str, tuple[str, str]], loose: Mapping[str, str]
) -> tuple[str, str] | None:
    """(key, how) a header means or resembles; None for a header of the team's own."""
    plain = normalise(header)
    if not plain:
        return None
    if plain in names:
        return names[plain]
    base, unit = _split_unit(header)
    if unit is not None and base in names:
        key, how = names[base]
        units = ROLE_UNITS.get(key)
        if units is not None and unit not in units:
            return key, f"unit '{unit}'; batchgen sends {units[-1]}"
        return key, "unit" if units else how
    if plain in loose or base in loose:
        return loose.get(plain) or loose[base], "loose synonym"
    if len(base) >= 4:
        close = difflib.get_close_matches(base, list(names), n=1, cutoff=_TYPO_CUTOFF)
        if close:
            return names[close[0]][0], "typo"
    return None


def nearest(word: str, candidates: Iterable[str], n: int = 3) -> list[str]:
    """The candidates closest to a word, by normalised spelling."""
    pool = {normalise(c): c for c in candidates if str(c).strip()}
    close = difflib.get_close_matches(normalise(word), list(pool), n=n, cutoff=0.5)
    return [pool[c] for c in close]


def _nearest_text(word: str, candidates: Sequence[str]) -> str:
    close = nearest(word, candidates)
    return f"; nearest: {', '.join(repr(c) for c in close)}" if close else ""


def map_headers(
    headers: Sequence[str],
    keys: Mapping[str, str],
    *,
    columns: Mapping[str, str] | None = None,
    ignore: Iterable[str] = (),
    sheet_name: str = "sheet",
    strict_columns: bool = True,
) -> ColumnMap:
    """Map headers to keys; `[columns]` entries and `ignore` come first, then resemblance.

    `keys` maps a normalised name to its key (columns.column_keys). With strict_columns, a
    `[columns]` name that is no role or field, or a header not in the row, is a ConfigError
    naming the nearest names (header-row detection passes False).
    """
    result = ColumnMap()
    by_norm: dict[str, int] = {}
    for index, header in enumerate(headers):
        by_norm.setdefault(normalise(header), index)
    ignored = {normalise(name) for name in ignore}
    taken: set[int] = set()
    for name, header in (columns or {}).items():
        key = resolve_key(keys, str(name))
        if key is None:
            if not strict_columns:
                continue
            known = sorted({shown(k) for k in keys.values()})
            raise ConfigError(
                f"[columns] {name}: no such role or model field{_nearest_text(str(name), known)}"
            )
        at = by_norm.get(normalise(header))
        if at is None:
            if not strict_columns:
                continue
            seen = [h for h in headers if str(h).strip()]
            raise ConfigError(
                f"[columns] {name} = {header!r}: {sheet_name} has no such header"
                f"{_nearest_text(str(header), seen)}"
            )
        if key in result.fields:
            first = headers[result.fields[key]]
            raise ConfigError(f"[columns] maps both {first!r} and {header!r} to {shown(key)}")
        result.fields[key] = at
        taken.add(at)
    names, loose = _names(keys), _loose(keys)
    sure: list[HeaderMatch] = []
    for index, header in enumerate(headers):
        if index in taken:
            continue
        if normalise(header) in ignored:
            if str(header).strip():
                result.ignored.append(str(header))
            continue
        found = _match(str(header), names, loose)
        if found is None:
            continue
        match = HeaderMatch(index, str(header), found[0], found[1])
        if match.how in ("name", "synonym", "unit"):
            sure.append(match)
        else:
            result.unsure.append(match)
    # a key's own name first, then other names, then synonyms: later ones are second headers
    rank = {"name": 1, "unit": 2, "synonym": 3}
    sure.sort(key=lambda m: (normalise(m.header) != normalise(m.field), rank[m.how], m.column))
    for match in sure:
        if match.key in result.fields:
            first = headers[result.fields[match.key]]
            if match.how == "name" and normalise(first) == normalise(match.header):
                raise SheetError(
                    f"{sheet_name}: columns '{first}' and '{match.header}' both map to the "
                    f"field '{match.field}'"
                )
            why = f"second header; '{first}' is used"
            result.unsure.append(HeaderMatch(match.column, match.header, match.key, why))
            continue
        result.fields[match.key] = match.column
        if match.how != "name":  # a role's or a model's own name, in any spelling, goes unsaid
            result.mapped.append(match)
    result.mapped.sort(key=lambda m: m.column)
    result.unsure.sort(key=lambda m: m.column)
    return result


def defaults_by_key(keys: Mapping[str, str], defaults: Mapping[str, Any]) -> dict[str, Any]:
    """`[defaults]` keyed like the columns; a name that is no role or field is a ConfigError."""
    out: dict[str, Any] = {}
    for name, value in defaults.items():
        key = resolve_key(keys, str(name))
        if key is None:
            known = sorted({shown(k) for k in keys.values()})
            raise ConfigError(
                f"[defaults] {name}: no such role or model field{_nearest_text(str(name), known)}"
            )
        out[key] = value
    return out


def where_text(
    missing: Sequence[str],
    headers: Sequence[str],
    *,
    header_row: int | None,
    searched: bool = True,
    other_sheets: Sequence[str] = (),
) -> str:
    """What follows a missing-columns error: the row read, its headers, nearest, other sheets."""
    seen = [str(h) for h in headers if str(h).strip()]
    parts = []
    if header_row is not None:
        listed = ", ".join(repr(h) for h in seen[:12]) + (" …" if len(seen) > 12 else "")
        how = "no row names them; row" if searched else "header row"
        parts.append(f"{how} {header_row} was read as the header: {listed}")
    hints = []
    for name in missing:
        close = nearest(name, seen)
        if close:
            hints.append(f"{name} ~ {', '.join(repr(c) for c in close)}")
    if hints:
        parts.append("nearest: " + "; ".join(hints))
    if other_sheets:
        names = ", ".join(repr(s) for s in other_sheets)
        parts.append(f"other worksheets: {names} (pick one with --sheet)")
    parts.append("map headers with [columns] in a job file or choose the row with --header-row N")
    return "; " + "; ".join(parts)
