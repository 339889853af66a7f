"""Cell styles that wrap: derived from the workbook's own, added to xl/styles.xml as needed.

A cell holding one line per job must wrap, or LibreOffice draws its lines over the rows
below. Each cell keeps its look (font, fill, border, number format): its style (an `xf` of
`cellXfs`) is copied once, with `<alignment wrapText="1"/>`, and appended; every other byte
of the styles part is kept.
"""

from __future__ import annotations

import re

from batchgen._xlsx.markup import ATTRS, NS_MAIN, attr, drop_attr

_CELL_XFS_RE = re.compile(r"<([\w.-]+:)?cellXfs(?=[\s/>])(" + ATTRS + r")(/?)>", re.S)
_WRAPS_RE = re.compile(r"\swrapText\s*=\s*[\"'](?:1|true)[\"']")
# The styles part of a workbook that has none (every cell plain), as Excel's defaults are
PLAIN_STYLES = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
    f'<styleSheet xmlns="{NS_MAIN}"><fonts count="1"><font><sz val="11"/>'
    '<name val="Calibri"/><family val="2"/></font></fonts><fills count="2"><fill>'
    '<patternFill patternType="none"/></fill><fill><patternFill patternType="gray125"/>'
    '</fill></fills><borders count="1"><border><left/><right/><top/><bottom/><diagonal/>'
    '</border></borders><cellStyleXfs count="1"><xf numFmtId="0" fontId="0" fillId="0" '
    'borderId="0"/></cellStyleXfs><cellXfs count="1"><xf numFmtId="0" fontId="0" fillId="0" '
    'borderId="0" xfId="0"/></cellXfs><cellStyles count="1"><cellStyle name="Normal" '
    'xfId="0" builtinId="0"/></cellStyles></styleSheet>'
)


class WrapStyles:
    """The workbook's cell styles, and the wrapping copies made of them so far.

    `xml` is the workbook's styles part; None for a workbook without one (a plain one is
    then made, to be added as a new part).
    """

    def __init__(self, xml: str | None) -> None:
        self.new_part = xml is None
        xml = PLAIN_STYLES if xml is None else xml
        self._xml = xml
        self._made: dict[str | None, str | None] = {}  # original s → the s that wraps
        self._added: list[str] = []  # new <xf> elements, in index order
        found = _CELL_XFS_RE.search(xml)
        self._prefix = (found.group(1) or "") if found else ""
        self._xfs: list[str] = []
        self._open: tuple[int, int] | None = None  # span of the <cellXfs> start tag
        self._close = -1  # where </cellXfs> starts
        if found is None or found.group(3) == "/":
            return  # no cell styles to copy: cells are left as they are
        p = re.escape(self._prefix)
        close = re.compile(f"</{p}cellXfs\\s*>").search(xml, found.end())
        if close is None:
            return
        self._open, self._close = (found.start(), found.end()), close.start()
        xf = re.compile(f"<{p}xf(?=[\\s/>])({ATTRS})(?:/>|>(.*?)</{p}xf\\s*>)", re.S)
        self._xfs = [m.group(0) for m in xf.finditer(xml, found.end(), close.start())]

    def wrapped(self, style: str | None) -> str | None:
        """The style (`s`) a cell of style `style` gets so that its text wraps."""
        if style in self._made:
            return self._made[style]
        index = int(style) if style is not None and style.isdigit() else 0 if style is None else -1
        if not 0 <= index < len(self._xfs):
            made = style  # a style the workbook does not have: nothing to copy
        elif _WRAPS_RE.search(self._xfs[index]):
            made = style if style is not None else "0"
        else:
            self._added.append(self._wrapping(self._xfs[index]))
            made = str(len(self._xfs) + len(self._added) - 1)
        self._made[style] = made
        return made

    def _wrapping(self, xf: str) -> str:
        """A copy of one <xf> element with wrapping alignment."""
        p = self._prefix
        head = re.match(f"<{re.escape(p)}xf({ATTRS})(/?)>", xf, re.S)
        assert head is not None
        attrs = drop_attr(head.group(1), "applyAlignment") + ' applyAlignment="1"'
        body = "" if head.group(2) else xf[head.end() : xf.rindex("<")]
        align = re.search(f"<{re.escape(p)}alignment(?=[\\s/>])({ATTRS})(/?)>", body, re.S)
        if align is None:
            body = f'<{p}alignment wrapText="1"/>' + body
        else:
            wrap = drop_attr(align.group(1), "wrapText") + ' wrapText="1"'
            body = body[: align.start(1)] + wrap + body[align.end(1) :]
        return f"<{p}xf{attrs}>{body}</{p}xf>"

    @property
    def changed(self) -> bool:
        """Whether any style was added (the styles part must be written)."""
        return bool(self._added)

    def xml(self) -> str:
        """The styles part with the added styles after the workbook's own."""
        if not self._added or self._open is None:
            return self._xml
        start, end = self._open
        tag = self._xml[start:end]
        if attr(tag, "count") is not None:
            count = len(self._xfs) + len(self._added)
            tag = re.sub(r"(\scount\s*=\s*)(?:\"[^\"]*\"|'[^']*')", rf'\g<1>"{count}"', tag)
        xml, close = self._xml, self._close
        return xml[:start] + tag + xml[end:close] + "".join(self._added) + xml[close:]
