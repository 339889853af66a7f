"""Run locks in the ledger: one live run per sheet, renewed by heartbeats, taken over only
from a run that is gone (its process dead on this host, or silent elsewhere)."""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from batchgen._store import Store, insert_new
from batchgen.errors import SheetLockedError
from batchgen.paths import shown

HOST = socket.gethostname()
# A lock whose holder on another host has not beaten for this long is taken over.
STALE_LOCK_SECONDS = 120.0
_LOCK_COLUMNS = ["scope", "run_id", "pid", "host", "started_at", "heartbeat_at", "progress"]


@dataclass(frozen=True)
class LockInfo:
    """Who holds a sheet's run lock, and what it last reported."""

    scope: str
    run_id: str
    pid: int
    host: str
    started_at: float
    heartbeat_at: float
    progress: dict[str, Any]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunLocks(Store):
    """The run_locks table of a ledger."""

    def acquire_lock(self, scope: str, *, run_id: str) -> None:
        """Take the run lock of `scope`, or raise SheetLockedError naming the live holder."""
        now = time.time()
        row = {
            "scope": scope,
            "run_id": run_id,
            "pid": os.getpid(),
            "host": HOST,
            "started_at": now,
            "heartbeat_at": now,
            "progress": "{}",
        }
        insert = self._sql(insert_new("run_locks", _LOCK_COLUMNS, "scope"))
        for _ in range(3):
            holder = self.lock_holder(scope)
            if holder is not None:
                if self._is_live(holder):
                    raise SheetLockedError(
                        f"{shown(scope)} is already being run by process {holder.pid} on "
                        f"{holder.host} "
                        f"(started {_local_time(holder.started_at)})"
                    )
                with self._write() as cursor:
                    cursor.execute(
                        self._sql("DELETE FROM run_locks WHERE scope = :scope AND run_id = :run"),
                        {"scope": scope, "run": holder.run_id},
                    )
            with self._write() as cursor:
                cursor.execute(insert, row)
                if cursor.rowcount == 1:
                    self.run_id = run_id
                    return
            # someone else got in between; look again
        raise SheetLockedError(f"{scope} is already being run by another process")

    @staticmethod
    def _is_live(holder: LockInfo) -> bool:
        if holder.host == HOST:
            return _pid_alive(holder.pid)
        return time.time() - holder.heartbeat_at < STALE_LOCK_SECONDS

    def lock_holder(self, scope: str) -> LockInfo | None:
        """The current holder of `scope`'s lock, live or not."""
        query = f"SELECT {', '.join(_LOCK_COLUMNS)} FROM run_locks WHERE scope = :scope"
        with self._read() as cursor:
            cursor.execute(self._sql(query), {"scope": scope})
            row = cursor.fetchone()
        return None if row is None else _lock_info(row)

    def live_runs(self, run_ids: Iterable[str]) -> dict[str, LockInfo]:
        """Those of `run_ids` whose run still holds its lock and is alive, by run_id."""
        wanted = sorted(set(run_ids))
        if not wanted:
            return {}
        params = {f"r{i}": run_id for i, run_id in enumerate(wanted)}
        query = (
            f"SELECT {', '.join(_LOCK_COLUMNS)} FROM run_locks "
            f"WHERE run_id IN ({', '.join(':' + name for name in params)})"
        )
        with self._read() as cursor:
            cursor.execute(self._sql(query), params)
            holders = [_lock_info(row) for row in cursor.fetchall()]
        return {h.run_id: h for h in holders if self._is_live(h)}

    def live_lock_holder(self, scope: str) -> LockInfo | None:
        """The holder of `scope`'s lock if that process is still alive."""
        holder = self.lock_holder(scope)
        return holder if holder is not None and self._is_live(holder) else None

    def heartbeat(self, scope: str, *, run_id: str, progress: dict[str, Any]) -> bool:
        """Record that the run holding `scope` is alive; False if it no longer holds it."""
        update = (
            "UPDATE run_locks SET heartbeat_at = :now, progress = :progress "
            "WHERE scope = :scope AND run_id = :run"
        )
        values = {"now": time.time(), "progress": json.dumps(progress)}
        with self._write() as cursor:
            cursor.execute(self._sql(update), {**values, "scope": scope, "run": run_id})
            return bool(cursor.rowcount == 1)

    def release_lock(self, scope: str, *, run_id: str) -> None:
        """Give up `scope`'s lock if this run still holds it."""
        with self._write() as cursor:
            cursor.execute(
                self._sql("DELETE FROM run_locks WHERE scope = :scope AND run_id = :run"),
                {"scope": scope, "run": run_id},
            )


def _lock_info(row: Sequence[Any]) -> LockInfo:
    data = dict(zip(_LOCK_COLUMNS, row, strict=True))
    data["progress"] = json.loads(data["progress"] or "{}")
    return LockInfo(**data)


def _local_time(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch))


class CancelRequests:
    """`batchgen cancel` telling a run in progress to stop submitting, through the ledger.

    A row of run_cancels, keyed by the run's id: a run on another host sharing a PostgreSQL
    ledger sees it as surely as one on this host (a signal or a local file would not reach
    it). The run acknowledges once it submits nothing more, and deletes the row as it ends.
    """

    def __init__(self, ledger: RunLocks) -> None:
        self._ledger = ledger

    def request(self, holder: LockInfo) -> None:
        """Ask the run holding a sheet (`holder`) to stop submitting."""
        statement = insert_new(
            "run_cancels", ["run_id", "scope", "requested_at", "requested_by"], "run_id"
        )
        row = {
            "run_id": holder.run_id,
            "scope": holder.scope,
            "requested_at": time.time(),
            "requested_by": f"process {os.getpid()} on {HOST}",
        }
        with self._ledger._write() as cursor:
            cursor.execute(self._ledger._sql(statement), row)

    def requested(self, run_id: str) -> str | None:
        """Who asked run `run_id` to stop submitting, or None if nobody has."""
        with self._ledger._read() as cursor:
            cursor.execute(
                self._ledger._sql("SELECT requested_by FROM run_cancels WHERE run_id = :run"),
                {"run": run_id},
            )
            row = cursor.fetchone()
        return None if row is None else str(row[0])

    def acknowledge(self, run_id: str) -> None:
        """Record that run `run_id` submits nothing more."""
        with self._ledger._write() as cursor:
            cursor.execute(
                self._ledger._sql(
                    "UPDATE run_cancels SET acknowledged_at = :now WHERE run_id = :run"
                ),
                {"now": time.time(), "run": run_id},
            )

    def acknowledged(self, run_id: str) -> bool:
        """Whether run `run_id` has stopped submitting (or ended: its request is gone)."""
        with self._ledger._read() as cursor:
            cursor.execute(
                self._ledger._sql("SELECT acknowledged_at FROM run_cancels WHERE run_id = :run"),
                {"run": run_id},
            )
            row = cursor.fetchone()
        return row is None or row[0] is not None

    def forget(self, run_id: str) -> None:
        """Delete run `run_id`'s request as the run ends."""
        with self._ledger._write() as cursor:
            cursor.execute(
                self._ledger._sql("DELETE FROM run_cancels WHERE run_id = :run"), {"run": run_id}
            )
