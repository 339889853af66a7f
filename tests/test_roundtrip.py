"""Property: arbitrary user cells survive load → ledger → write-back, in csv and xlsx."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batchgen import sheets
from batchgen.config import build_config
from batchgen.resume import resume
from batchgen.runner import load_batch, open_ledger, write_sheet
from tests.helpers import IMAGE, write_csv, write_xlsx

# Text a marketer might type: any unicode but surrogates and the NUL/controls no sheet can hold.
TEXT = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\x00"),
    max_size=40,
).filter(lambda s: s.strip() == s and s != "")
CELL = st.one_of(
    TEXT,
    st.sampled_from(
        ["=1+2", "+cmd", "-1", "@SUM(A1)", "0012", "TRUE", "1e5", "'quoted", 'a "b" c']
    ),
    st.integers(min_value=-(10**9), max_value=10**9),
    st.floats(min_value=-1e6, max_value=1e6, allow_nan=False).map(lambda f: round(f, 3)),
    st.booleans(),
)
ROWS = st.lists(st.lists(CELL, min_size=2, max_size=2), min_size=1, max_size=6)


def _sheet_rows(values: list[list[Any]], prompts: list[str]) -> list[dict[str, Any]]:
    return [
        {"prompt": prompt, "first_frame_image_url": IMAGE, "notes": a, "owner": b}
        for prompt, (a, b) in zip(prompts, values, strict=True)
    ]


def _user_cells(path: Path) -> list[tuple[Any, Any]]:
    table = sheets.load_sheet(path)
    index = [table.headers.index("notes"), table.headers.index("owner")]
    return [tuple(row.values[i] for i in index) for row in table.rows]


def _same(expected: Any, got: Any, kind: str) -> bool:
    if kind == "csv":
        return str(expected) == got
    if isinstance(expected, str) and expected.startswith("="):
        return got is None  # openpyxl saved the user's formula without a cached value
    if isinstance(expected, float) and isinstance(got, float):
        return math.isclose(expected, got)
    if isinstance(expected, bool) or isinstance(got, bool):
        return expected == got and type(expected) is type(got)
    return expected == got


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values=ROWS, kind=st.sampled_from(["csv", "xlsx"]))
def test_user_cells_survive_the_ledger_and_write_back(values: list[list[Any]], kind: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        prompts = [f"Ad {i}: a shoe on a rock" for i in range(len(values))]
        rows = _sheet_rows(values, prompts)
        if kind == "csv":
            sheet = write_csv(folder / "ads.csv", [{k: str(v) for k, v in r.items()} for r in rows])
        else:
            sheet = write_xlsx(folder / "ads.xlsx", rows)
        before = _user_cells(sheet)
        config = build_config(sheet)
        batch = load_batch(config)
        ledger = open_ledger(config)
        try:
            resume(batch.plan, ledger, config, scope=batch.scope)
            reread = ledger.get_jobs()
        finally:
            ledger.close()
        write_sheet(batch, reread)

        after = _user_cells(sheet)
        assert after == before
        for (a, b), original in zip(after, values, strict=True):
            assert _same(original[0], a, kind) and _same(original[1], b, kind), (original, a, b)
        table = sheets.load_sheet(sheet)
        status = table.headers.index("status")
        assert [row.values[status] for row in table.rows] == ["pending"] * len(values)
