"""What a sheet's headers mean: a role (prompt, image, ...), one model's own input, or ours.

Roles are the team's words (models.ROLES); each model file maps them to its own field names,
so one column feeds every model of a row. A model's field name that plays a role in its file
(`first_frame_image_url`, `start_image_url`) means that role; one that plays none
(`camera_fixed`) feeds only the models that have it. `headers` reads a header (synonyms,
units, typos) into these keys.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from batchgen._cells import is_empty
from batchgen.errors import SheetError
from batchgen.headers import FIELD_PREFIX, defaults_by_key, map_headers
from batchgen.models import ROLES, ModelCatalog, ModelSpec, load_catalog

TAKES_COLUMN = "takes"
JOB_ID_COLUMN = "job_id"
MODEL_COLUMN = "model"


def _field_key(name: str) -> str:
    return FIELD_PREFIX + name


def column_keys(catalog: ModelCatalog) -> dict[str, str]:
    """What a header (normalised) means: a role, a model's own field, or one of ours.

    A model's field name that plays a role in that model's file (`first_frame_image_url`,
    `start_image_url`, `aspect_ratio`) means the role, so it feeds every model of the row.
    """
    keys: dict[str, str] = {}
    for model in catalog:
        for name in model.fields:
            if model.role_of(name) is None:
                keys.setdefault(name.lower(), _field_key(name))
    for model in catalog:
        for role, name in model.roles.items():
            keys[name.lower()] = role
    for role in ROLES:
        keys[role] = role
    for own in (TAKES_COLUMN, JOB_ID_COLUMN, MODEL_COLUMN):
        keys[own] = own
    return keys


def map_columns(
    headers: Sequence[str],
    model: ModelSpec | Sequence[ModelSpec] | None = None,
    *,
    columns: Mapping[str, str] | None = None,
    sheet_name: str = "sheet",
    catalog: ModelCatalog | None = None,
) -> dict[str, int]:
    """Map roles, model fields and `takes`/`job_id`/`model` to column indexes.

    Keys are role names, `takes`, `job_id`, `model`, or `field:NAME` for a model's own input
    that plays no role; see headers.map_headers for how a header is read.
    """
    keys = column_keys(catalog or load_catalog())
    return map_headers(headers, keys, columns=columns, sheet_name=sheet_name).fields


def key_of(model: ModelSpec, name: str) -> str:
    """The column key a model's field is read from: its role, else `field:NAME`."""
    return model.role_of(name) or _field_key(name)


@dataclass(frozen=True)
class Reading:
    """How the sheet was read: the team's own headers, and where the header was found."""

    ignore: Sequence[str] = ()
    header_row: int | None = None
    header_searched: bool = True  # False: the user named the row (--header-row)
    other_sheets: Sequence[str] = ()


def header_test(
    models: Sequence[ModelSpec],
    catalog: ModelCatalog,
    *,
    columns: Mapping[str, str] | None = None,
    defaults: Mapping[str, Any] | None = None,
    ignore: Sequence[str] = (),
) -> Callable[[list[str]], bool]:
    """The test a sheet's rows are put to, top down: does this row name the required inputs?"""
    keys = column_keys(catalog)
    by_key = defaults_by_key(keys, defaults or {})
    needed = {key_of(m, name) for m in models for name in m.required}
    needed = {k for k in needed if is_empty(by_key.get(k))}

    def test(cells: list[str]) -> bool:
        try:
            found = map_headers(cells, keys, columns=columns, ignore=ignore, strict_columns=False)
        except SheetError:
            return True  # two headers for one input: this is the header, and the error says so
        return needed <= set(found.fields)

    return test
