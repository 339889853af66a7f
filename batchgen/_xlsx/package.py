"""The results worksheet, and the new package: changed parts written, the rest copied."""

from __future__ import annotations

import io
import math
import posixpath
import re
import zipfile
from collections.abc import Callable, Iterable, Iterator

from batchgen._xlsx.book import Book
from batchgen._xlsx.markup import (
    ATTRS,
    CT_STYLES,
    CT_WORKSHEET,
    NS_MAIN,
    NS_REL,
    REL_CALC_CHAIN,
    REL_STYLES,
    REL_WORKSHEET,
    ZIP_ERRORS,
    XlsxError,
    attr,
    cell_xml,
    col_letter,
    escape_attr,
    escape_text,
)


def results_sheet_xml(headers: list[str], rows: list[list[object]]) -> Iterator[bytes]:
    """A standalone worksheet, encoded a block of rows at a time: a header row, then a row
    per job."""
    out = ['<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n']
    width = max([len(headers), *(len(r) for r in rows)]) or 1
    out.append(f'<worksheet xmlns="{NS_MAIN}">')
    out.append(f'<dimension ref="A1:{col_letter(width - 1)}{len(rows) + 1}"/>')
    out.append("<sheetData>")
    header_row: list[object] = list(headers)
    for n, values in enumerate([header_row, *rows], start=1):
        out.append(f'<row r="{n}">')
        for c, value in enumerate(values):
            if type(value) is str and value:  # the common case, inlined for speed
                out.append(
                    f'<c r="{col_letter(c)}{n}" t="inlineStr"><is><t xml:space="preserve">'
                    f"{escape_text(value)}</t></is></c>"
                )
            else:
                out.append(_results_cell(f"{col_letter(c)}{n}", value))
        out.append("</row>")
        if n % _ROWS_PER_BLOCK == 0:
            yield "".join(out).encode("utf-8")
            out = []
    out.append("</sheetData></worksheet>")
    yield "".join(out).encode("utf-8")


def encoded_blocks(pieces: list[str], size: int = 1 << 20) -> Iterator[bytes]:
    """UTF-8 blocks of about `size` characters made from `pieces` (consumed as it goes)."""
    block: list[str] = []
    length = 0
    pieces.reverse()  # pop from the end: each piece is released once encoded
    while pieces:
        piece = pieces.pop()
        block.append(piece)
        length += len(piece)
        if length >= size:
            yield "".join(block).encode("utf-8")
            block, length = [], 0
    yield "".join(block).encode("utf-8")


_ROWS_PER_BLOCK = 2000


def _results_cell(ref: str, value: object) -> str:
    """One results cell: numbers and booleans typed, everything else an inline string."""
    if value is None or value == "":
        return ""
    if isinstance(value, bool):
        return f'<c r="{ref}" t="b"><v>{int(value)}</v></c>'
    if isinstance(value, int | float) and math.isfinite(value):
        return f'<c r="{ref}"><v>{value!r}</v></c>'
    return cell_xml("", ref, None, str(value))


# --------------------------------------------------------------------------- repackaging


def _insert_before_close(xml: str, tag: str, fragment: str) -> str:
    """Insert `fragment` before the last closing tag `tag` (any prefix)."""
    matches = list(re.finditer(r"</([\w.-]+:)?" + tag + r"\s*>", xml))
    if not matches:
        raise XlsxError(f"cannot patch: no </{tag}> in the package")
    m = matches[-1]
    return xml[: m.start()] + fragment.replace("{p}", m.group(1) or "") + xml[m.start() :]


def _add_results_sheet(book: Book, name: str) -> tuple[str, dict[str, str]]:
    """Register a new worksheet part; return its part name and the changed XML parts."""
    taken = {n.lower() for n in book.names}
    n = 1
    while f"xl/worksheets/sheet{n}.xml" in taken:
        n += 1
    part = f"xl/worksheets/sheet{n}.xml"
    rel_ids = set(re.findall(r"\sId\s*=\s*[\"']([^\"']+)", book.rels_xml))
    k = len(rel_ids) + 1
    while f"rId{k}" in rel_ids:
        k += 1
    rid = f"rId{k}"
    sheet_id = max([s.sheet_id for s in book.sheets] or [0]) + 1
    target = posixpath.relpath(part, posixpath.dirname(book.workbook_part) or ".")
    rels_xml = _insert_before_close(
        book.rels_xml,
        "Relationships",
        f'<{{p}}Relationship Id="{rid}" Type="{REL_WORKSHEET}" Target="{target}"/>',
    )
    m = re.search(r"xmlns:([\w.-]+)\s*=\s*[\"']" + re.escape(NS_REL) + "[\"']", book.workbook_xml)
    r_prefix, r_decl = (m.group(1), "") if m else ("r", f' xmlns:r="{NS_REL}"')
    workbook_xml = _insert_before_close(
        book.workbook_xml,
        "sheets",
        f'<{{p}}sheet name="{escape_attr(name)}" sheetId="{sheet_id}"{r_decl} '
        f'{r_prefix}:id="{rid}"/>',
    )
    ctypes_xml = _insert_before_close(
        book.ctypes_xml,
        "Types",
        f'<{{p}}Override PartName="/{part}" ContentType="{CT_WORKSHEET}"/>',
    )
    return part, {
        book.rels_part: rels_xml,
        book.workbook_part: workbook_xml,
        _ctypes_name(book): ctypes_xml,
    }


def _add_styles_part(book: Book, changed: dict[str, str]) -> str:
    """Register a styles part for a workbook that has none; its part name (`changed` gets
    the relationships and content types that name it)."""
    taken = {n.lower() for n in book.names}
    part, n = "xl/styles.xml", 1
    while part in taken:
        n += 1
        part = f"xl/styles{n}.xml"
    rels = changed.get(book.rels_part, book.rels_xml)
    rel_ids = set(re.findall(r"\sId\s*=\s*[\"']([^\"']+)", rels))
    k = len(rel_ids) + 1
    while f"rId{k}" in rel_ids:
        k += 1
    target = posixpath.relpath(part, posixpath.dirname(book.workbook_part) or ".")
    changed[book.rels_part] = _insert_before_close(
        rels,
        "Relationships",
        f'<{{p}}Relationship Id="rId{k}" Type="{REL_STYLES}" Target="{target}"/>',
    )
    ct_name = _ctypes_name(book)
    changed[ct_name] = _insert_before_close(
        changed.get(ct_name, book.ctypes_xml),
        "Types",
        f'<{{p}}Override PartName="/{part}" ContentType="{CT_STYLES}"/>',
    )
    return part


def _ctypes_name(book: Book) -> str:
    """The exact zip name of [Content_Types].xml."""
    return next(n for n in book.names if n.lower() == "[content_types].xml")


def _drop_calc_chain(book: Book, changed: dict[str, str]) -> None:
    """Forget xl/calcChain.xml: Excel rebuilds it, and a stale one makes Excel 'repair' the file."""
    assert book.calc_chain is not None
    rels = changed.get(book.rels_part, book.rels_xml)
    changed[book.rels_part] = _remove_empty_elements(
        rels, "Relationship", lambda attrs: attr(attrs, "Type") == REL_CALC_CHAIN
    )
    ct_name = _ctypes_name(book)
    ctypes = changed.get(ct_name, book.ctypes_xml)
    part = "/" + book.calc_chain.lower()
    changed[ct_name] = _remove_empty_elements(
        ctypes, "Override", lambda attrs: (attr(attrs, "PartName") or "").lower() == part
    )


def _remove_empty_elements(xml: str, tag: str, doomed: Callable[[str], bool]) -> str:
    """Remove the empty elements <tag .../> whose attribute string satisfies `doomed`."""
    pattern = re.compile(r"<(?:[\w.-]+:)?" + tag + r"(?=\s)(" + ATTRS + r")/>")
    return pattern.sub(lambda m: "" if doomed(m.group(1)) else m.group(0), xml)


def results_sheet_part(book: Book, *, sheet_part: str, name: str) -> str | None:
    """The part of an existing results sheet called `name` (None: there is none yet), or an
    XlsxError if that sheet cannot take the results."""
    existing = next((s for s in book.sheets if s.name.lower() == name.lower()), None)
    if existing is None:
        return None
    if existing.part is None or existing.rel_type != REL_WORKSHEET:
        raise XlsxError(f"cannot patch: sheet {existing.name!r} is not a plain worksheet")
    if existing.part == sheet_part:
        raise XlsxError(f"cannot write results into the sheet being processed ({existing.name!r})")
    return existing.part


def repackage(
    book: Book,
    *,
    sheet_part: str,
    sheet_xml: Iterable[bytes],
    results_name: str | None,
    results_xml: Iterable[bytes] | None,
    drop_calc_chain: bool,
    parts: dict[str, bytes] | None = None,
    new_styles: bytes | None = None,
) -> bytes:
    """Build the new package: every entry copied unchanged except the parts we patch (the
    sheet, the results sheet, and `parts`: other existing parts by name, e.g. the styles);
    `new_styles` is a styles part for a workbook that has none."""
    replaced: dict[str, bytes | Iterable[bytes]] = {**(parts or {}), sheet_part: sheet_xml}
    changed_text: dict[str, str] = {}
    new_part: str | None = None
    if results_xml is not None and results_name is not None:
        existing = results_sheet_part(book, sheet_part=sheet_part, name=results_name)
        if existing is None:
            new_part, changed_text = _add_results_sheet(book, results_name)
        else:
            replaced[existing] = results_xml
    added: dict[str, bytes] = {}
    if new_styles is not None and book.styles_part is None:
        added[_add_styles_part(book, changed_text)] = new_styles
    skip: set[str] = set()
    if drop_calc_chain and book.calc_chain is not None:
        _drop_calc_chain(book, changed_text)
        skip.add(book.calc_chain)
    for name, text in changed_text.items():
        replaced[name] = text.encode("utf-8")
    buf = io.BytesIO()
    try:
        with (
            zipfile.ZipFile(io.BytesIO(book.data)) as src,
            zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as dst,
        ):
            for info in src.infolist():
                if info.filename in skip:
                    continue
                data = replaced.get(info.filename)
                if data is None:
                    data = src.read(info)
                _write_entry(dst, _copy_info(info), data)
            if new_part is not None and results_xml is not None:
                _write_entry(dst, _copy_info(zipfile.ZipInfo(new_part)), results_xml)
            for name, data in added.items():
                _write_entry(dst, _copy_info(zipfile.ZipInfo(name)), data)
    except ZIP_ERRORS as exc:
        raise XlsxError(f"cannot patch: {exc}") from exc
    return buf.getvalue()


def _write_entry(
    dst: zipfile.ZipFile, info: zipfile.ZipInfo, data: bytes | Iterable[bytes]
) -> None:
    """One zip entry: bytes at once, an iterable of blocks streamed (never held whole)."""
    if isinstance(data, bytes):
        dst.writestr(info, data, compresslevel=_level(data))
        return
    # streamed parts are the big ones: zlib level 1 (the attribute's name varies by Python)
    try:
        info.compress_level = 1  # type: ignore[attr-defined]
    except AttributeError:
        info._compresslevel = 1  # type: ignore[attr-defined]
    with dst.open(info, "w") as handle:
        for block in data:
            handle.write(block)


def _level(data: bytes) -> int:
    """zlib level: fast for big parts (much quicker, a little larger), default for the rest."""
    return 1 if len(data) > 1_000_000 else 6


def _copy_info(info: zipfile.ZipInfo) -> zipfile.ZipInfo:
    """A fresh ZipInfo with the entry's name, time and attributes, always deflated."""
    new = zipfile.ZipInfo(info.filename, info.date_time)
    new.compress_type = zipfile.ZIP_DEFLATED
    new.external_attr = info.external_attr
    new.create_system = info.create_system
    return new
