"""A CSV's text encoding: byte-order marks, then UTF-8, then charset-normalizer, or a refusal.

Office programs save CSVs in the author's Windows code page without saying which; reading
them as the wrong one sends garbled prompts that are paid for. charset-normalizer measures
how plausible each decoding is (mess and language coherence), which beats a guess by hand;
batchgen accepts its answer only when no other plausible decoding reads differently.
"""

from __future__ import annotations

import codecs
import unicodedata
from dataclasses import dataclass

# Code pages an office program saves CSVs in; the order breaks ties between equal readings.
OFFICE_ENCODINGS = (
    "cp1252",
    "cp1251",
    "cp932",
    "cp1250",
    "cp1253",
    "cp1254",
    "cp1255",
    "cp1256",
    "cp1257",
    "cp1258",
    "gb18030",
    "cp949",
    "big5",
)
_PLAUSIBLE_MARGIN = 0.04  # extra mess (charset-normalizer's chaos) still counted plausible
_COHERENCE_LEAD = 0.04  # a language-coherence lead that settles differing readings
_MIN_COHERENCE = 0.2
_LATIN = frozenset({"cp1252", "cp1250", "cp1254", "cp1257", "cp1258"})
# Cyrillic or Latin bytes read as Shift-JIS come out as halfwidth katakana, which Japanese
# authors rarely type: such a reading counts as messier.
_KATAKANA_PENALTY = 0.1


class EncodingUnsure(Exception):
    """The encoding cannot be told; the message lists the readings."""


@dataclass(frozen=True)
class Decoded:
    """The file's text, how to encode it back, and how it was found."""

    bom: bytes
    encoding: str
    errors: str
    text: str
    how: str  # "byte-order mark", "UTF-8", "detected", "given"


def decode(data: bytes, encoding: str | None = None) -> Decoded:
    """Decode a CSV file's bytes, or raise EncodingUnsure / UnicodeDecodeError."""
    bom, body = _bom(data)
    if encoding is not None:
        enc = codecs.lookup(encoding).name
        if bom and not _is_unicode(enc):
            bom, body = b"", data
        if bom and bom_encoding(bom) != _family(enc):
            enc = bom_encoding(bom)
        return Decoded(bom, enc, _errors(enc), body.decode(enc), "given")
    if bom:
        enc = bom_encoding(bom)
        return Decoded(bom, enc, _errors(enc), body.decode(enc, _errors(enc)), "byte-order mark")
    try:
        return Decoded(b"", "utf-8", "surrogateescape", data.decode("utf-8"), "UTF-8")
    except UnicodeDecodeError:
        pass
    return _detect(data)


def _bom(data: bytes) -> tuple[bytes, bytes]:
    for bom in (codecs.BOM_UTF8, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE):
        if data.startswith(bom):
            return bom, data[len(bom) :]
    return b"", data


def bom_encoding(bom: bytes) -> str:
    """The encoding a byte-order mark announces."""
    return {
        codecs.BOM_UTF8: "utf-8",
        codecs.BOM_UTF16_LE: "utf-16-le",
        codecs.BOM_UTF16_BE: "utf-16-be",
    }[bom]


def _is_unicode(enc: str) -> bool:
    return enc.replace("_", "-").startswith(("utf-8", "utf-16", "utf-32", "utf8"))


def _family(enc: str) -> str:
    enc = enc.replace("_", "-")
    if enc == "utf-16":
        return "utf-16-le"
    return "utf-8" if enc in ("utf-8-sig", "utf8") else enc


def _errors(enc: str) -> str:
    # surrogateescape keeps undecodable bytes of a UTF-8 file as they were on write
    return "surrogateescape" if enc == "utf-8" else "strict"


def _mess(text: str, chaos: float) -> float:
    if any("\uff61" <= ch <= "\uff9f" for ch in text):
        return chaos + _KATAKANA_PENALTY
    return chaos


def _detect(data: bytes) -> Decoded:
    from charset_normalizer import from_bytes  # deferred: only a non-UTF-8 CSV needs it

    readings: dict[str, tuple[str, float, float]] = {}  # text → (encoding, mess, coherence)
    for match in from_bytes(data, cp_isolation=list(OFFICE_ENCODINGS)):
        enc = codecs.lookup(match.encoding).name
        try:
            text = data.decode(enc)
        except UnicodeDecodeError:
            continue
        mess = _mess(text, match.chaos)
        known = readings.get(text)
        if known is None or _rank(enc) < _rank(known[0]):
            readings[text] = (enc, mess, match.coherence)
    if not readings:
        raise EncodingUnsure("is neither UTF-8 nor any code page batchgen knows")
    least = min(mess for _, mess, _ in readings.values())
    plausible = sorted(
        ((text, *r) for text, r in readings.items() if r[1] <= least + _PLAUSIBLE_MARGIN),
        key=lambda item: (-item[3], item[2], _rank(item[1])),
    )
    top = plausible[0]
    rivals = [
        p for p in plausible[1:] if top[3] < _MIN_COHERENCE or top[3] - p[3] < _COHERENCE_LEAD
    ]
    western = next((p for p in [top, *rivals] if p[1] == "cp1252"), None)
    if western is not None and all(p[1] in _LATIN for p in [top, *rivals]):
        # Latin code pages differ in a few accented letters that the same coherence cannot
        # tell apart: then Western European, the commonest
        plausible, rivals = [western], []
    if rivals:
        raise EncodingUnsure(_readings_text([top, *rivals][:3]))
    text, enc = plausible[0][0], plausible[0][1]
    for other in OFFICE_ENCODINGS[: _rank(enc)]:  # the commoner code page of equal readings
        try:
            if data.decode(other) == text:
                enc = codecs.lookup(other).name
                break
        except UnicodeDecodeError:
            continue
    return Decoded(b"", enc, "strict", text, "detected")


def _rank(enc: str) -> int:
    names = [codecs.lookup(e).name for e in OFFICE_ENCODINGS]
    return names.index(enc) if enc in names else len(names)


def _readings_text(plausible: list[tuple[str, str, float, float]]) -> str:
    """'cp1251 reads "Кроссовки", cp1253 reads "Êñïóóïâêè"' at the first place they differ."""
    texts = [p[0] for p in plausible]
    at = next(
        (i for i in range(min(map(len, texts))) if len({t[i] for t in texts}) > 1),
        0,
    )
    start = at  # from the start of the word they differ in (the same bytes before it)
    while start > 0 and at - start < 8 and texts[0][start - 1].isalnum():
        start -= 1
    parts = []
    for text, enc, _, _ in plausible:
        line = text[start : start + 16].splitlines()[0] if text[start:] else ""
        sample = "".join(ch for ch in line if unicodedata.category(ch)[0] != "C")
        parts.append(f'{enc} reads "{sample}"')
    return "; ".join(parts)
