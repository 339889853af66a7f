"""Limits a workbook is checked against before it is read: a small file must not cost gigabytes.

calamine (through pandas) builds a worksheet as one dense block from A1 to its last cell, and
inflates every part it reads in full: one cell at XFD1048576 asks for hundreds of GB, and a
few MB of zip can unpack to many GB. So, before either runs, the package's declared sizes
and packing ratios are checked, every XML part is inflated once by zipfile (which stops at the
declared size and checks the CRC, so a part larger than it says fails), and the worksheet's
dimension and cell references are checked against the limits below (see the README).
"""

from __future__ import annotations

import io
import re
import zipfile

from batchgen._xlsx.markup import XlsxError, col_index, col_letter

MAX_ROWS = 1_000_000
MAX_COLUMNS = 1_000  # column ALL
MAX_CELLS = 20_000_000  # rows × columns of the block from A1 to the last cell
MAX_UNPACKED = 400 * 2**20  # bytes, every part of the package together
MAX_RATIO = 200  # unpacked / packed, for a part over RATIO_FLOOR
RATIO_FLOOR = 2**20
MAX_PARTS = 10_000
_CHUNK = 2**20

_DIMENSION = re.compile(rb"<(?:[\w.-]+:)?dimension\b[^>]*?\sref\s*=\s*[\"']([^\"']*)[\"']")
# each starts with a literal (`r=`), which the regex engine searches for in C
_BIG_ROW = re.compile(rb"r=[\"']\$?[A-Za-z]{0,3}\$?(\d{7,})[\"']")
_WIDE_COL = re.compile(rb"r=[\"']\$?([A-Za-z]{2,})\$?\d")
_ROW_TAG = re.compile(rb"<(?:[\w.-]+:)?row\b[^>]*?\sr\s*=\s*[\"'](\d+)[\"']")
_REF = re.compile(r"^\$?([A-Za-z]{1,3})\$?(\d+)$")
_LIMITS = (
    f"batchgen reads at most {MAX_ROWS:,} rows, {MAX_COLUMNS:,} columns "
    f"and {MAX_CELLS:,} cells (rows × columns)"
)


def check_package(data: bytes) -> None:
    """Raise XlsxError if the zip's parts are too many, too big or packed like a zip bomb."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            infos = zf.infolist()
            _check_sizes(infos)
            for info in infos:
                name = info.filename.lower()
                # what calamine reads on opening; a worksheet is checked when it is read
                if name.endswith((".xml", ".rels")) and "/worksheets/" not in name:
                    _inflate(zf, info, keep=False)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError) as exc:
        raise XlsxError(f"is not a valid .xlsx workbook ({exc})") from exc


def _check_sizes(infos: list[zipfile.ZipInfo]) -> None:
    """The central directory's declared sizes against the limits (nothing is inflated)."""
    if len(infos) > MAX_PARTS:
        raise XlsxError(f"holds {len(infos):,} parts; batchgen reads at most {MAX_PARTS:,}")
    total = sum(info.file_size for info in infos)
    if total > MAX_UNPACKED:
        raise XlsxError(
            f"unpacks to {total / 2**20:,.0f} MB; batchgen reads workbooks of at most "
            f"{MAX_UNPACKED / 2**20:,.0f} MB unpacked"
        )
    for info in infos:
        ratio = info.file_size / max(info.compress_size, 1)
        if info.file_size > RATIO_FLOOR and ratio > MAX_RATIO:
            raise XlsxError(
                f"part {info.filename} unpacks to {ratio:,.0f} times its packed size, like a "
                f"zip bomb; batchgen reads parts packed at most {MAX_RATIO} to 1"
            )


def _inflate(zf: zipfile.ZipFile, info: zipfile.ZipInfo, *, keep: bool) -> bytes:
    """A part's bytes (or b'' with keep=False), never more than its declared size."""
    pieces: list[bytes] = []
    with zf.open(info) as handle:  # stops at file_size, then checks the CRC
        while chunk := handle.read(_CHUNK):
            if keep:
                pieces.append(chunk)
    return b"".join(pieces)


def check_worksheet(data: bytes, part: str, name: str) -> None:
    """Raise XlsxError if worksheet `name` (zip entry `part`) reaches past the limits."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            xml = _inflate(zf, zf.getinfo(part), keep=True)
    except (KeyError, zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise XlsxError(f"cannot read worksheet {name!r} ({exc})") from exc
    rows, columns = _extent(xml)
    if rows > MAX_ROWS or columns > MAX_COLUMNS or rows * columns > MAX_CELLS:
        corner = f"{col_letter(max(columns, 1) - 1)}{max(rows, 1)}"
        raise XlsxError(
            f"worksheet {name!r} reaches cell {corner} ({rows:,} rows, {columns:,} columns); "
            f"{_LIMITS}: delete the stray cells past the data or split the sheet"
        )


def _extent(xml: bytes) -> tuple[int, int]:
    """The last row and column any cell reference (or the declared dimension) reaches."""
    rows = columns = 0
    dimension = _DIMENSION.search(xml)
    if dimension:
        for ref in dimension.group(1).decode("ascii", "replace").split(":"):
            m = _REF.match(ref.strip())
            if m:
                rows = max(rows, int(m.group(2)))
                columns = max(columns, col_index(m.group(1).upper()) + 1)
    # rows are in order: the last row tag (near the end) names the last row
    tail = xml[-65536:]
    last = [int(n) for n in _ROW_TAG.findall(tail)] or [int(n) for n in _ROW_TAG.findall(xml)]
    rows = max([rows, *last])
    rows = max([rows, *(int(n) for n in _BIG_ROW.findall(xml))])  # a row past 999,999
    # references past column Z (most sheets have none; a wide one has a few per row)
    wide = {letters.upper() for letters in _WIDE_COL.findall(xml)}
    columns = max(columns, max((col_index(w.decode("ascii")) + 1 for w in wide), default=0))
    return rows, columns
