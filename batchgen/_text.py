"""Text every sheet format can hold: what XML 1.0 (and so .xlsx) cannot carry is dropped."""

from __future__ import annotations

import re

# Characters XML 1.0 cannot carry at all (control characters, lone surrogates, U+FFFE/F),
# listed rather than as the complement of the legal ones, whose class is far slower to compile
ILLEGAL_XML_CHARS = "\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff"
_ILLEGAL_RE = re.compile(f"[{ILLEGAL_XML_CHARS}]")


def strip_illegal(text: str) -> str:
    """Remove characters that XML 1.0 cannot represent."""
    if text.isascii() and text.isprintable():  # most cells: nothing to look for
        return text
    return _ILLEGAL_RE.sub("", text)
