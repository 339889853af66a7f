"""A sheet's plan: its jobs, and the problems of the rows that could not become jobs."""

from __future__ import annotations

from collections.abc import Container
from dataclasses import dataclass, field
from typing import Any

from batchgen.headers import ColumnMap
from batchgen.models import ModelSpec


@dataclass(frozen=True)
class Problem:
    """One thing wrong (or worth a warning) with one cell of the sheet (for one model)."""

    row: int
    column: str
    message: str
    model: str = ""  # the model's alias or id when the problem is that model's alone

    def __str__(self) -> str:
        where = f"row {self.row}, column '{self.column}'"
        return (
            f"{where}, model {self.model}: {self.message}"
            if self.model
            else (f"{where}: {self.message}")
        )


@dataclass(frozen=True)
class JobSpec:
    """One job to run: what to send, and where in the sheet it came from."""

    key: str
    row: int
    model_id: str
    payload: dict[str, Any]
    take: int
    # what tells this job apart from its row's others, as its output lines start:
    # `9:16, 1080p`, `take 2`, `kling-3.0-pro-i2v, 5s` ("" for a row's only job)
    label: str
    estimated_cost: float | None
    model_name: str = ""  # the model's alias (or id), as output lines name it
    # the label as versions before named lines (`ratio=9:16, take 2`), to read their cells
    former_label: str = ""


@dataclass
class SheetPlan:
    """Every job of a sheet, and the rows (or a row's models) that could not become jobs."""

    jobs: list[JobSpec] = field(default_factory=list)
    invalid: dict[int, list[Problem]] = field(default_factory=dict)
    warnings: list[Problem] = field(default_factory=list)
    row_count: int = 0
    multi_model: bool = False  # the sheet names several models: every line names its model
    columns: ColumnMap = field(default_factory=ColumnMap)  # how the headers were read
    models: dict[str, ModelSpec] = field(default_factory=dict)  # by id, as the plan used them
    hidden: dict[int, str] = field(default_factory=dict)  # hidden rows to set aside: row → how
    set_aside: dict[int, str] = field(default_factory=dict)  # hidden rows not run: row → how

    def jobs_by_row(self) -> dict[int, list[JobSpec]]:
        """Jobs grouped by sheet row number, in job order."""
        grouped: dict[int, list[JobSpec]] = {}
        for job in self.jobs:
            grouped.setdefault(job.row, []).append(job)
        return grouped

    def set_aside_hidden(self, submitted: Container[str] = ()) -> set[str]:
        """Take the hidden rows' jobs (and problems) out of the plan, but for the jobs in
        `submitted` (sent before the row was hidden: followed, never sent again); their keys.

        Planned first, set aside after: a row's job keys (an identical row's occurrence
        count) never change because a row above it is hidden or shown again.
        """
        if not self.hidden:
            return set()
        kept: set[str] = set()
        jobs: list[JobSpec] = []
        for job in self.jobs:
            if job.row not in self.hidden:
                jobs.append(job)
            elif job.key in submitted:
                jobs.append(job)
                kept.add(job.key)
            else:
                self.set_aside[job.row] = self.hidden[job.row]
        self.jobs = jobs
        kept_rows = {job.row for job in jobs if job.key in kept}
        for row in [r for r in self.invalid if r in self.hidden and r not in kept_rows]:
            del self.invalid[row]
            self.set_aside[row] = self.hidden[row]
        self.row_count -= len(self.set_aside.keys() - kept_rows)
        return kept

    @property
    def unpriced(self) -> list[ModelSpec]:
        """Models of this plan's jobs without a price (their cost is unknown)."""
        ids = {job.model_id for job in self.jobs if job.estimated_cost is None}
        return [self.models[i] for i in sorted(ids) if i in self.models]


# as a person says a variant: 9:16, 1080p, 5s (then any other field, by name)
_ROLE_ORDER = ("ratio", "resolution", "duration")


def variant_values(model: ModelSpec, varied: dict[str, Any]) -> list[str]:
    """How the values that set a row's job apart read in its name: `9:16`, `1080p`, `5s`,
    else `seed 7`; ratio first, then resolution, duration and the rest."""

    def place(name: str) -> int:
        role = model.role_of(name)
        return _ROLE_ORDER.index(role) if role in _ROLE_ORDER else len(_ROLE_ORDER)

    names = []
    for name in sorted(varied, key=place):
        role, value = model.role_of(name), varied[name]
        names.append(
            str(value)
            if role in ("ratio", "resolution")
            else f"{value}s"
            if role == "duration"
            else f"{name} {value}"
        )
    return names
