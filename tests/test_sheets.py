"""Tests for batchgen.sheets: real .csv and .xlsx files in tmp_path, no mocks."""

from __future__ import annotations

import codecs
import datetime as dt
import os
import random
import re
import stat
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import openpyxl
import pytest
from openpyxl.styles import Font
from openpyxl.workbook.defined_name import DefinedName

from batchgen._csvfile import restore
from batchgen.errors import SheetError
from batchgen.paths import shown
from batchgen.sheets import (
    OUTPUT_COLUMNS,
    RESULTS_SHEET,
    Results,
    Table,
    load_sheet,
    results_path,
    write_back,
)

MAIN_NS = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
INJECTIONS = ["=cmd|' /C calc'!A0", "+1", "@SUM(A1:A2)", "-2", '=HYPERLINK("http://x")', "0042"]


# --------------------------------------------------------------------------- helpers


def make_xlsx(path: Path, rows: list[list[object]], title: str = "Ads") -> openpyxl.Workbook:
    """Write rows (None = empty cell) to the first sheet with openpyxl and return the workbook."""
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = title
    for r, row in enumerate(rows, start=1):
        for c, value in enumerate(row, start=1):
            if value is not None:
                ws.cell(row=r, column=c, value=value)
    wb.save(path)
    return wb


def sheet_part(path: Path, part: str = "xl/worksheets/sheet1.xml") -> str:
    """The XML text of one part of an .xlsx."""
    with zipfile.ZipFile(path) as zf:
        return zf.read(part).decode("utf-8")


def rewrite_part(path: Path, part: str, edit: Callable[[str], str]) -> None:
    """Apply `edit` (str → str) to one part of an .xlsx, copying the rest."""
    with zipfile.ZipFile(path) as zf:
        entries = [(info, zf.read(info)) for info in zf.infolist()]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for info, data in entries:
            if info.filename == part:
                data = edit(data.decode("utf-8")).encode("utf-8")
            zf.writestr(info, data)


def open_strict(path: Path) -> openpyxl.Workbook:
    """Open with openpyxl, failing on any warning (openpyxl warns about broken parts)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return openpyxl.load_workbook(path)


STYLES = (
    f'<styleSheet xmlns="{MAIN_NS}">'
    '<fonts count="2"><font><sz val="11"/><name val="Calibri"/></font>'
    '<font><b/><sz val="11"/><name val="Calibri"/></font></fonts>'
    '<fills count="2"><fill><patternFill patternType="none"/></fill>'
    '<fill><patternFill patternType="gray125"/></fill></fills>'
    '<borders count="1"><border><left/><right/><top/><bottom/><diagonal/></border></borders>'
    '<cellStyleXfs count="1"><xf numFmtId="0" fontId="0" fillId="0" borderId="0"/></cellStyleXfs>'
    '<cellXfs count="2"><xf numFmtId="0" fontId="0" fillId="0" borderId="0" xfId="0"/>'
    '<xf numFmtId="0" fontId="1" fillId="0" borderId="0" xfId="0" applyFont="1"/></cellXfs>'
    '<cellStyles count="1"><cellStyle name="Normal" xfId="0" builtinId="0"/></cellStyles>'
    "</styleSheet>"
)


def raw_xlsx(
    path: Path,
    sheet_xml: str,
    *,
    shared: list[str] | None = None,
    calc_chain: str | None = None,
) -> None:
    """A minimal hand-made package whose only worksheet 'Data' lives in worksheets/data.xml."""
    ct = "application/vnd.openxmlformats-officedocument.spreadsheetml"
    overrides = [
        ("/xl/workbook.xml", f"{ct}.sheet.main+xml"),
        ("/xl/worksheets/data.xml", f"{ct}.worksheet+xml"),
        ("/xl/styles.xml", f"{ct}.styles+xml"),
    ]
    rels = [
        ("rId1", "worksheet", "worksheets/data.xml"),
        ("rId2", "styles", "styles.xml"),
    ]
    files = {"xl/worksheets/data.xml": sheet_xml, "xl/styles.xml": STYLES}
    if shared is not None:
        overrides.append(("/xl/sharedStrings.xml", f"{ct}.sharedStrings+xml"))
        rels.append(("rId3", "sharedStrings", "sharedStrings.xml"))
        sis = "".join(f'<si><t xml:space="preserve">{s}</t></si>' for s in shared)
        files["xl/sharedStrings.xml"] = (
            f'<sst xmlns="{MAIN_NS}" count="{len(shared)}" uniqueCount="{len(shared)}">{sis}</sst>'
        )
    if calc_chain is not None:
        overrides.append(("/xl/calcChain.xml", f"{ct}.calcChain+xml"))
        rels.append(("rId4", "calcChain", "calcChain.xml"))
        files["xl/calcChain.xml"] = f'<calcChain xmlns="{MAIN_NS}">{calc_chain}</calcChain>'
    rel_ns = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
    files["[Content_Types].xml"] = (
        '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
        '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.'
        'relationships+xml"/><Default Extension="xml" ContentType="application/xml"/>'
        + "".join(f'<Override PartName="{p}" ContentType="{c}"/>' for p, c in overrides)
        + "</Types>"
    )
    files["_rels/.rels"] = (
        '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
        f'<Relationship Id="rId1" Type="{rel_ns}/officeDocument" Target="xl/workbook.xml"/>'
        "</Relationships>"
    )
    files["xl/workbook.xml"] = (
        f'<workbook xmlns="{MAIN_NS}" xmlns:r="{rel_ns}"><sheets>'
        '<sheet name="Data" sheetId="1" r:id="rId1"/></sheets></workbook>'
    )
    files["xl/_rels/workbook.xml.rels"] = (
        '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
        + "".join(f'<Relationship Id="{i}" Type="{rel_ns}/{t}" Target="{g}"/>' for i, t, g in rels)
        + "</Relationships>"
    )
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name in ["[Content_Types].xml", *[n for n in files if n != "[Content_Types].xml"]]:
            zf.writestr(name, files[name])


def values_of(table: Table) -> dict[int, tuple[object, ...]]:
    """Row number → values, for compact assertions."""
    return {row.number: row.values for row in table.rows}


def col_of(table: Table, name: str) -> int:
    """Index of an output column in the (reloaded) headers, case/space-insensitive."""
    return [h.strip().lower() for h in table.headers].index(name)


# --------------------------------------------------------------------------- CSV dialects


def test_csv_semicolon_cp1252_keeps_encoding_and_bytes(tmp_path: Path) -> None:
    path = tmp_path / "ads.csv"
    original = (
        "prompt;image_url\r\ncafé crème, très bon;http://a/1.png\r\nnaïve €5;http://a/2.png\r\n"
    )
    path.write_bytes(original.encode("cp1252"))
    table = load_sheet(path)
    assert table.kind == "csv"
    assert table.headers == ["prompt", "image_url"]
    assert values_of(table) == {
        2: ("café crème, très bon", "http://a/1.png"),
        3: ("naïve €5", "http://a/2.png"),
    }
    write_back(table, {2: {"status": "ok", "error": "boom 🎬 – done"}})
    data = path.read_bytes()
    text = data.decode("cp1252")  # still cp1252, no BOM
    assert text == (
        "prompt;image_url;request_id;status;video_url;error\r\n"
        "café crème, très bon;http://a/1.png;;ok;;boom ? – done\r\n"
        "naïve €5;http://a/2.png\r\n"
    )


def test_csv_tab_utf8_bom_crlf(tmp_path: Path) -> None:
    path = tmp_path / "ads.csv"
    path.write_bytes(codecs.BOM_UTF8 + "prompt\tn\r\nкот\t1\r\nقطة\t2\r\n".encode())
    table = load_sheet(path)
    assert table.headers == ["prompt", "n"]
    assert values_of(table) == {2: ("кот", "1"), 3: ("قطة", "2")}
    write_back(table, {3: {"request_id": "r-3", "video_url": "https://v/3.mp4"}})
    assert (
        path.read_bytes()
        == codecs.BOM_UTF8
        + (
            "prompt\tn\trequest_id\tstatus\tvideo_url\terror\r\n"
            "кот\t1\r\n"
            "قطة\t2\tr-3\t\thttps://v/3.mp4\r\n"
        ).encode()
    )


def test_csv_quote_all_style_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "ads.csv"
    path.write_text('"prompt","image"\n"a","b"\n"c","d"\n', encoding="utf-8")
    table = load_sheet(path)
    write_back(table, {2: {"status": "done"}})
    assert path.read_text(encoding="utf-8") == (
        '"prompt","image","request_id","status","video_url","error"\n"a","b","","done"\n"c","d"\n'
    )


def test_csv_embedded_newlines_quotes_delimiters_and_scripts_survive(tmp_path: Path) -> None:
    path = tmp_path / "ads.csv"
    records = [
        "prompt,image_url,notes\n",
        '"line one\nline two, with comma",http://a,"he said ""hi"""\n',
        "\n",  # a blank record keeps its number
        'Привет мир,"مرحبا, بالعالم",🎬🍿 emoji\n',
        '"x ""quoted"" ; tab\there",b,c\n',
    ]
    original = "".join(records).encode("utf-8")
    path.write_bytes(original)
    table = load_sheet(path)
    assert values_of(table) == {
        2: ("line one\nline two, with comma", "http://a", 'he said "hi"'),
        4: ("Привет мир", "مرحبا, بالعالم", "🎬🍿 emoji"),
        5: ('x "quoted" ; tab\there', "b", "c"),
    }
    write_back(table, {2: {"error": 'bad "thing", again\nsecond line'}, 4: {"status": "ok"}})
    data = path.read_bytes().decode("utf-8")
    # Each user record is kept byte for byte; output fields are appended after it.
    assert data.startswith("prompt,image_url,notes,request_id,status,video_url,error\n")
    assert records[1][:-1] + ',,,,"bad ""thing"", again\nsecond line"\n' in data
    assert records[3][:-1] + ",,ok\n" in data
    assert records[4] in data
    again = load_sheet(path)
    assert values_of(again)[2][:3] == values_of(table)[2]
    assert values_of(again)[2][col_of(again, "error")] == 'bad "thing", again\nsecond line'
    assert values_of(again)[4][col_of(again, "status")] == "ok"


def test_csv_without_trailing_newline_stays_so(tmp_path: Path) -> None:
    path = tmp_path / "ads.csv"
    path.write_bytes(b"prompt\na\nb")
    table = load_sheet(path)
    write_back(table, {3: {"status": "ok"}})
    assert path.read_bytes() == b"prompt,request_id,status,video_url,error\na\nb,,ok"


def test_csv_duplicate_headers_and_short_rows(tmp_path: Path) -> None:
    path = tmp_path / "ads.csv"
    path.write_bytes(b"a,a,b,\nx\ny,1,2,\n")
    table = load_sheet(path)
    # The trailing empty header is not a used column (it is filled); duplicates are kept.
    assert table.headers == ["a", "a", "b"]
    assert values_of(table) == {2: ("x", None, None), 3: ("y", "1", "2")}
    write_back(table, {2: {"request_id": "r2"}})
    assert path.read_bytes() == b"a,a,b,request_id,status,video_url,error\nx,,,r2\ny,1,2,\n"


def test_csv_leading_blank_lines_and_blank_rows_keep_numbers(tmp_path: Path) -> None:
    path = tmp_path / "ads.csv"
    path.write_bytes(b"\n ,\nprompt,n\n\na,1\n,\nb,2\n")
    table = load_sheet(path)
    assert table.header_row == 3
    assert [r.number for r in table.rows] == [5, 7]
    write_back(table, {7: {"status": "ok"}})
    assert path.read_bytes() == (
        b"\n ,\nprompt,n,request_id,status,video_url,error\n\na,1\n,\nb,2,,ok\n"
    )


def test_csv_unlabeled_data_column_is_not_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "ads.csv"
    path.write_bytes(b"prompt\na,extra\n")
    table = load_sheet(path)
    assert table.headers == ["prompt", ""]
    write_back(table, {2: {"request_id": "r"}})
    assert path.read_bytes() == b"prompt,,request_id,status,video_url,error\na,extra,r\n"


def test_whitespace_only_cells_past_the_header_are_not_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "ads.csv"
    path.write_bytes(b"prompt\na, \n")
    table = load_sheet(path)
    assert table.headers == ["prompt"] and table.rows[0].values == ("a",)
    write_back(table, {2: {"request_id": "r"}})
    assert path.read_bytes() == b"prompt,,request_id,status,video_url,error\na, ,r\n"


def test_csv_output_columns_are_reused_ignoring_case_and_spaces(tmp_path: Path) -> None:
    path = tmp_path / "ads.csv"
    # columns holding what batchgen writes there (status words, request ids) are its own
    uuid = b"0f8fad5b-d9cb-469f-a165-70867728950e"
    path.write_bytes(
        b"prompt, Status ,REQUEST_ID,other\na,pending,,o\nb,completed," + uuid + b",p\n"
    )
    table = load_sheet(path)
    write_back(table, {2: {"status": "queued", "request_id": "r1", "error": "e"}})
    assert path.read_bytes() == (
        b"prompt, Status ,REQUEST_ID,other,video_url,error\na,queued,r1,o,,e\nb,completed,"
        + uuid
        + b",p\n"
    )


def test_csv_values_needing_quotes_and_injections_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "ads.csv"
    path.write_bytes(b"prompt\na\nb\nc\nd\ne\nf\n")
    table = load_sheet(path)
    cells = {n: {"error": v} for n, v in zip(range(2, 8), INJECTIONS, strict=True)}
    cells[2]["status"] = "  padded  "
    write_back(table, cells)
    again = load_sheet(path)
    err = col_of(again, "error")
    # a value that would open as a formula is stored behind a single quote (OWASP), and
    # read back as batchgen wrote it
    shown = [r.values[err] for r in again.rows]
    assert shown == [v if v == "0042" else "'" + v for v in INJECTIONS]
    assert [restore(str(v)) for v in shown] == INJECTIONS
    assert again.rows[0].values[col_of(again, "status")] == "  padded  "


def test_csv_results_file_uses_same_dialect(tmp_path: Path) -> None:
    path = tmp_path / "ads.csv"
    path.write_bytes(codecs.BOM_UTF8 + b"prompt;n\r\na;1\r\n")
    table = load_sheet(path)
    results = Results(headers=["row", "status", "cost"], rows=[[2, "ok; fine", 0.25], [3, None, 1]])
    written = write_back(table, {2: {"status": "ok"}}, results=results)
    assert written == path
    assert results_path(path) == tmp_path / "ads.results.csv"
    assert (tmp_path / "ads.results.csv").read_bytes() == codecs.BOM_UTF8 + (
        b'row;status;cost\r\n2;"ok; fine";0.25\r\n3;;1\r\n'
    )


def test_csv_output_leaves_input_untouched(tmp_path: Path) -> None:
    path = tmp_path / "ads.csv"
    path.write_bytes(b"prompt\na\n")
    before = path.read_bytes()
    out = tmp_path / "out" / "done.csv"
    out.parent.mkdir()
    table = load_sheet(path)
    written = write_back(table, {2: {"status": "ok"}}, results=Results(["a"], [["b"]]), output=out)
    assert written == out
    assert path.read_bytes() == before
    assert not (tmp_path / "ads.results.csv").exists()
    assert out.read_bytes() == b"prompt,request_id,status,video_url,error\na,,ok\n"
    assert (out.parent / "done.results.csv").read_bytes() == b"a\nb\n"


def test_csv_old_mac_line_endings_and_utf16(tmp_path: Path) -> None:
    mac = tmp_path / "mac.csv"
    mac.write_bytes(b'prompt,n\r"a\rb",1\rc,2\r')
    table = load_sheet(mac)
    assert values_of(table) == {2: ("a\rb", "1"), 3: ("c", "2")}
    write_back(table, {3: {"status": "ok"}})
    assert mac.read_bytes() == b'prompt,n,request_id,status,video_url,error\r"a\rb",1\rc,2,,ok\r'
    # Excel's "Unicode Text": UTF-16LE with a BOM, tab-delimited.
    u16 = tmp_path / "u16.csv"
    u16.write_bytes(codecs.BOM_UTF16_LE + "prompt\tn\r\nкот\t1\r\n".encode("utf-16-le"))
    table = load_sheet(u16)
    assert values_of(table) == {2: ("кот", "1")}
    write_back(table, {2: {"error": "🎬"}})
    assert u16.read_bytes() == codecs.BOM_UTF16_LE + (
        "prompt\tn\trequest_id\tstatus\tvideo_url\terror\r\nкот\t1\t\t\t\t🎬\r\n"
    ).encode("utf-16-le")


def test_text_that_looks_like_na_stays_text(tmp_path: Path) -> None:
    words = ["NULL", "NA", "nan", "None", "N/A", "null", "#N/A N/A"]
    xlsx = tmp_path / "na.xlsx"
    make_xlsx(xlsx, [["prompt"], *[[w] for w in words]])
    assert [r.values[0] for r in load_sheet(xlsx).rows] == words
    path = tmp_path / "na.csv"
    path.write_text("prompt\n" + "\n".join(words) + "\n", encoding="utf-8")
    assert [r.values[0] for r in load_sheet(path).rows] == words


def test_csv_repeated_writes_derive_from_loaded_content(tmp_path: Path) -> None:
    path = tmp_path / "ads.csv"
    path.write_bytes(b"prompt\na\nb\n")
    table = load_sheet(path)
    write_back(table, {2: {"status": "running"}})
    write_back(table, {2: {"status": "done"}, 3: {"status": "running"}})
    first = path.read_bytes()
    write_back(table, {2: {"status": "done"}, 3: {"status": "running"}})
    assert (
        path.read_bytes()
        == first
        == (b"prompt,request_id,status,video_url,error\na,,done\nb,,running\n")
    )


# --------------------------------------------------------------------------- XLSX


def test_xlsx_injection_strings_stay_text(tmp_path: Path) -> None:
    path = tmp_path / "ads.xlsx"
    make_xlsx(path, [["prompt"], *[[f"p{i}"] for i in range(len(INJECTIONS))]])
    table = load_sheet(path)
    write_back(table, {n + 2: {"status": v, "error": v} for n, v in enumerate(INJECTIONS)})
    ws = open_strict(path).active
    for n, v in enumerate(INJECTIONS):
        for col in ("C", "E"):  # status, error
            cell = ws[f"{col}{n + 2}"]
            assert (cell.value, cell.data_type) == (v, "s")
    again = load_sheet(path)
    assert [r.values[col_of(again, "status")] for r in again.rows] == INJECTIONS


def test_xlsx_text_edge_cases_read_back_exactly(tmp_path: Path) -> None:
    path = tmp_path / "ads.xlsx"
    make_xlsx(path, [["prompt"], ["a"]])
    table = load_sheet(path)
    tricky = "  <b>&amp;</b> \"q\" 'x'\r\n\ttab _x0041_ _X0041_ \x00\x07bell 🎬 ok  "
    write_back(table, {2: {"error": tricky, "video_url": "https://v/1.mp4?a=1&b=2"}})
    again = load_sheet(path)
    row = again.rows[0].values
    assert row[col_of(again, "error")] == tricky.replace("\x00", "").replace("\x07", "")
    assert row[col_of(again, "video_url")] == "https://v/1.mp4?a=1&b=2"


def test_xlsx_preserves_workbook(tmp_path: Path) -> None:
    path = tmp_path / "ads.xlsx"
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "Ads"
    ws.append(["prompt", "price", "date", "total"])
    ws.merge_cells("D1:E1")  # a merged header: outputs go after the merged block
    for cell in ws[1]:
        cell.font = Font(bold=True)
    ws.append(["cat", 1.5, dt.datetime(2024, 5, 6), "=B2*2"])
    ws.append([None])
    ws.append(["dog", 2.5, dt.datetime(2024, 5, 7), "=B4*2"])
    ws["B2"].number_format = "0.00"
    ws.column_dimensions["A"].width = 42
    other = wb.create_sheet("Notes")
    other["A1"] = "keep me"
    wb.defined_names["prices"] = DefinedName("prices", attr_text="Ads!$B$2:$B$4")
    wb.save(path)
    # openpyxl writes formulas without cached values; give them one as Excel would.
    rewrite_part(
        path,
        "xl/worksheets/sheet1.xml",
        lambda x: x.replace("<f>B2*2</f><v />", "<f>B2*2</f><v>3</v>").replace(
            "<f>B4*2</f><v />", "<f>B4*2</f><v>5</v>"
        ),
    )
    table = load_sheet(path)
    assert table.header_row == 1
    assert table.headers == ["prompt", "price", "date", "total"]
    assert values_of(table) == {
        2: ("cat", 1.5, dt.datetime(2024, 5, 6), 3),
        4: ("dog", 2.5, dt.datetime(2024, 5, 7), 5),
    }
    write_back(table, {2: {"status": "ok"}, 4: {"error": "bad"}})

    wb2 = open_strict(path)
    assert wb2.sheetnames == ["Ads", "Notes"]
    ws2 = wb2["Ads"]
    header = [c.value for c in ws2[1]]
    assert header == ["prompt", "price", "date", "total", None, *OUTPUT_COLUMNS]
    assert all(ws2.cell(1, c).font.b for c in range(6, 10))  # new header cells stay bold
    assert ws2["D2"].value == "=B2*2" and ws2["D4"].value == "=B4*2"
    assert ws2["B2"].number_format == "0.00"
    assert ws2.column_dimensions["A"].width == 42
    assert [str(r) for r in ws2.merged_cells.ranges] == ["D1:E1"]
    assert ws2["G2"].value == "ok" and ws2["I4"].value == "bad"
    assert wb2["Notes"]["A1"].value == "keep me"
    assert "prices" in wb2.defined_names
    again = load_sheet(path)
    assert values_of(again)[2][:4] == ("cat", 1.5, dt.datetime(2024, 5, 6), 3)  # cached value kept
    assert values_of(again)[4][:4] == ("dog", 2.5, dt.datetime(2024, 5, 7), 5)
    assert values_of(again)[2][6] == "ok"
    assert load_sheet(path, sheet_name="Notes").headers == ["keep me"]


def test_xlsx_merged_header_block_is_not_written_into(tmp_path: Path) -> None:
    path = tmp_path / "ads.xlsx"
    wb = make_xlsx(path, [["prompt", "group"], ["a", "x"]])
    wb.active.merge_cells("B1:D1")
    wb.save(path)
    table = load_sheet(path)
    write_back(table, {2: {"request_id": "r"}})
    ws = open_strict(path).active
    assert [ws.cell(1, c).value for c in range(5, 9)] == list(OUTPUT_COLUMNS)
    assert ws["E2"].value == "r"


def test_xlsx_blank_rows_keep_exact_row_numbers(tmp_path: Path) -> None:
    path = tmp_path / "ads.xlsx"
    rows = [[], [None, None], [None, "prompt", "n"], [None, "a", 1], [], [], [None, "b", 2]]
    make_xlsx(path, rows)
    table = load_sheet(path)
    assert table.header_row == 3
    assert table.headers == ["", "prompt", "n"]
    assert values_of(table) == {4: (None, "a", 1), 7: (None, "b", 2)}
    write_back(table, {7: {"video_url": "v7"}, 9: {"error": "past the end"}})
    ws = open_strict(path).active
    assert ws["F7"].value == "v7" and ws["G9"].value == "past the end"
    assert ws["B7"].value == "b" and ws["B4"].value == "a"
    again = load_sheet(path)
    assert [r.number for r in again.rows] == [4, 7, 9]


def test_xlsx_reuses_existing_output_columns_and_shared_strings(tmp_path: Path) -> None:
    sheet = (
        f'<worksheet xmlns="{MAIN_NS}"><dimension ref="A1:C3"/><sheetData>'
        '<row r="1" spans="1:3"><c r="A1" t="s" s="1"><v>0</v></c>'
        '<c r="B1" t="s" s="1"><v>1</v></c>'
        '<c r="C1" t="s" s="1"><v>2</v></c></row>'
        '<row r="2" spans="1:3"><c r="A2" t="s"><v>3</v></c><c r="B2" t="s" s="1"><v>4</v></c>'
        '<c r="C2" t="s"><v>6</v></c></row>'
        '<row r="3" spans="1:3"><c r="A3" t="s"><v>5</v></c><c r="B3" t="s"><v>4</v></c></row>'
        "</sheetData></worksheet>"
    )
    path = tmp_path / "ads.xlsx"
    uuid = "0f8fad5b-d9cb-469f-a165-70867728950e"
    raw_xlsx(
        path, sheet, shared=["Prompt", " STATUS", "Request_ID ", "cat", "pending", "dog", uuid]
    )
    table = load_sheet(path)
    assert table.sheet_name == "Data"
    assert table.headers == ["Prompt", " STATUS", "Request_ID "]
    write_back(table, {2: {"status": "new", "request_id": "r2"}, 3: {"error": "e3"}})
    ws = open_strict(path).active
    assert [c.value for c in ws[1]] == ["Prompt", " STATUS", "Request_ID ", "video_url", "error"]
    assert [c.value for c in ws[2]][:3] == ["cat", "new", "r2"]
    assert ws["B2"].font.b  # the replaced cell kept its style
    assert [c.value for c in ws[3]] == ["dog", "pending", None, None, "e3"]
    xml = sheet_part(path, "xl/worksheets/data.xml")
    assert "spans" not in re.search(r"<row r=\"3\"[^>]*>", xml)[0]
    assert 'ref="A1:E3"' in xml


def test_xlsx_prefixed_namespace_rows_and_cells_without_r(tmp_path: Path) -> None:
    sheet = (
        f'<x:worksheet xmlns:x="{MAIN_NS}"><x:sheetData>'
        '<x:row><x:c t="inlineStr"><x:is><x:t>prompt</x:t></x:is></x:c>'
        '<x:c t="inlineStr"><x:is><x:t>n</x:t></x:is></x:c></x:row>'
        '<x:row><x:c t="inlineStr"><x:is><x:t>a</x:t></x:is></x:c><x:c><x:v>1</x:v></x:c></x:row>'
        '<x:row r="4"><x:c r="A4" t="inlineStr"><x:is><x:t>b</x:t></x:is></x:c></x:row>'
        "<x:row/>"
        '<x:row><x:c/><x:c t="inlineStr"><x:is><x:t>c</x:t></x:is></x:c></x:row>'
        "</x:sheetData></x:worksheet>"
    )
    path = tmp_path / "ads.xlsx"
    raw_xlsx(path, sheet)
    table = load_sheet(path)
    assert values_of(table) == {2: ("a", 1), 4: ("b", None), 6: (None, "c")}
    write_back(table, {2: {"status": "s2"}, 3: {"status": "s3"}, 6: {"error": "e6"}})
    ws = open_strict(path).active
    assert [c.value for c in ws[1]] == ["prompt", "n", *OUTPUT_COLUMNS]
    assert ws["D2"].value == "s2" and ws["D3"].value == "s3" and ws["F6"].value == "e6"
    assert ws["B6"].value == "c" and ws["A4"].value == "b"
    xml = sheet_part(path, "xl/worksheets/data.xml")
    assert '<x:c r="D2" t="inlineStr"><x:is><x:t xml:space="preserve">s2</x:t>' in xml
    again = load_sheet(path)
    assert [r.number for r in again.rows] == [2, 3, 4, 6]


def test_xlsx_overwriting_a_formula_drops_calc_chain(tmp_path: Path) -> None:
    sheet = (
        f'<worksheet xmlns="{MAIN_NS}"><sheetData>'
        '<row r="1"><c r="A1" t="inlineStr"><is><t>prompt</t></is></c>'
        '<c r="B1" t="inlineStr"><is><t>status</t></is></c>'
        '<c r="C1" t="inlineStr"><is><t>calc</t></is></c></row>'
        '<row r="2"><c r="A2" t="inlineStr"><is><t>a</t></is></c>'
        '<c r="B2" t="str"><f>"pending"</f><v>pending</v></c>'
        '<c r="C2"><f>1+1</f><v>2</v></c></row>'
        "</sheetData></worksheet>"
    )
    path = tmp_path / "ads.xlsx"
    raw_xlsx(path, sheet, calc_chain='<c r="B2" i="1"/><c r="C2"/>')
    table = load_sheet(path)
    write_back(table, {2: {"request_id": "r"}})
    assert "xl/calcChain.xml" in zipfile.ZipFile(path).namelist()  # no formula touched
    write_back(table, {2: {"status": "ok"}})
    assert "xl/calcChain.xml" not in zipfile.ZipFile(path).namelist()
    assert "calcChain" not in sheet_part(path, "[Content_Types].xml")
    assert "calcChain" not in sheet_part(path, "xl/_rels/workbook.xml.rels")
    ws = open_strict(path).active
    assert (ws["B2"].value, ws["C2"].value) == ("ok", "=1+1")


def test_xlsx_shared_formula_master_in_output_column_is_refused(tmp_path: Path) -> None:
    sheet = (
        f'<worksheet xmlns="{MAIN_NS}"><sheetData>'
        '<row r="1"><c r="A1" t="inlineStr"><is><t>status</t></is></c></row>'
        '<row r="2"><c r="A2" t="str"><f t="shared" ref="A2:A3" si="0">"pending"</f>'
        "<v>pending</v></c></row>"
        '<row r="3"><c r="A3" t="str"><f t="shared" si="0"/><v>pending</v></c></row>'
        "</sheetData></worksheet>"
    )
    path = tmp_path / "ads.xlsx"
    raw_xlsx(path, sheet)
    before = path.read_bytes()
    table = load_sheet(path)
    with pytest.raises(SheetError, match=r"ads\.xlsx: cannot patch: cell A2 .*shared or array"):
        write_back(table, {2: {"status": "ok"}})
    assert path.read_bytes() == before


def test_xlsx_results_sheet_added_then_replaced(tmp_path: Path) -> None:
    path = tmp_path / "ads.xlsx"
    wb = make_xlsx(path, [["prompt"], ["a"]])
    wb.create_sheet("Zeta")["A1"] = "z"
    wb.save(path)
    table = load_sheet(path)
    first = Results(headers=["row", "status", "cost"], rows=[[2, "running", None]])
    write_back(table, {2: {"status": "running"}}, results=first)
    assert open_strict(path).sheetnames == ["Ads", "Zeta", RESULTS_SHEET]
    second = Results(headers=["row", "status", "cost"], rows=[[2, "=done", 0.5], [3, "failed", 1]])
    write_back(table, {2: {"status": "done"}}, results=second)
    wb2 = open_strict(path)
    assert wb2.sheetnames == ["Ads", "Zeta", RESULTS_SHEET]
    ws = wb2[RESULTS_SHEET]
    assert [[c.value for c in r] for r in ws.iter_rows()] == [
        ["row", "status", "cost"],
        [2, "=done", 0.5],
        [3, "failed", 1],
    ]
    assert ws["B2"].data_type == "s"
    res = load_sheet(path, sheet_name=RESULTS_SHEET)
    assert values_of(res) == {2: (2, "=done", 0.5), 3: (3, "failed", 1)}
    # Reloading the patched file and writing again still finds and replaces the sheet.
    write_back(load_sheet(path), {}, results=first)
    assert open_strict(path).sheetnames == ["Ads", "Zeta", RESULTS_SHEET]
    assert load_sheet(path, sheet_name=RESULTS_SHEET).rows[0].values == (2, "running", None)


def test_xlsx_output_leaves_input_untouched_and_writes_are_idempotent(tmp_path: Path) -> None:
    path = tmp_path / "ads.xlsx"
    make_xlsx(path, [["prompt"], ["a"], ["b"]])
    before = path.read_bytes()
    table = load_sheet(path)
    out1, out2 = tmp_path / "o1.xlsx", tmp_path / "o2.xlsx"
    cells = {2: {"status": "ok"}, 3: {"error": "x"}}
    results = Results(["a"], [[1]])
    assert write_back(table, cells, results=results, output=out1) == out1
    write_back(table, {2: {"status": "other"}}, output=out2)
    write_back(table, cells, results=results, output=out2)
    assert path.read_bytes() == before
    assert out1.read_bytes() == out2.read_bytes()


def test_atomic_write_keeps_mode_and_leaves_no_temp_files(tmp_path: Path) -> None:
    for name, content in (("a.csv", b"prompt\nx\n"), ("b.xlsx", None)):
        path = tmp_path / name
        if content is None:
            make_xlsx(path, [["prompt"], ["x"]])
        else:
            path.write_bytes(content)
        os.chmod(path, 0o640)
        table = load_sheet(path)
        write_back(table, {2: {"status": "ok"}}, results=Results(["a"], [["b"]]))
        assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.csv", "a.results.csv", "b.xlsx"]


def test_write_back_follows_symlink(tmp_path: Path) -> None:
    real = tmp_path / "real.csv"
    real.write_bytes(b"prompt\nx\n")
    link = tmp_path / "link.csv"
    link.symlink_to(real)
    write_back(load_sheet(link), {2: {"status": "ok"}})
    assert link.is_symlink()
    assert real.read_bytes() == b"prompt,request_id,status,video_url,error\nx,,ok\n"


def test_write_back_rejects_bad_cells(tmp_path: Path) -> None:
    path = tmp_path / "ads.csv"
    path.write_bytes(b"prompt\nx\n")
    table = load_sheet(path)
    with pytest.raises(ValueError, match="not a data row"):
        write_back(table, {1: {"status": "x"}})
    with pytest.raises(ValueError, match="not an output column"):
        write_back(table, {2: {"prompt": "x"}})
    assert path.read_bytes() == b"prompt\nx\n"


# --------------------------------------------------------------------------- errors


def _png() -> bytes:
    return b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4


def _zip_without_workbook(path: Path) -> None:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("hello.txt", "hi")


LOAD_ERRORS = [
    ("empty.csv", b"", "is empty"),
    ("blank.csv", b"\n , \n\n", "is empty"),
    ("empty.xlsx", b"", "is empty"),
    ("image.xlsx", _png(), "not a valid .xlsx"),
    ("random.xlsx", random.Random(7).randbytes(64), "not a valid .xlsx"),
    ("image.csv", _png(), "not a text CSV"),
    ("locked.xlsx", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 600, "password-protected"),
    ("ads.txt", b"prompt\nx\n", "unsupported file type '.txt'"),
    ("old.xls", b"\xd0\xcf\x11\xe0", "old .xls"),
    ("workbook.csv", b"PK\x03\x04rest", "rename it to .xlsx"),
]


@pytest.mark.parametrize(
    ("name", "content", "message"), [pytest.param(*case, id=case[0]) for case in LOAD_ERRORS]
)
def test_load_errors_are_one_line_sheet_errors(
    tmp_path: Path, name: str, content: bytes, message: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(SheetError) as info:
        load_sheet(path)
    text = str(info.value)
    assert text.startswith(f"{shown(path)}: ") and message in text and "\n" not in text
    assert path.read_bytes() == content


def test_missing_path_and_directory(tmp_path: Path) -> None:
    with pytest.raises(SheetError, match=r"nope\.xlsx: no such file"):
        load_sheet(tmp_path / "nope.xlsx")
    (tmp_path / "dir.csv").mkdir()
    with pytest.raises(SheetError, match=r"dir\.csv: is a directory"):
        load_sheet(tmp_path / "dir.csv")


def test_zip_that_is_not_a_workbook(tmp_path: Path) -> None:
    path = tmp_path / "ads.xlsx"
    _zip_without_workbook(path)
    before = path.read_bytes()
    with pytest.raises(SheetError, match=r"not a valid \.xlsx workbook"):
        load_sheet(path)
    assert path.read_bytes() == before


def test_xlsx_without_any_value(tmp_path: Path) -> None:
    path = tmp_path / "ads.xlsx"
    make_xlsx(path, [[None, " "]])
    with pytest.raises(SheetError, match="has no non-blank row"):
        load_sheet(path)


def test_unknown_worksheet_lists_names(tmp_path: Path) -> None:
    path = tmp_path / "ads.xlsx"
    wb = make_xlsx(path, [["prompt"]])
    wb.create_sheet("Second")["A1"] = "x"
    wb.save(path)
    with pytest.raises(SheetError, match=r"no worksheet named 'Nope'; sheets: 'Ads', 'Second'"):
        load_sheet(path, sheet_name="Nope")
    assert load_sheet(path, sheet_name="second").sheet_name == "Second"


def test_xlsx_the_writer_cannot_patch(tmp_path: Path) -> None:
    path = tmp_path / "ads.xlsx"
    make_xlsx(path, [["prompt"], ["a"]])
    # Rows out of order are invalid OOXML that calamine still reads; refuse at load.
    rewrite_part(
        path,
        "xl/worksheets/sheet1.xml",
        lambda x: re.sub(r'(<row r="1">.*?</row>)(<row r="2">.*?</row>)', r"\2\1", x),
    )
    before = path.read_bytes()
    with pytest.raises(SheetError, match="cannot patch: worksheet rows are out of order"):
        load_sheet(path)
    assert path.read_bytes() == before


def test_write_errors_leave_input_untouched(tmp_path: Path) -> None:
    path = tmp_path / "ads.csv"
    path.write_bytes(b"prompt\nx\n")
    table = load_sheet(path)
    with pytest.raises(SheetError, match="cannot be written"):
        write_back(table, {2: {"status": "ok"}}, output=tmp_path / "missing" / "out.csv")
    with pytest.raises(SheetError, match=r"cannot write a \.csv sheet to a \.xlsx file"):
        write_back(table, {2: {"status": "ok"}}, output=tmp_path / "out.xlsx")
    assert path.read_bytes() == b"prompt\nx\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ads.csv"]
