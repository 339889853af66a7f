"""The XML text of a workbook: namespaces, escaping, cell references, attributes."""

from __future__ import annotations

import functools
import re
import zipfile
import zlib

from batchgen._text import ILLEGAL_XML_CHARS, strip_illegal

NS_MAIN = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
NS_REL = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
NS_PKG_REL = "http://schemas.openxmlformats.org/package/2006/relationships"
REL_WORKSHEET = NS_REL + "/worksheet"
REL_CALC_CHAIN = NS_REL + "/calcChain"
REL_STYLES = NS_REL + "/styles"
REL_OFFICE_DOC = NS_REL + "/officeDocument"
CT_WORKSHEET = "application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"
CT_STYLES = "application/vnd.openxmlformats-officedocument.spreadsheetml.styles+xml"
# One XML attribute list; quoted values may contain '>' so they are matched whole.
ATTRS = r"(?:[^>\"']|\"[^\"]*\"|'[^']*')*?"
_REF_RE = re.compile(r"^\$?([A-Za-z]{1,3})\$?(\d+)$")
_NEEDS_ESCAPE_RE = re.compile(f"[&<>\r{ILLEGAL_XML_CHARS}]|_x")
# Excel and calamine decode _xHHHH_ in strings; escaping the underscore keeps such text literal.
_X_ESCAPE_RE = re.compile(r"_(x[0-9A-Fa-f]{4}_)")
_ATTR_RES: dict[str, re.Pattern[str]] = {}
# What a damaged archive entry raises while being read.
ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, OSError, EOFError, NotImplementedError)


class XlsxError(Exception):
    """The workbook cannot be read or patched; the message names the problem."""


@functools.lru_cache(maxsize=4096)
def col_letter(index: int) -> str:
    """0-based column index → Excel letters (0 → A)."""
    letters = ""
    n = index + 1
    while n:
        n, rem = divmod(n - 1, 26)
        letters = chr(65 + rem) + letters
    return letters


def col_index(letters: str) -> int:
    """Excel letters → 0-based column index (A → 0)."""
    n = 0
    for ch in letters.upper():
        n = n * 26 + ord(ch) - 64
    return n - 1


def attr(attrs: str, name: str) -> str | None:
    """Value of attribute `name` (no prefix) in an attribute string, as written."""
    pattern = _ATTR_RES.get(name)
    if pattern is None:
        pattern = re.compile(r"(?:^|\s)" + re.escape(name) + r"\s*=\s*(?:\"([^\"]*)\"|'([^']*)')")
        _ATTR_RES[name] = pattern
    m = pattern.search(attrs)
    if not m:
        return None
    return m.group(1) if m.group(1) is not None else m.group(2)


def drop_attr(attrs: str, name: str) -> str:
    """Remove attribute `name` from an attribute string."""
    return re.sub(r"\s+" + re.escape(name) + r"\s*=\s*(?:\"[^\"]*\"|'[^']*')", "", attrs)


def escape_text(text: str) -> str:
    """Escape text for element content; CR as a reference so XML parsers keep it."""
    if _NEEDS_ESCAPE_RE.search(text) is None:
        return text
    text = _X_ESCAPE_RE.sub(r"_x005F_\1", strip_illegal(text))
    return (
        text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\r", "&#13;")
    )


def escape_attr(text: str) -> str:
    """Escape text for a double-quoted attribute value."""
    return (
        text.replace("&", "&amp;").replace("<", "&lt;").replace('"', "&quot;").replace(">", "&gt;")
    )


def parse_ref(ref: str) -> tuple[int, int]:
    """'K5' → (row 5, column index 10)."""
    m = _REF_RE.match(ref.strip())
    if not m:
        raise XlsxError(f"cannot patch: unreadable cell reference {ref!r}")
    return int(m.group(2)), col_index(m.group(1))


def cell_xml(prefix: str, ref: str, style: str | None, value: str | None) -> str:
    """One cell holding `value` as an inline string (or no value when value is empty)."""
    s_attr = f' s="{escape_attr(style)}"' if style is not None else ""
    if not value:
        return f'<{prefix}c r="{ref}"{s_attr}/>'
    return (
        f'<{prefix}c r="{ref}"{s_attr} t="inlineStr"><{prefix}is>'
        f'<{prefix}t xml:space="preserve">{escape_text(value)}</{prefix}t>'
        f"</{prefix}is></{prefix}c>"
    )
