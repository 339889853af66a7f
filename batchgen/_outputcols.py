"""Which columns a run writes its results into, without taking over a column a person typed.

A sheet's own `Status`, `request_id`, `video_url` or `error` column (any letter case) is
reused only when everything in it looks like what batchgen writes there; otherwise all four
results go to batchgen's own columns (`batchgen status` and so on), and the team's are left
as they are.

New columns go to the first run of columns, past the last one used, where nothing stops a
result from being seen: `blocked` (an .xlsx's hidden columns and merged ranges) says why a
column cannot take one. A column to be reused that is blocked is not written at all: the plan
names it in `refused`, and the run refuses the sheet before paying (see the README).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from batchgen.headers import normalise

OUTPUT_COLUMNS = ("request_id", "status", "video_url", "error")
OWN_PREFIX = "batchgen "
STATUS_WORDS = frozenset(
    {"pending", "unknown", "in_queue", "in_progress", "completed", "failed", "cancelled", "invalid"}
)
# RunComfy's request ids are UUIDs; a person's own ids (REQ-12, 4711) are shorter or wordier
_REQUEST_ID = re.compile(r"[0-9a-fA-F]{8}(?:-?[0-9a-fA-F]{4}){3}-?[0-9a-fA-F]{12}|[\w-]{20,}")
_TOKEN = re.compile(r"\S{1,200}")
_URL = re.compile(r"https?://\S+", re.I)
# Excel's last column is XFD: a sheet has 16,384 columns and no more
EXCEL_COLUMNS = 16_384
_LINE_NAME = re.compile(r"^(?:\[[^\]]*\]\s*|.*?:\s(?=\S))")  # "9:16: " or "[ratio=9:16] "
_STATUS_NAME = re.compile(r"(.*?):\s(?=\S)")  # the job a status line names: "9:16, take 2"
_NAME_ONLY = re.compile(r"(.+?):\s*")  # "kling-3.0-pro-i2v: ": older versions' line with no value


@dataclass
class ColumnPlan:
    """Output column → 0-based index, header cells to add, and the team's columns left alone."""

    positions: dict[str, int] = field(default_factory=dict)
    new_headers: dict[int, str] = field(default_factory=dict)
    kept: list[str] = field(default_factory=list)  # headers holding what a person typed
    skipped: list[str] = field(default_factory=list)  # why columns were passed over
    refused: list[str] = field(default_factory=list)  # why a run cannot write its results


# 0-based column → why no result may go there (None: it may); `new`: a column whose header
# batchgen adds, so the header row counts too
Blocked = Callable[[int, bool], str | None]


def plan_columns(
    headers: Sequence[str],
    rows: Sequence[Sequence[object]],
    append_at: int,
    *,
    blocked: Blocked | None = None,
) -> ColumnPlan:
    """Where each output column goes; see the module's docstring."""
    norm = [normalise(h) for h in headers]
    plain = {n: norm.index(normalise(n)) for n in OUTPUT_COLUMNS if normalise(n) in norm}
    own = {
        n: norm.index(normalise(OWN_PREFIX + n))
        for n in OUTPUT_COLUMNS
        if normalise(OWN_PREFIX + n) in norm
    }
    values = {n: [_text(r, i) for r in rows] for n, i in plain.items()}
    status_ours = "status" not in values or _all_ours("status", values["status"])
    kept = [
        headers[plain[n]]
        for n in OUTPUT_COLUMNS
        if n in plain and not _column_ours(n, values, status_ours)
    ]
    prefixed = bool(kept) or bool(own)
    plan = ColumnPlan(kept=kept)
    found = {n: own.get(n) if prefixed else plain.get(n) for n in OUTPUT_COLUMNS}
    missing = [n for n in OUTPUT_COLUMNS if found[n] is None]
    next_col = _free_run(plan, append_at, len(missing), blocked) if missing else append_at
    for name in OUTPUT_COLUMNS:
        at = found[name]
        if at is not None:
            plan.positions[name] = at
            why = blocked(at, False) if blocked is not None else None
            if why is not None:
                plan.refused.append(f"output column '{headers[at]}' is in {why}")
            continue
        plan.positions[name] = next_col
        plan.new_headers[next_col] = OWN_PREFIX + name if prefixed else name
        next_col += 1
    return plan


def _free_run(plan: ColumnPlan, start: int, count: int, blocked: Blocked | None) -> int:
    """The first of `count` adjacent columns from `start` that may all take results; the
    columns passed over go in plan.skipped, and a run past XFD in plan.refused."""
    at = start
    while blocked is not None and at + count <= EXCEL_COLUMNS:
        why = next((w for c in range(at, at + count) if (w := blocked(c, True)) is not None), None)
        if why is None:
            break
        if why not in plan.skipped:
            plan.skipped.append(why)
        at += 1
    if at + count > EXCEL_COLUMNS:
        why = f": {'; '.join(plan.skipped)}" if plan.skipped else ""
        plan.refused.append(
            f"no room for {count} output column(s) before Excel's last column, XFD "
            f"(16,384 columns){why}"
        )
    return at


def _text(row: Sequence[object], index: int) -> str:
    value = row[index] if index < len(row) else None
    return "" if value is None else str(value).strip()


def _lines(cell: str, named: frozenset[str] = frozenset()) -> list[str]:
    """A cell's lines without their job names; a line that is only one of the `named` jobs'
    names (older versions wrote `model: ` for a job with no request id yet) is left out."""
    lines = []
    for line in cell.splitlines():
        only = _NAME_ONLY.fullmatch(line.strip())
        if line.strip() and not (only and only.group(1) in named):
            lines.append(_LINE_NAME.sub("", line).strip())
    return lines


def _names(status: str) -> frozenset[str]:
    """The jobs a status cell's lines name (`9:16: completed` names `9:16`)."""
    return frozenset(m.group(1) for m in map(_STATUS_NAME.match, status.splitlines()) if m)


def _all_ours(
    name: str, cells: list[str], *, beside_status: bool = False, statuses: Sequence[str] = ()
) -> bool:
    """Every line of every cell is what batchgen writes in this column.

    Beside a status column of batchgen's, any single token passes as a request id (an API
    other than RunComfy's may shape them otherwise); without one, only RunComfy's shape.
    """
    request_id = _TOKEN if beside_status else _REQUEST_ID
    for at, cell in enumerate(cells):
        named = _names(statuses[at]) if beside_status and at < len(statuses) else frozenset()
        for line in _lines(cell, named):
            if name == "status" and line.lower() not in STATUS_WORDS:
                return False
            if name == "request_id" and not request_id.fullmatch(line):
                return False
            if name == "video_url" and not _URL.fullmatch(line):
                return False
    return True


def _column_ours(name: str, values: dict[str, list[str]], status_ours: bool) -> bool:
    cells = values[name]
    if not any(cells):
        return True  # nothing typed: nothing to lose
    statuses = values.get("status")
    beside = status_ours and statuses is not None and any(statuses)
    if name == "error":
        # batchgen writes an error only beside a status of its own
        return beside and all(s for s, e in zip(statuses or [], cells, strict=True) if e)
    if name == "video_url" and not beside:
        return False  # links with no status of batchgen's beside them: the team's references
    return _all_ours(name, cells, beside_status=beside, statuses=statuses or ())
