"""One run per sheet file on this machine, however the sheet is named.

The ledger's run lock is keyed by the sheet's path and lives in whichever ledger the run uses,
so the same file reached by a symlink, a hard link, `./x.csv` against its absolute path, or a
job file with its own `db` slipped past it. This lock lives with the sheet instead: OS file
locks (flock) on two files in a per-user lock folder, one named from the sheet's real path and
one from its file identity (device and inode). The kernel releases them when the process ends,
even by kill -9, so a lock is never stale. Write-back replaces the sheet with a new file (a new
inode): the run locks the new identity as soon as it has written it, and keeps the old one.
A sheet saved over by a person frees its inode number for any new file: an identity lock is
not taken as another run's when that run's sheet is now another file and this one was
written after it started (see _reused).
The ledger's lock remains for runs on other machines sharing one PostgreSQL ledger.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from batchgen.errors import SheetLockedError
from batchgen.paths import shown

try:
    import fcntl
except ImportError:  # Windows: no flock; the ledger's lock alone guards the sheet
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger("batchgen")
_ATTEMPTS = 5  # a lock file another run removed between our open and our lock: open it anew


def lock_dir() -> Path | None:
    """The per-user folder of lock files (made if missing), or None if none can be made.

    From the user's entry in the password database, not $HOME or $XDG_*: a cron job and a
    shell of the same user must agree on it.
    """
    uid = os.getuid()
    candidates = [Path("/tmp") / f"batchgen-{uid}" / "locks"]
    try:
        import pwd

        home = Path(pwd.getpwuid(uid).pw_dir)
        candidates.insert(0, home / ".cache" / "batchgen" / "locks")
    except (ImportError, KeyError):
        pass
    for folder in candidates:
        try:
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            info = folder.stat()
        except OSError:
            continue
        if info.st_uid == uid and not info.st_mode & 0o022 and os.access(folder, os.W_OK):
            return folder  # ours alone: nobody else can make or remove our lock files
    return None


class SheetLock:
    """The run lock of one sheet file on this machine (see the module's docstring)."""

    def __init__(self, sheet: Path, folder: Path | None) -> None:
        self.sheet = sheet
        self.real = os.path.realpath(sheet)
        self._folder = folder
        self._held: dict[str, int] = {}  # lock file path -> open descriptor holding its flock
        self._links: dict[str, int] = {}  # identity lock file -> the file's link count then
        self._mutex = threading.Lock()  # the checkpoint thread follows write-backs too

    @classmethod
    def acquire(cls, sheet: Path) -> SheetLock:
        """Lock `sheet` by real path and by identity, or raise SheetLockedError (exit 75)."""
        folder = lock_dir() if fcntl is not None else None
        lock = cls(sheet, folder)
        if folder is None:
            if fcntl is not None:
                log.warning("no folder for lock files: only the ledger's lock guards this sheet")
            return lock
        try:
            lock._take(lock._path_name())
            identity, links = lock._identity()
            if identity is not None and lock._take(identity, identity=True):
                lock._links[identity] = links
        except BaseException:
            lock.release()
            raise
        return lock

    def follow(self) -> None:
        """Lock the sheet's current file identity too: write-back replaced the file.

        The replaced file's identity stays locked while another name (a hard link) may still
        reach it; a file the sheet's path alone named is gone, and its inode number may soon
        belong to an unrelated file, so its lock is let go.
        """
        if self._folder is None:
            return
        with self._mutex:
            identity, links = self._identity()
            if identity is None or identity in self._held:
                return
            try:
                if not self._take(identity, identity=True):
                    return
            except SheetLockedError as exc:  # only a run started in the instant since
                log.warning("%s", exc)
                return
            for old, count in list(self._links.items()):
                if count <= 1:
                    del self._links[old]
                    _let_go(old, self._held.pop(old))
            self._links[identity] = links

    def release(self) -> None:
        """Remove and unlock every lock file (removed while still locked, see _take)."""
        with self._mutex:
            held, self._held = self._held, {}
        self._links = {}
        for name, fd in held.items():
            _let_go(name, fd)

    def _path_name(self) -> str:
        assert self._folder is not None
        digest = hashlib.sha256(self.real.encode("utf-8", "surrogateescape")).hexdigest()
        return str(self._folder / f"sheet-{digest[:40]}.lock")

    def _identity(self) -> tuple[str | None, int]:
        """The lock file named from the sheet's (st_dev, st_ino), and its link count."""
        assert self._folder is not None
        try:
            info = os.stat(self.real)
        except OSError:
            return None, 0  # the sheet is gone; its path is still locked
        return str(self._folder / f"file-{info.st_dev}-{info.st_ino}.lock"), info.st_nlink

    def _take(self, name: str, *, identity: bool = False) -> bool:
        """flock `name` without waiting (True), or raise SheetLockedError naming the holder.

        A holder removes its lock file before unlocking it: a file we locked that is no
        longer the one at `name` was released meanwhile, and is opened anew. An identity
        lock whose holder's file was since replaced (saved over by another program) and
        whose inode number now names a file written after that run started is another
        file's: it is not taken (False), and the path lock alone guards the sheet.
        """
        assert fcntl is not None
        for _ in range(_ATTEMPTS):
            fd = os.open(name, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd)
                os.close(fd)
                if identity and _reused(holder, self.real):
                    return False
                raise SheetLockedError(self._held_message(holder)) from None
            except BaseException:
                os.close(fd)
                raise
            try:
                current = os.stat(name)
            except FileNotFoundError:
                current = None
            mine = os.fstat(fd)
            if current is None or (current.st_dev, current.st_ino) != (mine.st_dev, mine.st_ino):
                os.close(fd)
                continue
            _write_holder(fd, self.real)
            self._held[name] = fd
            return True
        raise SheetLockedError(f"{shown(self.sheet)} is being started and stopped by other runs")

    def _held_message(self, holder: dict[str, Any]) -> str:
        pid, sheet = holder.get("pid"), holder.get("sheet")
        started = holder.get("started_at")
        who = f"process {pid}" if pid else "another process"
        when = (
            f" (started {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(started))})"
            if isinstance(started, int | float)
            else ""
        )
        same = f", as {shown(sheet)}" if sheet and sheet != self.real else ""
        return f"{shown(self.sheet)} is already being run by {who} on this machine{when}{same}"


def _reused(holder: dict[str, Any], ours: str) -> bool:
    """True when the holder's sheet is no longer the file at `ours` and that file was written
    after the holder locked it: the same inode number, reused for an unrelated file.

    A file the holder still reaches by a hard link was written before its run started.
    """
    sheet, started = holder.get("sheet"), holder.get("started_at")
    if not isinstance(sheet, str) or not isinstance(started, int | float):
        return False
    try:
        mine = os.stat(ours)
    except OSError:
        return False
    try:
        theirs = os.stat(sheet)
        if (theirs.st_dev, theirs.st_ino) == (mine.st_dev, mine.st_ino):
            return False  # the very file the holder runs
    except OSError:
        pass  # the holder's sheet is gone
    return mine.st_mtime > started


def _let_go(name: str, fd: int) -> None:
    """Remove a lock file we hold, then unlock it (see SheetLock._take)."""
    with contextlib.suppress(OSError):
        os.unlink(name)
    os.close(fd)


def _write_holder(fd: int, sheet: str) -> None:
    data = json.dumps({"pid": os.getpid(), "sheet": sheet, "started_at": time.time()})
    os.ftruncate(fd, 0)
    os.pwrite(fd, data.encode("utf-8", "surrogateescape"), 0)


def _read_holder(fd: int) -> dict[str, Any]:
    try:
        data = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
