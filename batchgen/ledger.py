"""The ledger: every job and its request_id in SQL (a SQLite file by default, or PostgreSQL).

Statements are plain SQL run on the driver's cursor (batchgen._database); the schema is the
Alembic migrations (batchgen.schema). The job records (and what the sheet shows of them) are
batchgen._records', the run locks and cancel requests batchgen._runlocks', both on the
connection and transactions of batchgen._store.
"""

from __future__ import annotations

import os
from pathlib import Path

from batchgen._database import sqlite_url
from batchgen._records import Claim, JobRecord, JobStore
from batchgen._runlocks import HOST, STALE_LOCK_SECONDS, CancelRequests, LockInfo, RunLocks

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


class Ledger(JobStore, RunLocks):
    """A ledger database (migrated to the newest schema when opened): jobs, plan marks, locks."""


def ledger_url(db: str | None, sheet: Path) -> str:
    """`--db` (a path or SQLAlchemy URL), else `BATCHGEN_DB`, else a file beside the sheet."""
    value = db or os.environ.get("BATCHGEN_DB")
    if not value:
        value = str(sheet.with_name(sheet.name + ".batchgen.db"))
    if "://" in value:
        return value
    return sqlite_url(str(Path(value).expanduser().resolve()))
