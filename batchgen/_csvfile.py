"""Read a CSV keeping its exact bytes and dialect, and patch single records on write.

Records are kept as the raw text they had in the file, so a record that gets no output
cells is written back byte for byte, and a record that does keeps its other fields as
written (same quoting), with only the output fields replaced or appended.
"""

from __future__ import annotations

import codecs
import csv
import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from batchgen import _encoding

DELIMITERS = (",", ";", "\t")
_SAMPLE_RECORDS = 50
_BLANKISH = re.compile(r"[\s,;]+")
# A file is read whole anyway: csv's own 128 KiB field limit would refuse the sheet over one
# huge cell, where only that row is wrong (specs makes it invalid)
csv.field_size_limit(1 << 30)
_CONTROL_BYTES = bytes([*range(0, 9), *range(14, 32)])
# OWASP's list of first characters that make a spreadsheet read a CSV field as a formula
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


class CsvError(Exception):
    """The CSV cannot be read; the message names the problem."""


@dataclass
class CsvDoc:
    """A CSV file as loaded: encoding, dialect and every record's raw text and fields."""

    bom: bytes
    encoding: str
    errors: str  # codec error handler that restores undecodable bytes on write
    delimiter: str
    quote_all: bool
    newline: str
    records: list[str]  # raw text of each record including its line terminator
    fields: list[list[str]]  # parsed fields of each record
    found_by: str = ""  # how the encoding was found: byte-order mark, UTF-8, detected, given

    def encode(self, text: str) -> bytes:
        """Encode file text the way the file was encoded (BOM included)."""
        return self.bom + text.encode(self.encoding, self.errors)

    @property
    def encodes_any_text(self) -> bool:
        """True for UTF-8/16, which encode any text that survived strip_illegal."""
        return self.encoding.startswith(("utf-8", "utf-16", "utf-32"))

    def fit(self, value: str) -> str:
        """Make a new value encodable: characters the encoding lacks become '?'."""
        if self.encodes_any_text:
            return value
        return value.encode(self.encoding, "replace").decode(self.encoding)


def _decode(data: bytes, encoding: str | None) -> _encoding.Decoded:
    """Detect (or apply the given) encoding; a CsvError says why the text cannot be read."""
    utf16 = data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) or (
        encoding is not None and encoding.startswith("utf-16")
    )
    if not utf16 and _looks_binary(data):
        raise CsvError("is not a text CSV file (it contains binary data)")
    try:
        return _encoding.decode(data, encoding)
    except UnicodeDecodeError as exc:
        enc = exc.encoding.upper()
        raise CsvError(
            f"is not valid {enc} text (byte {exc.start}); check --encoding / encoding"
        ) from exc
    except _encoding.EncodingUnsure as exc:
        raise CsvError(
            f"cannot tell its text encoding ({exc}); nothing was sent: name it with "
            '--encoding NAME (or encoding = "NAME" in the job file), e.g. cp1251'
        ) from exc


def _looks_binary(data: bytes) -> bool:
    """Many control bytes (NUL among them) at the start: an image or other binary file.

    A stray NUL or two in a text file makes only its row invalid (sheets, specs).
    """
    sample = data[:65536]
    controls = len(sample) - len(sample.translate(None, _CONTROL_BYTES))
    return controls > max(8, len(sample) // 100)


def _detect_newline(text: str) -> str:
    """The terminator of the first line: '\\r\\n', '\\n' or '\\r'."""
    m = re.search(r"\r\n|\n|\r", text)
    return m.group(0) if m else "\n"


def _physical_lines(text: str, newline: str) -> list[str]:
    """Split into lines keeping their terminators; quoted newlines are rejoined by csv."""
    sep = "\r" if newline == "\r" else "\n"
    parts = text.split(sep)
    lines = [p + sep for p in parts[:-1]]
    if parts[-1]:
        lines.append(parts[-1])
    return lines


def _reader(lines: list[str], delimiter: str) -> Any:
    """A csv reader with Python's standard (Excel) rules and the given delimiter."""
    return csv.reader(lines, delimiter=delimiter, quotechar='"', doublequote=True, strict=False)


def _detect_delimiter(lines: list[str]) -> str:
    """Pick the delimiter that splits the header into the most fields, then the most consistent."""
    start = next((i for i, line in enumerate(lines) if _BLANKISH.sub("", line)), 0)
    sample = lines[start : start + _SAMPLE_RECORDS * 4]
    best: tuple[int, int, int] | None = None
    choice = ","
    for rank, delim in enumerate(DELIMITERS):
        try:
            # Ignore records of only whitespace and delimiters, whichever delimiter is tried.
            records = [r for r in _reader(sample, delim) if _BLANKISH.sub("", "".join(r))]
        except csv.Error:
            continue
        if not records:
            continue
        width = len(records[0])
        same = sum(1 for r in records[:_SAMPLE_RECORDS] if len(r) == width)
        # A one-column header says nothing about the delimiter: then ',' (rank 0) wins.
        score = (width, same if width > 1 else 0, -rank)
        if best is None or score > best:
            best, choice = score, delim
    return choice


_FIELD_CACHE: dict[str, re.Pattern[str]] = {}


def split_raw(body: str, delimiter: str) -> list[str]:
    """Split a record's raw text (no terminator) into raw fields, quotes kept."""
    if '"' not in body:
        return body.split(delimiter)
    pattern = _FIELD_CACHE.get(delimiter)
    if pattern is None:
        d = re.escape(delimiter)
        # A quoted field may trail unquoted text before the delimiter (csv's lenient mode).
        pattern = re.compile(r'"(?:[^"]|"")*"[^' + d + r"]*|[^" + d + r"]*")
        _FIELD_CACHE[delimiter] = pattern
    fields: list[str] = []
    pos = 0
    while True:
        m = pattern.match(body, pos)
        assert m is not None  # the second alternative always matches
        fields.append(m.group(0))
        pos = m.end()
        if pos >= len(body):
            return fields
        pos += len(delimiter)
        if pos == len(body):
            fields.append("")
            return fields


def split_terminator(raw: str) -> tuple[str, str]:
    """Split a raw record into (body, line terminator)."""
    if raw.endswith("\r\n"):
        return raw[:-2], "\r\n"
    if raw.endswith(("\n", "\r")):
        return raw[:-1], raw[-1]
    return raw, ""


def parse(data: bytes, *, encoding: str | None = None) -> CsvDoc:
    """Decode and split a CSV file into raw records and their fields."""
    decoded = _decode(data, encoding)
    bom, encoding, errors, text = decoded.bom, decoded.encoding, decoded.errors, decoded.text
    if not text.strip():
        raise CsvError("is empty")
    newline = _detect_newline(text)
    lines = _physical_lines(text, newline)
    delimiter = _detect_delimiter(lines)
    reader = _reader(lines, delimiter)
    records: list[str] = []
    fields: list[list[str]] = []
    consumed = 0
    try:
        for row in reader:
            upto = reader.line_num
            records.append("".join(lines[consumed:upto]))
            fields.append(row)
            consumed = upto
    except csv.Error as exc:
        raise CsvError(f"is not a readable CSV near line {reader.line_num}: {exc}") from exc
    header = next((i for i, f in enumerate(fields) if any(x.strip() for x in f)), None)
    quote_all = False
    if header is not None:
        raw_fields = split_raw(split_terminator(records[header])[0], delimiter)
        quote_all = all(f.startswith('"') for f in raw_fields)
    return CsvDoc(
        bom=bom,
        encoding=encoding,
        errors=errors,
        delimiter=delimiter,
        quote_all=quote_all,
        newline=newline,
        records=records,
        fields=fields,
        found_by=decoded.how,
    )


def quoter(doc: CsvDoc) -> Callable[[str], str]:
    """A function that formats one new field in the file's quoting style."""
    needs_quotes = _needs_quotes(doc.delimiter).search
    quote_all = doc.quote_all

    def quote_one(value: str) -> str:
        if quote_all or needs_quotes(value):
            return '"' + value.replace('"', '""') + '"'
        return value

    return quote_one


@functools.lru_cache(maxsize=8)
def _needs_quotes(delimiter: str) -> re.Pattern[str]:
    """Fields with the delimiter, a quote, a line break or edge whitespace get quoted."""
    return re.compile(f'[{re.escape(delimiter)}"\\r\\n]|^\\s|\\s$')


def patch(doc: CsvDoc, writes: dict[int, dict[int, str]]) -> str:
    """The file text with `writes` (1-based record number → column → text) applied."""
    records = list(doc.records)
    delim = doc.delimiter
    quote_one = quoter(doc)
    empty = '""' if doc.quote_all else ""
    for number in sorted(writes):
        row = writes[number]
        if not row:
            continue
        index = number - 1
        while index >= len(records):
            # A record past the end: make sure the previous one is terminated first.
            if records and not split_terminator(records[-1])[1]:
                records[-1] += doc.newline
            records.append(doc.newline)
        body, term = split_terminator(records[index])
        have = len(doc.fields[index]) if index < len(doc.fields) else 0
        if min(row) >= have:
            # Common case: only fields after the record's last one; keep the body as is.
            extra = [
                quote_one(doc.fit(row[c])) if c in row else empty for c in range(have, max(row) + 1)
            ]
            body = body + delim + delim.join(extra) if have else delim.join(extra)
        else:
            raw = split_raw(body, delim) if body else []
            if len(raw) != have:
                # Lenient-mode oddities (stray quotes): re-quote the parsed values instead.
                raw = [quote_one(v) for v in doc.fields[index]]
            for col, value in sorted(row.items()):
                while len(raw) <= col:
                    raw.append(empty)
                raw[col] = quote_one(doc.fit(value))
            body = delim.join(raw)
        records[index] = body + term
    return "".join(records)


def dump_rows(doc: CsvDoc, rows: list[list[object]]) -> str:
    """Serialise whole rows (a results table) in the file's dialect, each line terminated."""
    quote_one = quoter(doc)  # a results table has tens of thousands of fields
    fit = None if doc.encodes_any_text else doc.fit
    lines = []
    for row in rows:
        cells = []
        for value in row:
            text = "" if value is None else value if type(value) is str else str(value)
            cells.append(quote_one(fit(text) if fit is not None else text))
        lines.append(doc.delimiter.join(cells) + doc.newline)
    return "".join(lines)


def neutralise(text: str) -> str:
    """A value batchgen writes, made inert the way OWASP recommends against CSV injection.

    Text a spreadsheet would read as a formula (see FORMULA_STARTS) gets a leading single
    quote, which Excel and LibreOffice show as text.
    """
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def restore(text: str) -> str:
    """A value as batchgen meant it before `neutralise`."""
    return text[1:] if text.startswith("'") and text[1:].startswith(FORMULA_STARTS) else text
