"""The ledger's database at the driver level: a SQLite file through sqlite3, a server through
SQLAlchemy's engine.

Every ledger statement is plain SQL with `:name` parameters, run on a DBAPI cursor: for the
small statements a run makes thousands of, SQLAlchemy's per-execution work costs several times
the database's own, and a SQLite run on an existing ledger then need not import SQLAlchemy at
all (whose import is a noticeable part of a short run). A database server (PostgreSQL) goes
through SQLAlchemy's engine, for its URL, its driver and its pre-pinged connection pool. The
schema is Alembic's migrations (batchgen.schema), run where a ledger is created or upgraded.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

from batchgen.errors import LedgerError, LedgerLostError
from batchgen.schema import SCHEMA_REVISION, VERSION_TABLE

log = logging.getLogger("batchgen")
SQLITE_BUSY_TIMEOUT = 15.0  # seconds a statement waits for another connection's write lock
IDLE_CONNECTIONS = 4  # SQLite connections kept open for the next transaction
_NAMED_PARAMETER = re.compile(r"(?<![:\w]):(\w+)")
_SQLITE_URL = re.compile(r"sqlite(\+pysqlite)?://", re.IGNORECASE)
_PASSWORD = re.compile(r"(://[^:/@]*:)[^@]*@")
SQLITE_FORMS = "sqlite:///relative/path or sqlite:////absolute/path"


class SQLiteDatabase:
    """A ledger in a SQLite file, in WAL mode, through the standard library's sqlite3."""

    name = "sqlite"
    errors: tuple[type[BaseException], ...] = (sqlite3.Error,)

    def __init__(self, url: str) -> None:
        self.path = _sqlite_path(url)
        self.display_url = self.path  # as `--db` takes it back: a plain path is not decoded
        directory = Path(self.path).parent
        if not directory.is_dir():
            raise LedgerError(f"cannot open the ledger {url}: folder {directory} does not exist")
        if sqlite3.sqlite_version_info < (3, 24):
            raise LedgerError(
                f"cannot open the ledger {url}: SQLite {sqlite3.sqlite_version} is too old "
                "(batchgen needs 3.24 or newer)"
            )
        self._idle: list[sqlite3.Connection] = []
        self._idle_lock = threading.Lock()
        self._closed = False
        # the file opened (st_dev, st_ino): a ledger deleted or replaced during a run must
        # not go on taking writes nobody will ever read (see _check_identity)
        self._identity: tuple[int, int] | None = None
        self.lost = False

    @staticmethod
    def sql(statement: str) -> str:
        """`statement` as the driver takes it (sqlite3 takes `:name` parameters as they are)."""
        return statement

    def _connect(self) -> sqlite3.Connection:
        # check_same_thread off: a connection moves between threads, one at a time (the pool)
        connection = sqlite3.connect(
            self.path, timeout=SQLITE_BUSY_TIMEOUT, check_same_thread=False
        )
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode survives a process crash; only an OS crash can lose the
            # last commits
            connection.execute("PRAGMA synchronous=NORMAL")
        except BaseException:
            connection.close()
            raise
        return connection

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Any]:
        """A cursor in a transaction: committed at the end; on any error rolled back, and its
        connection closed, so no open transaction keeps the write lock from others."""
        if self._identity is not None:
            self._check_identity()
        with self._idle_lock:
            connection = self._idle.pop() if self._idle else None
        if connection is None:
            connection = self._connect()
        try:
            with _committed(connection) as cursor:
                yield cursor
        except BaseException:
            connection.close()  # rolls back what was not committed
            raise
        with self._idle_lock:
            if not self._closed and len(self._idle) < IDLE_CONNECTIONS:
                self._idle.append(connection)
                return
        connection.close()

    def ensure_schema(self) -> None:
        """Build a new ledger, or migrate an older one, up to SCHEMA_REVISION."""
        with self.transaction() as cursor:
            current = _sqlite_revision(cursor) == SCHEMA_REVISION  # the common case: a read
        if not current:
            self._migrate()
        self._identity = _file_identity(self.path)

    def _check_identity(self) -> None:
        """Raise LedgerLostError if the ledger's path no longer names the file opened.

        A ledger deleted (or replaced) during a run lives on as a ghost for the connections
        already open: every write would land where no rerun can read it, and a new connection
        would create an empty ledger in its place. Checked before each transaction (a stat).
        """
        if _file_identity(self.path) == self._identity and not self.lost:
            return
        self.lost = True
        with self._idle_lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()
        raise LedgerLostError(
            f"the ledger {self.display_url} was deleted or replaced during the run: batchgen "
            "stopped writing to it. The sheet shows the request_id of every job this run "
            "submitted: rerun, and they are followed by that id, never paid for again"
        )

    def _migrate(self) -> None:
        """Alembic's migrations, through SQLAlchemy (imported only now), under the write lock.

        SQLite runs DDL outside any transaction unless one is open: BEGIN IMMEDIATE first, so
        a second process opening the same new ledger waits and then finds it whole, and a
        crash halfway leaves nothing half-built.
        """
        import sqlalchemy as sa

        # the path, not the URL: SQLAlchemy 2.0 does not decode a URL's %-escapes, 2.1 does
        url = sa.engine.URL.create("sqlite", database=self.path)
        engine = sa.create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT})
        try:
            with engine.begin() as conn:
                conn.exec_driver_sql("BEGIN IMMEDIATE")
                _bring_to_head(conn, self.display_url)
        except sa.exc.SQLAlchemyError as exc:
            cause = getattr(exc, "orig", None)
            if isinstance(cause, sqlite3.Error):
                raise cause from exc  # the opener's retries treat it as any SQLite error
            raise LedgerError(f"cannot migrate the ledger {self.display_url}: {exc}") from exc
        finally:
            engine.dispose()

    def close(self) -> None:
        """Close the idle connections, and any returned later."""
        with self._idle_lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()


class ServerDatabase:
    """A ledger on a database server (PostgreSQL), through SQLAlchemy's engine and pool."""

    def __init__(self, url: str) -> None:
        import sqlalchemy as sa

        self.display_url = _PASSWORD.sub(r"\1***@", url)
        try:
            parsed = sa.engine.make_url(url)
            self.display_url = parsed.render_as_string(hide_password=True)
            if parsed.get_backend_name() != "postgresql":
                raise LedgerError(
                    f"cannot open the ledger {self.display_url}: batchgen keeps its ledger in "
                    f"a SQLite file ({SQLITE_FORMS}) or a PostgreSQL database"
                )
            self.engine = sa.create_engine(url, pool_pre_ping=True)
        except (sa.exc.SQLAlchemyError, ImportError, ValueError) as exc:
            raise LedgerError(f"cannot open the ledger {self.display_url}: {exc}") from exc
        if self.engine.dialect.paramstyle != "pyformat":
            # every statement is written with :name parameters, passed on as %(name)s
            raise LedgerError(
                f"cannot open the ledger {self.display_url}: the driver "
                f"{self.engine.dialect.driver} is not supported; use psycopg "
                "(postgresql+psycopg://) or psycopg2 (postgresql+psycopg2://)"
            )
        self.name = "postgresql"
        self.lost = False  # a server's database is not a file that can be deleted under us
        self.errors: tuple[type[BaseException], ...] = (
            sa.exc.SQLAlchemyError,
            self.engine.dialect.loaded_dbapi.Error,
        )
        self._converted: dict[str, str] = {}

    def sql(self, statement: str) -> str:
        """`statement` with `:name` parameters as the driver's `%(name)s`."""
        converted = self._converted.get(statement)
        if converted is None:
            converted = _NAMED_PARAMETER.sub(r"%(\1)s", statement.replace("%", "%%"))
            self._converted[statement] = converted
        return converted

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Any]:
        """A cursor in a transaction on a pooled connection: committed at the end, rolled
        back on any error (the pool resets a returned connection; pre-ping replaces one the
        server dropped)."""
        connection = self.engine.raw_connection()
        try:
            with _committed(connection) as cursor:
                yield cursor
        finally:
            connection.close()

    def ensure_schema(self) -> None:
        """Build a new ledger, or migrate an older one, up to SCHEMA_REVISION."""
        from batchgen.schema import schema_revision

        with self.engine.begin() as conn:
            if schema_revision(conn) == SCHEMA_REVISION:
                return  # the common case: a read, no lock
        with self.engine.begin() as conn:
            _bring_to_head(conn, self.display_url)

    def close(self) -> None:
        """Close the pool's connections."""
        self.engine.dispose()


Database = SQLiteDatabase | ServerDatabase


def open_database(url: str) -> Database:
    """The database of a ledger URL (a SQLite file's, or a server's)."""
    if _SQLITE_URL.match(url):
        return SQLiteDatabase(url)
    return ServerDatabase(url)


def _bring_to_head(conn: Any, display_url: str) -> None:
    """schema.bring_to_head, with Alembic's own failures (a revision it does not know: a
    ledger a newer batchgen made) as LedgerError."""
    from alembic.util import CommandError

    from batchgen.schema import bring_to_head

    try:
        bring_to_head(conn)
    except CommandError as exc:
        raise LedgerError(
            f"cannot migrate the ledger {display_url}: {exc} (was it made by a newer batchgen?)"
        ) from exc


@contextlib.contextmanager
def _committed(connection: Any) -> Iterator[Any]:
    """A cursor on `connection`, closed at the end, and the transaction committed unless the
    block failed (the caller then drops or resets the connection)."""
    cursor = connection.cursor()
    try:
        yield cursor
    finally:
        cursor.close()
    connection.commit()


def sqlite_url(path: str) -> str:
    """The URL of the SQLite ledger at the absolute `path`, or of the one an earlier batchgen
    made for it; quoted: a sheet named "What?.xlsx" or "100%.xlsx" is a file name."""
    if not os.path.exists(path):
        path = _earlier_location(path) or path
    return "sqlite:///" + quote(path)


def _earlier_location(path: str) -> str | None:
    """An existing ledger that batchgen before 2026-11-26 made for `path`, if elsewhere.

    It passed the path to SQLAlchemy unquoted, which read "?" as the start of URL options
    (a sheet "What?.csv" had the ledger "What") and, from SQLAlchemy 2.1, decoded
    %-escapes; a rerun must find the ledger that records what was paid for.
    """
    before_options = path.partition("?")[0]
    for candidate in (before_options, unquote(before_options)):
        if candidate != path and _is_sqlite_file(candidate):
            log.warning(
                "using the ledger %s, where an earlier batchgen kept this sheet's jobs "
                "(move it to %s to keep it under the sheet's own name)",
                candidate,
                path,
            )
            return candidate
    return None


def _is_sqlite_file(path: str) -> bool:
    try:
        with open(path, "rb") as file:
            return file.read(16) == b"SQLite format 3\x00"
    except OSError:
        return False


def _sqlite_path(url: str) -> str:
    """The absolute path of a SQLite URL's file, its %-escapes decoded (as SQLAlchemy 2.1 does)."""
    scheme = _SQLITE_URL.match(url)
    rest = url[scheme.end() :] if scheme else ""
    path, query = rest[1:].partition("?")[::2]
    if rest in ("", "/", "/:memory:"):
        raise LedgerError(
            f"cannot open the ledger {url}: a SQLite ledger is a file ({SQLITE_FORMS}), "
            "so that a rerun finds what an earlier run paid for"
        )
    if not rest.startswith("/"):
        raise LedgerError(f"cannot open the ledger {url}: a SQLite URL is {SQLITE_FORMS}")
    if query:
        raise LedgerError(f"cannot open the ledger {url}: a SQLite URL takes no ?options")
    return os.path.abspath(unquote(path))


def _file_identity(path: str) -> tuple[int, int] | None:
    """The (st_dev, st_ino) of the file at `path`, or None if there is none."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_dev, info.st_ino


def _sqlite_revision(cursor: Any) -> str | None:
    """The revision Alembic recorded in this SQLite database, or None if it has none."""
    cursor.execute(
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = ?", (VERSION_TABLE,)
    )
    if cursor.fetchone()[0] == 0:
        return None
    cursor.execute(f"SELECT version_num FROM {VERSION_TABLE}")
    row = cursor.fetchone()
    return row[0] if row is not None else None


def is_sqlite_url(url: str) -> bool:
    """Whether `url` names a SQLite ledger."""
    return _SQLITE_URL.match(url) is not None


def sqlite_path(url: str) -> str:
    """The absolute path of a SQLite URL's file (LedgerError when it names none)."""
    return _sqlite_path(url)
