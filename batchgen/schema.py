"""The ledger's schema: the Alembic migrations in migrations/versions are its one source.

A new ledger is built by running every migration on the empty database; an older one by
running those it lacks. Either way it ends at SCHEMA_REVISION, the newest migration's
revision, kept here as text (a test holds it equal to Alembic's head) so that opening a ledger
already at it needs neither SQLAlchemy nor Alembic: a SQLite run reads the stamp with plain
sqlite3, and imports them only when it creates or upgrades its ledger.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import sqlalchemy as sa

SCHEMA_REVISION = "0006"  # the newest migration's revision
VERSION_TABLE = "alembic_version"  # Alembic's bookkeeping table
# PostgreSQL: the advisory lock that keeps two runs from building one new ledger at once
_PG_MIGRATION_LOCK = 0x6261746368  # "batch"


def bring_to_head(conn: sa.Connection) -> None:
    """Run the migrations the database lacks (all of them for a new one), in conn's transaction.

    On PostgreSQL the transaction first takes an advisory lock, so that of two runs opening
    one new ledger the second waits and then finds it at head.
    """
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_PG_MIGRATION_LOCK})")
    if schema_revision(conn) != SCHEMA_REVISION:
        upgrade(conn)


def schema_revision(conn: sa.Connection) -> str | None:
    """The revision Alembic recorded in this database, or None if it has none."""
    import sqlalchemy as sa

    if not sa.inspect(conn).has_table(VERSION_TABLE):
        return None
    return conn.exec_driver_sql(f"SELECT version_num FROM {VERSION_TABLE}").scalar()


def upgrade(conn: sa.Connection, revision: str = "head") -> None:
    """Run the migrations up to `revision` on `conn`, in its transaction."""
    from alembic import command

    config = alembic_config()
    config.attributes["connection"] = conn
    command.upgrade(config, revision)


def alembic_config() -> Any:
    """Alembic's configuration for batchgen's migrations (wherever they are installed)."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(_migrations_dir()))
    return config


def _migrations_dir() -> Path:
    from importlib import resources

    beside = Path(__file__).resolve().parent.parent / "migrations"
    if (beside / "env.py").is_file():
        return beside
    return Path(str(resources.files("batchgen._migrations")))
