"""The ledger: every job and its request_id in SQL (a SQLite file by default, or PostgreSQL).

Statements are plain SQL run on the driver's cursor (batchgen._database); the schema is the
Alembic migrations (batchgen.schema). The job records (and what the sheet shows of them) are
batchgen._records', the run locks and cancel requests batchgen._runlocks', both on the
connection and transactions of batchgen._store.
"""

from __future__ import annotations

import os
from pathlib import Path

from batchgen._database import is_sqlite_url, sqlite_path, sqlite_url
from batchgen._records import Claim, JobRecord, JobStore
from batchgen._rerunmarks import RerunMarks
from batchgen._runlocks import HOST, STALE_LOCK_SECONDS, CancelRequests, LockInfo, RunLocks
from batchgen.errors import LedgerError

__all__ = [
    "HOST",
    "STALE_LOCK_SECONDS",
    "CancelRequests",
    "Claim",
    "JobRecord",
    "Ledger",
    "LockInfo",
    "ledger_url",
]


class Ledger(JobStore, RunLocks, RerunMarks):
    """A ledger database (migrated to the newest schema when opened): jobs, marks, locks."""


def ledger_url(db: str | None, sheet: Path) -> str:
    """`--db` (a path or SQLAlchemy URL), else `BATCHGEN_DB`, else a file beside the sheet."""
    value = db or os.environ.get("BATCHGEN_DB")
    if not value:
        value = str(sheet.with_name(sheet.name + ".batchgen.db"))
    if "://" in value:
        return value
    return sqlite_url(str(Path(value).expanduser().resolve()))


def ledger_exists(url: str) -> bool:
    """Whether a ledger may be there to open: a SQLite file that exists, or a server's URL."""
    if not is_sqlite_url(url):
        return True
    try:
        return Path(sqlite_path(url)).is_file()
    except LedgerError:
        return False
