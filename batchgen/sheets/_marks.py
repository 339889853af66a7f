"""Rows of an .xlsx that are not plain data rows: totals rows (never jobs) and hidden rows."""

from __future__ import annotations

from typing import TYPE_CHECKING

from batchgen.sheets._table import Row

if TYPE_CHECKING:
    from batchgen import _xlsx

# what the label cell of a hand-made totals row says (letter case and a trailing colon aside)
TOTAL_LABELS = frozenset(
    {
        "total",
        "totals",
        "grand total",
        "subtotal",
        "sub-total",
        "sum",
        "gesamt",
        "summe",
        "total général",
        "totale",
        "итого",
        "всего",
        "合計",
        "总计",
    }
)


def marked_rows(
    book: _xlsx.Book,
    sheet_part: str,
    sheet: _xlsx.SheetXml,
    header_row: int,
    headers: list[str],
    rows: list[Row],
) -> tuple[list[Row], dict[int, str], dict[int, str]]:
    """(the data rows less the totals rows, totals rows → their Table's name, or "" for a
    totals row outside a Table, hidden rows → how they are hidden)."""
    from batchgen import _xlsx

    marks = _xlsx.row_marks(book, sheet_part, sheet)
    totals = {n: t for n, t in marks.totals.items() if n > header_row}
    for row in rows:
        found = marks.aggregates.get(row.number)
        if found is not None and row.number not in totals and _only_totals(row, *found):
            totals[row.number] = ""
    if totals:
        rows = [row for row in rows if row.number not in totals]
    hidden = {
        row.number: _hidden_how(marks.hidden[row.number], row, headers)
        for row in (rows if marks.hidden else ())
        if row.number in marks.hidden
    }
    return rows, totals, hidden


def _only_totals(row: Row, aggregates: frozenset[int], others: frozenset[int]) -> bool:
    """A row outside any Table is a totals row when its every non-empty cell is an aggregate
    formula (SUM, SUBTOTAL, COUNT…) or a label such as 'Total', with one formula at least.
    Any other formula (a prompt built by CONCAT) or value makes it a row like any other."""
    if others or not aggregates:
        return False
    for col, value in enumerate(row.values):
        if value is None or col in aggregates:
            continue
        if not isinstance(value, str) or _label(value) not in TOTAL_LABELS:
            return False
    return True


def _label(text: str) -> str:
    """A label cell as compared: no letter case, surrounding spaces or trailing colon."""
    return text.strip().rstrip(":").strip().casefold()


def _hidden_how(how: str | _xlsx.Filter, row: Row, headers: list[str]) -> str:
    """How a row is hidden, in words: by hand, in a collapsed group, or by a filter (a row
    the filter would show was hidden by hand)."""
    from batchgen import _xlsx

    if isinstance(how, str):
        return how
    failing = [col for col, shown in how.criteria if not _shows(shown, row, col)]
    if not failing:
        return _xlsx.HIDDEN_BY_HAND
    names = [
        f"'{headers[c] if c < len(headers) and headers[c] else _xlsx.col_letter(c)}'"
        for c in failing
    ]
    return f"by the filter on column{'s' if len(names) > 1 else ''} {', '.join(names)}"


def _shows(shown: frozenset[str] | None, row: Row, col: int) -> bool:
    """Whether a filter's list of values shows the row's cell (unknown criteria: no)."""
    if shown is None:
        return False
    value = row.values[col] if col < len(row.values) else None
    if value is None:
        text = ""
    elif isinstance(value, float) and value.is_integer():
        text = str(int(value))
    else:
        text = str(value)
    return text.strip().casefold() in shown
