"""The package of an .xlsx: its workbook, sheets and relationships, read from the zip."""

from __future__ import annotations

import io
import posixpath
import re
import zipfile
from dataclasses import dataclass
from xml.etree import ElementTree

from batchgen._xlsx.markup import (
    NS_MAIN,
    NS_PKG_REL,
    NS_REL,
    REL_CALC_CHAIN,
    REL_OFFICE_DOC,
    REL_STYLES,
    ZIP_ERRORS,
    XlsxError,
)

_XML_DECL_ENC_RE = re.compile(r"^\s*<\?xml[^>]*encoding\s*=\s*[\"']([^\"']+)[\"']")


@dataclass
class SheetRef:
    """A <sheet> of the workbook and the zip entry holding it."""

    name: str
    sheet_id: int
    part: str | None
    rel_type: str


@dataclass
class Book:
    """The package as loaded: raw bytes and the parsed workbook-level parts."""

    data: bytes
    names: list[str]
    workbook_part: str
    workbook_xml: str
    rels_part: str
    rels_xml: str
    ctypes_xml: str
    sheets: list[SheetRef]
    calc_chain: str | None
    styles_part: str | None = None  # xl/styles.xml, where the workbook has one


def _read_text(zf: zipfile.ZipFile, name: str) -> str:
    """Read one zip entry as UTF-8 text."""
    raw = zf.read(name)
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    m = _XML_DECL_ENC_RE.match(raw[:200].decode("ascii", "replace"))
    if m and m.group(1).lower().replace("_", "-") not in ("utf-8", "utf8"):
        raise XlsxError(f"cannot patch: {name} is encoded as {m.group(1)}, not UTF-8")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise XlsxError(f"cannot patch: {name} is not valid UTF-8") from exc


def _resolve(base_part: str, target: str) -> str:
    """Resolve a relationship target against the part that owns the .rels file."""
    if target.startswith("/"):
        return target.lstrip("/")
    return posixpath.normpath(posixpath.join(posixpath.dirname(base_part), target))


def _rels_part_of(part: str) -> str:
    """xl/workbook.xml → xl/_rels/workbook.xml.rels."""
    return posixpath.join(posixpath.dirname(part), "_rels", posixpath.basename(part) + ".rels")


def _parse_rels(xml: str) -> dict[str, tuple[str, str]]:
    """Relationship Id → (Type, Target) of a .rels part."""
    root = ElementTree.fromstring(xml)
    rels: dict[str, tuple[str, str]] = {}
    for el in root.iter(f"{{{NS_PKG_REL}}}Relationship"):
        if el.get("TargetMode") == "External":
            continue
        rels[el.get("Id", "")] = (el.get("Type", ""), el.get("Target", ""))
    return rels


def open_book(data: bytes) -> Book:
    """Parse the workbook-level parts of an .xlsx held in memory."""
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise XlsxError("is not a valid .xlsx workbook (not a zip archive)") from exc
    with zf:
        names = zf.namelist()
        by_lower = {n.lower(): n for n in names}
        try:
            ctypes_xml = _read_text(zf, by_lower["[content_types].xml"])
            workbook_part = "xl/workbook.xml"
            if "_rels/.rels" in by_lower:
                for rel_type, target in _parse_rels(
                    _read_text(zf, by_lower["_rels/.rels"])
                ).values():
                    if rel_type == REL_OFFICE_DOC:
                        workbook_part = target.lstrip("/")
            workbook_part = by_lower.get(workbook_part.lower(), workbook_part)
            workbook_xml = _read_text(zf, workbook_part)
            rels_part = by_lower.get(_rels_part_of(workbook_part).lower(), "")
            rels_xml = _read_text(zf, rels_part)
            wb_root = ElementTree.fromstring(workbook_xml)
            rels = _parse_rels(rels_xml)
        except KeyError as exc:
            raise XlsxError(f"is not a valid .xlsx workbook (missing {exc.args[0]})") from exc
        except (ElementTree.ParseError, *ZIP_ERRORS) as exc:
            raise XlsxError(f"is not a valid .xlsx workbook ({exc})") from exc
    if "purl.oclc.org/ooxml" in workbook_xml:
        raise XlsxError("is saved as Strict Open XML; save it as a normal Excel Workbook (.xlsx)")
    sheets: list[SheetRef] = []
    calc_chain: str | None = None
    styles_part: str | None = None
    for rel_type, target in rels.values():
        if rel_type == REL_CALC_CHAIN:
            calc_chain = by_lower.get(_resolve(workbook_part, target).lower())
        if rel_type == REL_STYLES:
            styles_part = by_lower.get(_resolve(workbook_part, target).lower())
    for el in wb_root.iter(f"{{{NS_MAIN}}}sheet"):
        rel_type, target = rels.get(el.get(f"{{{NS_REL}}}id", ""), ("", ""))
        part = by_lower.get(_resolve(workbook_part, target).lower()) if target else None
        sheet_id = el.get("sheetId", "0")
        sheets.append(
            SheetRef(
                name=el.get("name", ""),
                sheet_id=int(sheet_id) if sheet_id.isdigit() else 0,
                part=part,
                rel_type=rel_type,
            )
        )
    return Book(
        data=data,
        names=names,
        workbook_part=workbook_part,
        workbook_xml=workbook_xml,
        rels_part=rels_part,
        rels_xml=rels_xml,
        ctypes_xml=ctypes_xml,
        sheets=sheets,
        calc_chain=calc_chain,
        styles_part=styles_part,
    )


def read_part(book: Book, part: str) -> str:
    """Read one XML part of the package as text."""
    with zipfile.ZipFile(io.BytesIO(book.data)) as zf:
        try:
            return _read_text(zf, part)
        except (KeyError, *ZIP_ERRORS) as exc:
            raise XlsxError(f"cannot patch: cannot read {part} ({exc})") from exc
