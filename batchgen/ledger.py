"""The ledger: every job and its request_id in SQL (SQLite by default), via SQLAlchemy."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from batchgen.errors import LedgerError, SheetLockedError
from batchgen.schema import (
    SCHEMA_REVISION,
    bring_to_head,
    jobs_table,
    locks_table,
    marks_table,
    schema_revision,
)

HOST = socket.gethostname()
# A lock whose holder on another host has not beaten for this long is taken over.
STALE_LOCK_SECONDS = 120.0
MIGRATE_ATTEMPTS = 5


@dataclass
class JobRecord:
    """One row of the jobs table."""

    key: str
    model_id: str
    payload: dict[str, Any]
    state: str
    take: int = 1
    label: str = ""
    sheet_row: int | None = None
    request_id: str | None = None
    queue_position: int | None = None
    video_url: str | None = None
    error: str | None = None
    estimated_cost: float | None = None
    cost: float | None = None
    submit_attempts: int = 0
    created_at: float = 0.0
    submitted_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    updated_at: float = 0.0
    download_path: str | None = None

    def update(self, values: dict[str, Any]) -> None:
        """Set several fields at once (in memory only)."""
        for name, value in values.items():
            setattr(self, name, value)


_RECORD_FIELDS = [f.name for f in fields(JobRecord)]


@dataclass(frozen=True)
class Claim:
    """Write-ahead mark of a job about to be submitted, won only if its state is `expect`.

    A won claim sets state `submitting`, adds one to submit_attempts, clears the error and
    stamps submitted_at with the commit's time.
    """

    key: str
    expect: str


class _Prepared:
    """A statement compiled once for a dialect, run at the driver level.

    SQLAlchemy's per-execution work (cache keys, parameter processing, result set-up) costs
    several times the SQLite work for these small updates, which a busy run makes thousands
    of. The jobs table's types need no bind processing, so the driver takes plain values.
    """

    def __init__(self, statement: Any, dialect: Any) -> None:
        compiled = statement.compile(dialect=dialect)
        self.sql: str = compiled.string
        self._defaults: dict[str, Any] = dict(compiled.params)
        self._order: tuple[str, ...] | None = (
            tuple(compiled.positiontup) if compiled.positional else None
        )

    def params(self, row: dict[str, Any]) -> Any:
        """The driver's parameters for one row (positional or named, as the dialect wants)."""
        values = {**self._defaults, **row}
        if self._order is None:
            return values
        return tuple(values[name] for name in self._order)


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


def ledger_url(db: str | None, sheet: Path) -> str:
    """`--db` (a path or SQLAlchemy URL), else `BATCHGEN_DB`, else a file beside the sheet."""
    value = db or os.environ.get("BATCHGEN_DB")
    if not value:
        value = str(sheet.with_name(sheet.name + ".batchgen.db"))
    if "://" in value:
        return value
    return f"sqlite:///{Path(value).expanduser().resolve()}"


def _cause(exc: BaseException) -> BaseException:
    """The driver's error behind a SQLAlchemy one (its message names the problem), else exc."""
    return getattr(exc, "orig", None) or exc


def _on_sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    # NORMAL in WAL mode survives a process crash; only an OS crash can lose the last commits.
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=15000")
    cursor.close()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _to_row(record: JobRecord) -> dict[str, Any]:
    row = {name: getattr(record, name) for name in _RECORD_FIELDS}
    row["payload"] = json.dumps(record.payload, ensure_ascii=False, sort_keys=True)
    return row


def _from_row(row: Any) -> JobRecord:
    data = dict(row._mapping)
    data["payload"] = json.loads(data["payload"])
    return JobRecord(**data)


class Ledger:
    """A ledger database, migrated to the newest schema when opened."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._statements: dict[tuple[str, ...], _Prepared] = {}
        self._writer: Any = None  # SQLite: the group writes' connection (_writer_connection)
        self._writer_lock = threading.Lock()
        try:
            self.engine = self._connect(url)
        except SQLAlchemyError as exc:
            raise LedgerError(f"cannot open the ledger {url}: {exc}") from exc
        for attempt in range(1, MIGRATE_ATTEMPTS + 1):
            try:
                self._migrate()
                return
            except SQLAlchemyError as exc:
                # two runs opening a new shared ledger at once: one creates the tables, the
                # other fails; after a pause it finds the schema at head and goes on
                if attempt == MIGRATE_ATTEMPTS:
                    raise LedgerError(
                        f"cannot open the ledger {self.display_url}: {_cause(exc)}"
                    ) from exc
                time.sleep(0.2 * attempt)

    @property
    def display_url(self) -> str:
        """The URL with any password hidden."""
        return sa.engine.make_url(self.url).render_as_string(hide_password=True)

    @staticmethod
    def _connect(url: str) -> Engine:
        parsed = sa.engine.make_url(url)
        if parsed.get_backend_name() != "sqlite":
            return sa.create_engine(url, pool_pre_ping=True)
        if parsed.database and parsed.database != ":memory:":
            directory = Path(parsed.database).parent
            if not directory.is_dir():
                raise LedgerError(
                    f"cannot open the ledger {url}: folder {directory} does not exist"
                )
        engine = sa.create_engine(url, connect_args={"check_same_thread": False, "timeout": 15})
        sa.event.listen(engine, "connect", _on_sqlite_connect)
        return engine

    def _migrate(self) -> None:
        with self.engine.begin() as conn:
            if schema_revision(conn) == SCHEMA_REVISION:
                return  # the common case: a read, no lock
        with self.engine.begin() as conn:
            if conn.dialect.name == "sqlite":
                # SQLite runs DDL outside any transaction unless one is open: take the write
                # lock first, so a second process opening the same new ledger waits and then
                # finds it whole, and a crash halfway leaves nothing half-built
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            bring_to_head(conn)

    def close(self) -> None:
        """Release the database connections."""
        with self._writer_lock:
            if self._writer is not None:
                self._writer.close()
                self._writer = None
        self.engine.dispose()

    def _begin(self) -> Any:
        return self.engine.begin()

    # jobs -----------------------------------------------------------------

    def get_jobs(
        self,
        keys: Sequence[str] | None = None,
        *,
        payloads: bool = True,
        not_state: str | None = None,
    ) -> dict[str, JobRecord]:
        """Records for `keys` (all records when None), by key; none in state `not_state`.

        With `payloads=False` the stored inputs are not decoded (each record's payload is
        empty): a resume of 100,000 jobs needs their states, not their prompts.
        """
        columns = [c for c in _RECORD_FIELDS if payloads or c != "payload"]
        selected = sa.select(*(jobs_table.c[name] for name in columns))
        if not_state is not None:
            # two ranges of the state index (SQLite scans the table for `!=`)
            state = jobs_table.c.state
            selected = selected.where((state < not_state) | (state > not_state))
        wanted = None if keys is None else set(keys)
        out: dict[str, JobRecord] = {}
        payload_at = _RECORD_FIELDS.index("payload")
        with self._read() as conn:
            if wanted is not None and len(wanted) <= 2000:
                parts = _chunks(list(wanted), 500)
                batches = [conn.execute(selected.where(jobs_table.c.key.in_(p))) for p in parts]
            else:
                # one scan beats thousands of IN lookups; rows straight from the driver, as
                # SQLAlchemy's row objects cost more than SQLite's work on 100,000 rows
                query = _Prepared(selected, conn.dialect)
                batches = [conn.exec_driver_sql(query.sql, query.params({})).fetchall()]
            for rows in batches:
                for row in rows:
                    if wanted is not None and row[0] not in wanted:
                        continue
                    if payloads:
                        values = list(row)
                        values[payload_at] = json.loads(values[payload_at])
                    else:
                        values = [*row[:payload_at], {}, *row[payload_at:]]
                    out[row[0]] = JobRecord(*values)
        return out

    def completed_rows(self) -> dict[str, int | None]:
        """Every completed job's sheet row, by key, read from the completed jobs' index alone.

        A rerun of a nearly-done 100,000-job sheet needs no more of its finished jobs: the
        partial index ix_jobs_completed covers these columns, so no table row (holding a
        prompt) is read, and the driver's tuples go straight into the dict.
        """
        with self._completed_cursor('"key", sheet_row') as cursor:
            return dict(cursor)

    def completed_cost(self, keys: Sequence[str] | None = None) -> float:
        """The estimated costs of the completed jobs (of `keys` only, if given), summed."""
        if keys is None:
            with self._completed_cursor("SUM(estimated_cost)") as cursor:
                return cursor.fetchone()[0] or 0.0
        c = jobs_table.c
        total = sa.select(sa.func.sum(c.estimated_cost)).where(c.state == "completed")
        with self._read() as conn:
            chunks = _chunks(list(keys), 500)
            return sum(conn.execute(total.where(c.key.in_(p))).scalar() or 0.0 for p in chunks)

    @contextlib.contextmanager
    def _read(self) -> Iterator[Any]:
        """A connection to read with; a database error becomes LedgerError (with the cause).

        The driver's own errors too: the lean reads run on its cursor, past SQLAlchemy.
        """
        try:
            with self.engine.connect() as conn:
                yield conn
        except (SQLAlchemyError, self.engine.dialect.loaded_dbapi.Error) as exc:
            raise LedgerError(f"cannot read the ledger: {_cause(exc)}") from exc

    @contextlib.contextmanager
    def _completed_cursor(self, columns: str) -> Iterator[Any]:
        """A DBAPI cursor over `columns` of the completed jobs, from ix_jobs_completed.

        Plain SQL: the state is a literal (with a parameter no planner can tell that the
        partial index applies), and SQLite, without statistics, must be told to use it.
        """
        with self._read() as conn:
            source = "jobs"
            if conn.dialect.name == "sqlite":
                source = "jobs INDEXED BY ix_jobs_completed"
            cursor = conn.connection.driver_connection.cursor()
            try:
                cursor.execute(f"SELECT {columns} FROM {source} WHERE state = 'completed'")
                yield cursor
            finally:
                cursor.close()

    def add_jobs(self, records: Iterable[JobRecord]) -> None:
        """Insert records whose key is not in the ledger yet (one transaction)."""
        rows = [_to_row(r) for r in records]
        if not rows:
            return
        with self._begin() as conn:
            # another runner may have added some meanwhile: insert only the missing ones
            statement = jobs_table.insert().prefix_with("OR IGNORE", dialect="sqlite")
            if conn.dialect.name == "postgresql":
                from sqlalchemy.dialects.postgresql import insert as pg_insert

                statement = pg_insert(jobs_table).on_conflict_do_nothing(index_elements=["key"])
            elif conn.dialect.name != "sqlite":
                existing: set[str] = set()
                for chunk in _chunks([r["key"] for r in rows], 500):
                    query = sa.select(jobs_table.c.key).where(jobs_table.c.key.in_(chunk))
                    existing.update(conn.execute(query).scalars())
                rows = [r for r in rows if r["key"] not in existing]
                if not rows:
                    return
            # run at the driver level: SQLAlchemy's per-row parameter work cost as much as
            # SQLite's insert itself
            insert = _Prepared(
                statement.values({c: sa.bindparam(c) for c in _RECORD_FIELDS}), conn.dialect
            )
            conn.exec_driver_sql(insert.sql, [insert.params(row) for row in rows])

    def update_jobs(self, changes: Sequence[tuple[str, dict[str, Any]]]) -> None:
        """Apply (key, {column: value}) changes in one transaction (a group commit)."""
        self.write_jobs(changes, [])

    def write_jobs(
        self,
        changes: Sequence[tuple[str, dict[str, Any]]],
        claims: Sequence[Claim] = (),
        *,
        now: float | None = None,
    ) -> list[bool]:
        """Apply changes, then claims, in one transaction; whether each claim won.

        A claim is a conditional update, so of several runners sharing one ledger exactly one
        wins each job. `now` stamps updated_at (and a won claim's submitted_at).
        """
        if not changes and not claims:
            return []
        now = time.time() if now is None else now
        merged: dict[str, dict[str, Any]] = {}
        for key, values in changes:
            merged.setdefault(key, {}).update(values)
        # one executemany per set of columns: far cheaper than a statement per change
        groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for key, values in merged.items():
            row = dict(values)
            if "payload" in row:
                row["payload"] = json.dumps(row["payload"], ensure_ascii=False, sort_keys=True)
            row.setdefault("updated_at", now)
            row["_key"] = key
            groups.setdefault(tuple(sorted(row)), []).append(row)
        dbapi_error = self.engine.dialect.loaded_dbapi.Error
        with self._writer_lock:
            try:
                connection = self._writer_connection()
                try:
                    cursor = connection.cursor()
                    try:
                        for columns, rows in groups.items():
                            update = self._prepared(columns)
                            cursor.executemany(update.sql, [update.params(row) for row in rows])
                        won = self._claim(cursor, claims, now) if claims else []
                    finally:
                        cursor.close()
                    connection.commit()
                    return won
                finally:
                    if connection is not self._writer:
                        connection.close()  # back to the pool, which rolls back what is left
            except BaseException as exc:
                # whatever failed (a database error, text SQLite cannot encode, a cancel), the
                # group is rolled back and its connection dropped: the next write starts
                # afresh, and no open transaction keeps the write lock from other connections
                self._drop_writer()
                if isinstance(exc, SQLAlchemyError | dbapi_error | ValueError | OverflowError):
                    raise LedgerError(f"cannot write the ledger: {_cause(exc)}") from exc
                raise

    def _writer_connection(self) -> Any:
        """The DBAPI connection for a group write, past SQLAlchemy's per-statement work.

        SQLite: one held for the run (checking one out, beginning and committing through
        SQLAlchemy cost more than a small group's SQLite work). A database server: one from
        the pool each time, whose pre-ping replaces a connection the server dropped.
        """
        if not self.is_local:
            return self.engine.raw_connection()
        if self._writer is None:
            self._writer = self.engine.raw_connection()
        return self._writer

    def _drop_writer(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            with contextlib.suppress(Exception):
                writer.invalidate()

    def _claim(self, cursor: Any, claims: Sequence[Claim], now: float) -> list[bool]:
        """Whether each claim won, in the transaction of `cursor` (a job claimed twice in one
        batch is won once: the second finds it `submitting`)."""
        claim = self._prepared(("claim",))
        won = []
        for item in claims:
            cursor.execute(
                claim.sql, claim.params({"_key": item.key, "_expect": item.expect, "_now": now})
            )
            won.append(cursor.rowcount == 1)
        return won

    def _prepared(self, name: tuple[str, ...]) -> _Prepared:
        """An UPDATE by key, compiled once: the claim's (see Claim), or one setting `name`."""
        prepared = self._statements.get(name)
        if prepared is None:
            where = jobs_table.c.key == sa.bindparam("_key")
            if name == ("claim",):
                statement = (
                    jobs_table.update()
                    .where(where & (jobs_table.c.state == sa.bindparam("_expect")))
                    .values(
                        state=sa.bindparam("_state", "submitting"),
                        submit_attempts=jobs_table.c.submit_attempts + 1,
                        submitted_at=sa.bindparam("_now"),
                        error=None,
                        updated_at=sa.bindparam("_now"),
                    )
                )
            else:
                values = {c: sa.bindparam(c) for c in name if c != "_key"}
                statement = jobs_table.update().where(where).values(values)
            prepared = self._statements[name] = _Prepared(statement, self.engine.dialect)
        return prepared

    @property
    def is_local(self) -> bool:
        """True for a SQLite file: writes are quick enough to make on the event loop."""
        return self.engine.dialect.name == "sqlite"

    # locks ------------------------------------------------------------------

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
        for _ in range(3):
            holder = self.lock_holder(scope)
            if holder is not None:
                if self._is_live(holder):
                    raise SheetLockedError(
                        f"{scope} is already being run by process {holder.pid} on {holder.host} "
                        f"(started {_local_time(holder.started_at)})"
                    )
                with self._begin() as conn:
                    conn.execute(
                        locks_table.delete().where(
                            (locks_table.c.scope == scope) & (locks_table.c.run_id == holder.run_id)
                        )
                    )
            try:
                with self._begin() as conn:
                    conn.execute(locks_table.insert().values(**row))
                return
            except IntegrityError:
                continue  # someone else got in between; look again
        raise SheetLockedError(f"{scope} is already being run by another process")

    @staticmethod
    def _is_live(holder: LockInfo) -> bool:
        if holder.host == HOST:
            return _pid_alive(holder.pid)
        return time.time() - holder.heartbeat_at < STALE_LOCK_SECONDS

    def lock_holder(self, scope: str) -> LockInfo | None:
        """The current holder of `scope`'s lock, live or not."""
        with self._read() as conn:
            row = conn.execute(sa.select(locks_table).where(locks_table.c.scope == scope)).first()
        if row is None:
            return None
        data = dict(row._mapping)
        data["progress"] = json.loads(data["progress"] or "{}")
        return LockInfo(**data)

    def live_lock_holder(self, scope: str) -> LockInfo | None:
        """The holder of `scope`'s lock if that process is still alive."""
        holder = self.lock_holder(scope)
        return holder if holder is not None and self._is_live(holder) else None

    def heartbeat(self, scope: str, *, run_id: str, progress: dict[str, Any]) -> bool:
        """Record that the run holding `scope` is alive; False if it no longer holds it."""
        with self._begin() as conn:
            result = conn.execute(
                locks_table.update()
                .where((locks_table.c.scope == scope) & (locks_table.c.run_id == run_id))
                .values(heartbeat_at=time.time(), progress=json.dumps(progress))
            )
        return result.rowcount == 1

    def release_lock(self, scope: str, *, run_id: str) -> None:
        """Give up `scope`'s lock if this run still holds it."""
        with self._begin() as conn:
            conn.execute(
                locks_table.delete().where(
                    (locks_table.c.scope == scope) & (locks_table.c.run_id == run_id)
                )
            )

    # plan marks ------------------------------------------------------------

    def plan_mark(self, scope: str) -> str | None:
        """The digest of `scope`'s jobs and rows as its last resume left them, if still valid."""
        query = sa.select(marks_table.c.digest).where(marks_table.c.scope == scope)
        with self._read() as conn:
            return conn.execute(query).scalar()

    def set_plan_mark(self, scope: str, digest: str) -> None:
        """Record that every job of `scope`'s plan (`digest`) is in the ledger at its row."""
        with self._begin() as conn:
            conn.execute(marks_table.delete().where(marks_table.c.scope == scope))
            conn.execute(marks_table.insert().values(scope=scope, digest=digest))

    def clear_plan_marks(self) -> None:
        """Forget every sheet's mark: jobs are being added or rows moved, which may be another
        sheet's too (sheets sharing a ledger share identical jobs)."""
        with self._begin() as conn:
            conn.execute(marks_table.delete())

    def job_count(self) -> int:
        """How many jobs the ledger holds."""
        with self._read() as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(jobs_table)).scalar() or 0


def _local_time(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch))


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
