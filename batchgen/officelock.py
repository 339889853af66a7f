"""Office programs' lock files beside a sheet: who has it open, so a run never writes under them.

LibreOffice writes `.~lock.NAME#` (one CSV line: name, user, host, date, profile) and Excel
writes an owner file `~$NAME` (the first two characters of a long name replaced) that
starts with the user's name. Whoever holds the file will save over anything batchgen wrote.
"""

from __future__ import annotations

import contextlib
import csv
import io
from dataclasses import dataclass
from pathlib import Path

from batchgen.errors import SheetInUseError

_MAX_LOCK_BYTES = 4096


@dataclass(frozen=True)
class OfficeLock:
    """A lock file beside a sheet and what it says about its holder."""

    lock_file: Path
    program: str  # "LibreOffice" or "Excel"
    holder: str  # "Jane Doe (jane on laptop-7, since 06.12.2026 01:50)", or "" when unsaid

    def message(self, sheet: Path, shown: str) -> str:
        """One line: who holds the sheet and what to do."""
        who = f" by {self.holder}" if self.holder else ""
        return (
            f"{shown} is open in {self.program}{who} (lock file {self.lock_file.name}); it "
            "would save over the results: close it there and run again, or write the results "
            f"elsewhere with --output. If nobody has it open, delete {self.lock_file.name}. "
            "Nothing was sent"
        )


def find_lock(sheet: Path) -> OfficeLock | None:
    """The LibreOffice or Excel lock file beside `sheet`, if there is one."""
    name = sheet.name
    folder = sheet.parent
    libre = folder / f".~lock.{name}#"
    if libre.is_file():
        return OfficeLock(libre, "LibreOffice", _libreoffice_holder(_head(libre)))
    candidates = [folder / f"~${name}"]
    if len(name) > 2:
        candidates.append(folder / f"~${name[2:]}")  # Excel's owner file of a longer name
    for owner in candidates:
        if owner.is_file():
            return OfficeLock(owner, "Excel", _excel_holder(_head(owner)))
    return None


def refuse_if_open(sheet: Path, shown: str) -> None:
    """Raise SheetInUseError (exit 75) when an office program holds `sheet`."""
    lock = find_lock(sheet)
    if lock is not None:
        raise SheetInUseError(lock.message(sheet, shown))


def _head(path: Path) -> bytes:
    with contextlib.suppress(OSError), path.open("rb") as handle:
        return handle.read(_MAX_LOCK_BYTES)
    return b""


def _libreoffice_holder(data: bytes) -> str:
    """`Jane Doe (jane on laptop-7, since 06.12.2026 01:50)` from `,Jane Doe,laptop-7,...`."""
    text = data.decode("utf-8", "replace").strip().rstrip(";")
    try:
        fields = next(csv.reader(io.StringIO(text)))
    except (StopIteration, csv.Error):
        return ""
    fields = [f.strip() for f in fields] + [""] * 4
    # LockedBy (the name set in Tools > Options, often empty), system user, host, date
    named, user, host, since = fields[0], fields[1], fields[2], fields[3]
    details = ", ".join(
        x
        for x in (
            f"{user} on {host}" if user and host else user or host,
            since and f"since {since}",
        )
        if x
    )
    person = named or user
    if not person:
        return ""
    return f"{person} ({details})" if details and details != person else person


def _excel_holder(data: bytes) -> str:
    """The user name an Excel owner file holds: its UTF-16 copy, else the code-page one.

    The file starts with a length byte and the name in the Windows code page (cp1251 for a
    Russian user, which read as cp1252 would be garbled), padded to 54 bytes; a UTF-16 copy
    of the name follows (its length in the next two bytes), so that copy is read first.
    """
    if len(data) > 56:
        size = int.from_bytes(data[54:56], "little")
        name = data[56 : 56 + 2 * size].decode("utf-16-le", "replace").strip()
        if 0 < size <= 54 and name.isprintable() and "\ufffd" not in name:
            return name
    if not data:
        return ""
    size = data[0]
    if 0 < size <= 53 and len(data) > size:
        name = data[1 : 1 + size].decode("cp1252", "replace").strip()
        if name.isprintable() and name:
            return name
    return ""
