"""What batchgen tells the user: the sheet's output cells, the per-job table and run summaries."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from batchgen.ledger import JobRecord
from batchgen.specs import Problem, SheetPlan

# Ledger states as the sheet shows them; `submitting` never outlives a run.
SHEET_STATUS = {"submitting": "pending"}
SUCCESS = "completed"
PROBLEM_STATES = ("failed", "invalid", "cancelled", "unknown")
# The columns naming where a job came from and which of its row's jobs it is are
# `batchgen …`, as the sheet's own output columns are when the team's names are taken:
# a team's sheet often has a `variant` or `sheet` column of its own.
SOURCE_HEADER = "batchgen worksheet"  # the worksheet read (a CSV: its file name)
VARIANT_HEADER = "batchgen variant"  # the job's line name in the output cells (`9:16, take 2`)
RESULT_HEADERS = [
    SOURCE_HEADER,
    "row",
    "model",
    "job_id",
    VARIANT_HEADER,
    "take",
    "request_id",
    "status",
    "video_url",
    "error",
    "estimated_cost",
    "cost",
    "download_path",
    "input",
]


def sheet_status(state: str) -> str:
    """The status word the sheet shows for a ledger state."""
    return SHEET_STATUS.get(state, state)


@dataclass
class Outcome:
    """Where every job of a sheet stands: counts, spend and the rows that need attention."""

    counts: Counter[str] = field(default_factory=Counter)
    problem_rows: dict[str, list[int]] = field(default_factory=dict)
    estimated_spend: float = 0.0
    actual_cost: float = 0.0
    jobs: int = 0
    rows: int = 0
    hidden_rows: list[int] = field(default_factory=list)  # hidden rows set aside, not run

    @property
    def all_completed(self) -> bool:
        """True when every job completed and no row is invalid."""
        return self.counts.get(SUCCESS, 0) == self.jobs

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready summary."""
        return {
            "rows": self.rows,
            "jobs": self.jobs,
            "counts": dict(self.counts),
            "problem_rows": self.problem_rows,
            "hidden_rows": self.hidden_rows,
            "estimated_spend_usd": round(self.estimated_spend, 4),
            "actual_cost_usd": round(self.actual_cost, 4),
        }


def outcome(plan: SheetPlan, records: Mapping[str, JobRecord]) -> Outcome:
    """Count the sheet's jobs by state, with spend and problem rows."""
    result = Outcome(rows=plan.row_count)
    problems: dict[str, set[int]] = {}
    for job in plan.jobs:
        record = records.get(job.key)
        state = sheet_status(record.state if record else "pending")
        result.counts[state] += 1
        result.jobs += 1
        if record and record.request_id and record.estimated_cost:
            result.estimated_spend += record.estimated_cost
        if record and record.cost:
            result.actual_cost += record.cost
        if state != SUCCESS:
            problems.setdefault(state, set()).add(job.row)
    for row, found in plan.invalid.items():
        invalid = len(_by_model(found))  # a row is invalid once per model it names
        result.counts["invalid"] += invalid
        result.jobs += invalid
        problems.setdefault("invalid", set()).add(row)
    result.problem_rows = {state: sorted(rows) for state, rows in problems.items()}
    result.hidden_rows = sorted(plan.set_aside)
    return result


def problems_text(problems: Sequence[Problem]) -> str:
    """An invalid row's problems as the sheet's error cell says them."""
    return "; ".join(f"{p.column}: {p.message}" for p in problems)


def sheet_cells(plan: SheetPlan, records: Mapping[str, JobRecord]) -> dict[int, dict[str, str]]:
    """Output cells per sheet row: one line per job in each of the four columns.

    A row of several jobs (`9:16|1:1`, takes, several models) names each line's job,
    `9:16: completed`, `9:16, take 2: https://…`, `kling-3.0-pro-i2v: completed` (a sheet
    naming several models names the model on every line); a job with nothing to say in a
    column gets a blank line. A model the row is invalid for gets an `invalid` line of its
    own. A row with a job that has no record (the ledger could not be read) is left out:
    its cells keep what they said.
    """
    cells: dict[int, dict[str, str]] = {}
    by_row = plan.jobs_by_row()
    for row, jobs in by_row.items():
        if any(job.key not in records for job in jobs):
            continue
        lines: dict[str, list[str]] = {"request_id": [], "status": [], "video_url": [], "error": []}
        for job in jobs:
            record = records[job.key]
            named = f"{job.label}: " if job.label else ""
            for name, value in (
                ("request_id", record.request_id),
                ("status", sheet_status(record.state)),
                ("video_url", record.video_url),
                ("error", record.error),
            ):
                lines[name].append(named + value if value else "")
        _invalid_lines(lines, plan.invalid.get(row, []))
        cells[row] = {name: _join(values) for name, values in lines.items()}
    for row, problems in plan.invalid.items():
        if row in by_row:
            continue
        if plan.multi_model and all(p.model for p in problems):
            lines = {"request_id": [], "status": [], "video_url": [], "error": []}
            _invalid_lines(lines, problems)
            cells[row] = {name: _join(values) for name, values in lines.items()}
            continue
        message = problems_text(problems)
        cells[row] = {"request_id": "", "status": "invalid", "video_url": "", "error": message}
    return cells


def _invalid_lines(lines: dict[str, list[str]], problems: Sequence[Problem]) -> None:
    """One `invalid` line per model a row could not be run on."""
    for model, found in _by_model(problems).items():
        named = f"{model}: " if model else ""
        lines["request_id"].append("")
        lines["status"].append(named + "invalid")
        lines["video_url"].append("")
        lines["error"].append(named + problems_text(found))


def _by_model(problems: Sequence[Problem]) -> dict[str, list[Problem]]:
    """A row's problems grouped by the model they are for ("" for the whole row)."""
    grouped: dict[str, list[Problem]] = {}
    for problem in problems:
        grouped.setdefault(problem.model, []).append(problem)
    return grouped


def _join(values: list[str]) -> str:
    # a row with one job gets a plain value; several get one line each, blanks kept for alignment
    if len(values) == 1:
        return values[0]
    return "\n".join(values) if any(values) else ""


def results_rows(
    plan: SheetPlan, records: Mapping[str, JobRecord], *, source: str = ""
) -> list[list[Any]]:
    """The per-job table, one row per job (and per invalid row), in sheet order.

    `source` names the worksheet the jobs were read from (a CSV: its file name).
    """
    rows: list[tuple[int, list[Any]]] = []
    where = source or None
    for job in plan.jobs:
        record = records.get(job.key)
        rows.append(
            (
                job.row,
                [
                    where,
                    job.row,
                    job.model_id,
                    job.key,
                    job.label or None,
                    job.take,
                    record.request_id if record else None,
                    sheet_status(record.state if record else "pending"),
                    record.video_url if record else None,
                    record.error if record else None,
                    job.estimated_cost,
                    record.cost if record else None,
                    record.download_path if record else None,
                    json.dumps(job.payload, ensure_ascii=False, sort_keys=True),
                ],
            )
        )
    for row, problems in plan.invalid.items():
        for model, found in _by_model(problems).items():
            values: dict[str, Any] = {
                SOURCE_HEADER: where,
                "row": row,
                "model": model or None,
                "status": "invalid",
                "error": problems_text(found),
            }
            rows.append((row, [values.get(name) for name in RESULT_HEADERS]))
    rows.sort(key=lambda item: item[0])
    return [values for _, values in rows]


# --------------------------------------------------------------------------- check output

PROBLEM_LINES = 20  # distinct problems shown by `check`; the rest are counted
ROWS_SHOWN = 3  # rows named for a problem repeated on many rows


def problem_lines(problems: Sequence[Problem], *, limit: int = PROBLEM_LINES) -> list[str]:
    """Problems as lines, one per distinct (column, model, message) with its count and rows."""
    groups: dict[tuple[str, str, str], list[Problem]] = {}
    for problem in problems:
        groups.setdefault((problem.column, problem.model, problem.message), []).append(problem)
    lines = []
    for (column, model, message), group in list(groups.items())[:limit]:
        if len(group) == 1:
            lines.append(str(group[0]))
            continue
        rows = [p.row for p in group]
        shown = ", ".join(str(r) for r in rows[:ROWS_SHOWN])
        more = f" … ({len(rows):,} rows)" if len(rows) > ROWS_SHOWN else ""
        where = f"column '{column}'" + (f", model {model}" if model else "")
        lines.append(f"{where}: {message}: rows {shown}{more}")
    if len(groups) > limit:
        rest = list(groups.values())[limit:]
        rows_left = len({p.row for group in rest for p in group})
        lines.append(f"… and {len(rest):,} more kinds of problem on {rows_left:,} row(s)")
    return lines


def reading_lines(table: Any, plan: SheetPlan) -> list[str]:
    """How `check` read the sheet: where the header is, the encoding, the headers mapped."""
    where = f"worksheet '{table.sheet_name}', " if table.sheet_name else ""
    lines = [f"read: {where}header row {table.header_row}" + _encoding_text(table)]
    columns = plan.columns
    if columns.mapped:
        lines.append("headers read as inputs: " + ", ".join(map(str, columns.mapped)))
    if columns.ignored:
        lines.append("ignored (the team's own): " + ", ".join(repr(h) for h in columns.ignored))
    if columns.unsure:
        lines.append(f"error: headers need your word: {columns.unsure_text()}")
    lines.append(output_columns_text(table))
    lines += totals_lines(table)
    if table.hidden_rows:
        lines.append(hidden_text(table, plan))
        lines.append("hidden rows: " + rows_text(sorted(table.hidden_rows), limit=10))
    from batchgen import officelock, paths

    lock = officelock.find_lock(table.path)
    if lock is not None:
        lines.append("warning: " + lock.message(table.path, paths.shown(table.path)))
    return lines


def totals_lines(table: Any) -> list[str]:
    """One line per Excel Table whose totals row(s) are left out: `row 21 is the totals row of
    table 'Table1': not a job`."""
    by_table: dict[str, list[int]] = {}
    for row, name in sorted(table.totals_rows.items()):
        by_table.setdefault(name, []).append(row)
    lines = []
    for name, rows in by_table.items():
        if not name:  # outside any Table: say why it was taken for one
            lines.append(
                f"{_rows_are(rows)} only aggregate formulas (SUM, SUBTOTAL, …) and labels "
                "such as 'Total': a totals row, not a job"
            )
        elif len(rows) == 1:
            lines.append(f"row {rows[0]} is the totals row of table '{name}': not a job")
        else:
            lines.append(f"rows {rows_text(rows)} are the totals rows of table '{name}': not jobs")
    return lines


def _rows_are(rows: Sequence[int]) -> str:
    """`row 9 holds` or `rows 9, 14 hold`."""
    return f"row {rows[0]} holds" if len(rows) == 1 else f"rows {rows_text(rows)} hold"


def hidden_text(table: Any, plan: SheetPlan) -> str:
    """How many rows are hidden, how, and what happens to them: `12 rows hidden (9 by the
    filter on column 'Status', 3 by hand): not run; --include-hidden runs them`."""
    hidden: dict[int, str] = table.hidden_rows
    ways = Counter(hidden[row] for row in sorted(hidden))
    said = f"{len(hidden):,} row{'s' if len(hidden) != 1 else ''} hidden (" + ", ".join(
        f"{count:,} {how}" for how, count in ways.items()
    )
    if not plan.hidden:
        return said + "): run, as --include-hidden asks"
    said += "): not run, their cells left as they are"
    followed = len({job.row for job in plan.jobs if job.row in plan.hidden})
    if followed:
        said += f" ({followed:,} submitted before being hidden: followed and written)"
    return said + "; --include-hidden runs them"


def rows_text(rows: Sequence[int], *, limit: int = ROWS_SHOWN) -> str:
    """Row numbers, the first `limit` of them: `2, 5, 9 … (2,500 rows)`."""
    shown = ", ".join(str(r) for r in rows[:limit])
    return shown + (f" … ({len(rows):,} rows)" if len(rows) > limit else "")


def output_columns_text(table: Any) -> str:
    """Which columns a run writes its results into, and which of the team's it leaves alone."""
    from batchgen import sheets

    plan = sheets.output_plan(table)
    if plan.refused:
        return "results cannot be written: " + "; ".join(plan.refused)
    letter: Callable[[int], str] | None = None
    if table.kind == "xlsx":
        from batchgen._xlsx import col_letter

        letter = col_letter
    names = []
    for index in plan.positions.values():
        header = plan.new_headers.get(index) or table.headers[index]
        where = ["new"] if index in plan.new_headers else []
        if letter is not None:
            where.append(f"column {letter(index)}")
        names.append(f"'{header}'" + (f" ({', '.join(where)})" if where else ""))
    text = "results go to " + ", ".join(names)
    if plan.skipped:
        text += "; passed over " + ", ".join(plan.skipped)
    if plan.kept:
        kept = ", ".join(f"'{h}'" for h in plan.kept)
        text += f"; {kept} hold(s) what the team typed and are left as they are"
    return text


def _encoding_text(table: Any) -> str:
    doc = getattr(table, "_csv", None)
    if doc is None:
        return ""
    bom = " with BOM" if doc.bom else ""
    return f"; encoding {doc.encoding}{bom} ({doc.found_by})"


def sheet_reading(table: Any, plan: SheetPlan) -> dict[str, Any]:
    """The same as reading_lines, for `check --json`."""
    doc = getattr(table, "_csv", None)
    return {
        "worksheet": table.sheet_name,
        "header_row": table.header_row,
        "encoding": doc.encoding if doc is not None else None,
        "headers_mapped": {m.header: m.field for m in plan.columns.mapped},
        "headers_unsure": [
            {"header": m.header, "resembles": m.field, "why": m.how} for m in plan.columns.unsure
        ],
        "headers_ignored": plan.columns.ignored,
        "totals_rows": {str(row): name or None for row, name in sorted(table.totals_rows.items())},
        "hidden_rows": {str(row): how for row, how in sorted(table.hidden_rows.items())},
        "hidden_rows_run": bool(table.hidden_rows) and not plan.hidden,
    }
