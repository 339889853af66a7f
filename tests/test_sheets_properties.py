"""Property tests: write a sheet, write_back output cells, reload; nothing else may change."""

from __future__ import annotations

import csv
import re
import tempfile
from collections.abc import Callable
from pathlib import Path

import openpyxl
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from batchgen._csvfile import neutralise
from batchgen._text import strip_illegal
from batchgen.sheets import OUTPUT_COLUMNS, load_sheet, output_plan, write_back

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# Excel/calamine decode _xHHHH_ in strings and openpyxl does not escape it, so user text
# written by openpyxl avoids it; batchgen's own output cells do not have to.
_X_ESCAPE = re.compile(r"_x[0-9A-Fa-f]{4}_")
_XML_CONTROL = "".join(chr(c) for c in range(32) if chr(c) not in "\t\n")

# Output text: anything at all, including control characters and formula look-alikes.
output_text = st.one_of(
    st.text(max_size=30),
    st.sampled_from(["=cmd|' /C calc'!A0", "+1", "-2", "@SUM(A1)", "_x0041_", " ", "", '"']),
    st.text(alphabet="=+-@\"',;\t\r\n _x0041", max_size=12),
)


def user_text(*, xlsx: bool, codec: str = "utf-8") -> st.SearchStrategy[str]:
    """Cell text a user could have typed (and the fixture writer can store faithfully)."""
    # Control characters other than tab and line breaks cannot be typed into a cell; a CSV
    # made mostly of them is refused as binary (an image renamed .csv), as it should be.
    excluded = _XML_CONTROL + "\r" if xlsx else _XML_CONTROL.replace("\r", "")
    chars = st.characters(codec=codec, exclude_characters=excluded)
    pool = st.one_of(
        st.text(alphabet=chars, max_size=20),
        st.text(alphabet="=+-@\"',; \t\nабвعربي🎬éü€", max_size=10).filter(
            lambda s: s.encode(codec, "replace").decode(codec) == s
        ),
    )
    if not xlsx:
        return pool
    # openpyxl writes whitespace-only text without xml:space="preserve", so readers trim it.
    return pool.filter(lambda s: not _X_ESCAPE.search(s) and (s.strip() or not s))


def scalar(*, xlsx: bool, codec: str = "utf-8") -> st.SearchStrategy[object]:
    """A user cell: text, number, boolean or empty."""
    return st.one_of(
        st.none(),
        user_text(xlsx=xlsx, codec=codec),
        st.integers(min_value=-(2**53), max_value=2**53),
        st.floats(allow_nan=False, allow_infinity=False),
        st.booleans(),
    )


@st.composite
def sheets(
    draw: st.DrawFn, *, xlsx: bool, codec: str = "utf-8"
) -> tuple[list[str], list[list[object]]]:
    """Headers and rows; the first column is always a non-blank id, rows may be all-blank."""
    headers = draw(
        st.sampled_from([["id", "prompt", "n", "flag"], ["id", " Status ", "prompt", "n"]])
    )
    rows: list[list[object]] = []
    for i in range(draw(st.integers(min_value=1, max_value=6))):
        if draw(st.booleans()) and draw(st.booleans()):
            rows.append([None] * len(headers))  # a blank row between data rows
        cells = [draw(scalar(xlsx=xlsx, codec=codec)) for _ in headers[1:]]
        rows.append([f"r{i}", *cells])
    return headers, rows


def expected_cell(value: object, *, xlsx: bool, codec: str = "utf-8") -> object:
    """What load_sheet should give back for a user cell."""
    if value is None or value == "":
        return None
    if xlsx:
        if isinstance(value, float):
            return float(f"{value:.16g}")  # openpyxl (the fixture writer) keeps 16 digits
        return value
    if isinstance(value, str):
        return value
    return str(value)


def expected_output(text: str, codec: str = "utf-8") -> str | None:
    """What load_sheet should give back for an output cell batchgen wrote."""
    text = strip_illegal(text)
    if codec == "cp1252":
        text = text.encode("cp1252", "replace").decode("cp1252")
    return text or None


def same(a: object, b: object) -> bool:
    """Equal, and a bool stays a bool (True == 1 otherwise)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return a == b


@st.composite
def output_cells(draw: st.DrawFn, rows: int) -> dict[int, dict[str, str]]:
    """Output cells for some of `rows` data-row indexes (0-based, mapped later)."""
    chosen = draw(st.lists(st.integers(0, rows - 1), unique=True, max_size=rows))
    return {
        i: draw(st.dictionaries(st.sampled_from(OUTPUT_COLUMNS), output_text, min_size=1))
        for i in chosen
    }


def check_round_trip(
    path: Path,
    headers: list[str],
    rows: list[list[object]],
    draw_cells: Callable[[int], dict[int, dict[str, str]]],
    *,
    xlsx: bool,
    codec: str = "utf-8",
) -> None:
    """load → write_back → load: user cells unchanged, output cells exact."""
    # arbitrary characters of a legacy code page cannot be told apart by detection: say it
    encoding = codec if codec != "utf-8" else None
    table = load_sheet(path, encoding=encoding)
    assert table.headers == headers
    data_rows = [r for r in rows if r[0] is not None]
    assert len(table.rows) == len(data_rows)
    cells_by_index = draw_cells(len(data_rows))
    cells = {table.rows[i].number: c for i, c in cells_by_index.items()}
    write_back(table, cells)
    first = path.read_bytes()
    write_back(table, cells)
    assert path.read_bytes() == first  # writes are a pure function of the loaded table

    again = load_sheet(path, encoding=encoding)
    assert again.headers[: len(headers)] == headers
    # a user's own Status column is taken over only when it holds what batchgen writes
    out_cols = output_plan(table).positions
    taken = {index: name for name, index in out_cols.items() if index < len(headers)}
    assert [r.number for r in again.rows] == [r.number for r in table.rows]
    for before, after, user in zip(table.rows, again.rows, data_rows, strict=True):
        written = cells.get(before.number, {})
        for c, value in enumerate(user):
            if taken.get(c) in written:
                continue
            want = expected_cell(value, xlsx=xlsx, codec=codec)
            assert same(after.values[c], want), (c, after.values[c], want)
        for name, text in written.items():
            got = after.values[out_cols[name]]
            want = expected_output(text, codec)
            if not xlsx and want is not None:
                want = neutralise(want)  # never a formula in a CSV; xlsx cells are inline text
            assert got == want, (name, got, text)


@SETTINGS
@given(data=st.data(), sheet=sheets(xlsx=True))
def test_xlsx_round_trip(data: st.DataObject, sheet: tuple[list[str], list[list[object]]]) -> None:
    headers, rows = sheet
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ads.xlsx"
        wb = openpyxl.Workbook()
        ws = wb.active
        for c, h in enumerate(headers, start=1):
            ws.cell(row=1, column=c, value=h)
        for r, row in enumerate(rows, start=2):
            for c, value in enumerate(row, start=1):
                if value is not None:
                    cell = ws.cell(row=r, column=c, value=value)
                    if isinstance(value, str):
                        cell.data_type = "s"  # keep '=...' as text, as a user would type '=...
        wb.save(path)
        check_round_trip(path, headers, rows, lambda n: data.draw(output_cells(n)), xlsx=True)


@st.composite
def csv_dialects(draw: st.DrawFn) -> dict[str, object]:
    """A CSV dialect and encoding as spreadsheet programs write them."""
    return {
        "delimiter": draw(st.sampled_from([",", ";", "\t"])),
        "lineterminator": draw(st.sampled_from(["\r\n", "\n"])),
        "quoting": draw(st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL])),
        "encoding": draw(st.sampled_from(["utf-8", "utf-8-sig", "cp1252"])),
    }


@SETTINGS
@given(data=st.data(), dialect=csv_dialects())
def test_csv_round_trip(data: st.DataObject, dialect: dict[str, object]) -> None:
    encoding = str(dialect.pop("encoding"))
    codec = "cp1252" if encoding == "cp1252" else "utf-8"
    headers, rows = data.draw(sheets(xlsx=False, codec=codec))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ads.csv"
        with path.open("w", newline="", encoding=encoding) as f:
            writer = csv.writer(f, **dialect)  # type: ignore[arg-type]
            writer.writerow(headers)
            for row in rows:
                if row[0] is None:
                    writer.writerow([])
                else:
                    writer.writerow(["" if v is None else v for v in row])
        raw_before = path.read_bytes()
        # Python's writer leaves a field with a CR unquoted under a LF terminator: not a CSV
        # any spreadsheet program writes (RFC 4180 quotes line breaks), and ambiguous (a CR
        # ending the last field reads as a CRLF line end)
        lone_cr = dialect["quoting"] == csv.QUOTE_MINIMAL and dialect["lineterminator"] == "\n"
        assume(not (lone_cr and any(isinstance(v, str) and "\r" in v for r in rows for v in r)))
        try:
            raw_before.decode("utf-8")
            codec = "utf-8"  # plain ASCII is read (and extended) as UTF-8
        except UnicodeDecodeError:
            codec = "cp1252"
        # cp1252 text whose bytes are also valid UTF-8 ("Â" then "Œ" is U+008C in UTF-8) is
        # read as UTF-8, as by any reader without a BOM: those bytes cannot tell
        assume(encoding != "cp1252" or codec == "cp1252" or raw_before.isascii())
        check_round_trip(
            path,
            headers,
            rows,
            lambda n: data.draw(output_cells(n)),
            xlsx=False,
            codec=codec,
        )
        raw_after = path.read_bytes()
        # Same encoding marker and line endings as the original.
        assert raw_after.startswith(b"\xef\xbb\xbf") == raw_before.startswith(b"\xef\xbb\xbf")
        term = str(dialect["lineterminator"]).encode()
        assert raw_after.split(term)[0].startswith(raw_before.split(term)[0])
