"""The ledger's connection to its database: opening (and migrating), and transactions whose
failures are LedgerErrors. The jobs (batchgen._records) and the run locks (batchgen._runlocks)
are built on it; batchgen.ledger puts them together.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

from batchgen._database import open_database
from batchgen.errors import LedgerError

MIGRATE_ATTEMPTS = 5


def cause(exc: BaseException) -> BaseException:
    """The driver's error behind a SQLAlchemy one (its message names the problem), else exc."""
    return getattr(exc, "orig", None) or exc


class Store:
    """A ledger database, migrated to the newest schema when opened."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._db = open_database(url)
        self._statements: dict[tuple[str, ...], str] = {}
        self.run_id: str | None = None  # the run whose lock this ledger took; claims carry it
        try:
            self._ensure_schema()
        except BaseException:
            self._db.close()
            raise

    def _ensure_schema(self) -> None:
        for attempt in range(1, MIGRATE_ATTEMPTS + 1):
            try:
                self._db.ensure_schema()
                return
            except ValueError as exc:  # a path the system cannot take (a NUL in it)
                raise LedgerError(f"cannot open the ledger {self.display_url}: {exc}") from exc
            except self._db.errors as exc:
                # two runs opening a new shared ledger at once: one creates the tables, the
                # other fails; after a pause it finds the schema at head and goes on
                if attempt == MIGRATE_ATTEMPTS:
                    raise LedgerError(
                        f"cannot open the ledger {self.display_url}: {cause(exc)}"
                    ) from exc
                time.sleep(0.2 * attempt)

    @property
    def display_url(self) -> str:
        """The URL with any password hidden."""
        return self._db.display_url

    @property
    def is_local(self) -> bool:
        """True for a SQLite file on this machine."""
        return self._db.name == "sqlite"

    @property
    def lost(self) -> bool:
        """True once the ledger's file was found deleted or replaced during the run."""
        return self._db.lost

    def close(self) -> None:
        """Release the database connections."""
        self._db.close()

    @contextlib.contextmanager
    def _transaction(self, doing: str) -> Iterator[Any]:
        """A cursor in a transaction; a failure becomes LedgerError ("cannot {doing} ...").

        Whatever fails (a database error, text SQLite cannot encode, an integer too large),
        the transaction is rolled back and its connection dropped: nothing half-written
        stays, and no open transaction keeps the write lock from other connections.
        """
        failures: tuple[type[BaseException], ...] = (*self._db.errors, ValueError, OverflowError)
        try:
            with self._db.transaction() as cursor:
                yield cursor
        except failures as exc:
            raise LedgerError(f"cannot {doing} the ledger: {cause(exc)}") from exc

    def _read(self) -> contextlib.AbstractContextManager[Any]:
        return self._transaction("read")

    def _write(self) -> contextlib.AbstractContextManager[Any]:
        return self._transaction("write")

    def _sql(self, statement: str) -> str:
        return self._db.sql(statement)


def insert_new(table: str, columns: list[str], key: str) -> str:
    """An INSERT of `columns` that skips a row whose `key` is already in `table`."""
    parameters = ", ".join(":" + column.strip('"') for column in columns)
    return (
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({parameters}) "
        f"ON CONFLICT ({key}) DO NOTHING"
    )
