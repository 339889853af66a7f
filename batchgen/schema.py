"""The ledger's tables, and how a database is brought to the newest schema.

The tables below are the schema the migrations (migrations/versions, run by Alembic) build.
A new, empty database is created from them and stamped with the newest revision, Alembic's
recipe for a database built from scratch; a database at an older revision is upgraded by
the migrations. Either way it ends at SCHEMA_REVISION, and tests hold the two paths equal.
Alembic is imported only to upgrade: its import costs more than a short run's ledger work.
A SQLite ledger is created from the same DDL as text (batchgen._ddl), without this module.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa

from batchgen._ddl import COMPLETED_INDEX_DDL, SCHEMA_REVISION, VERSION_TABLE

metadata = sa.MetaData()
jobs_table = sa.Table(
    "jobs",
    metadata,
    sa.Column("key", sa.String(255), primary_key=True),
    sa.Column("model_id", sa.String(255), nullable=False),
    sa.Column("payload", sa.Text, nullable=False),
    sa.Column("take", sa.Integer, nullable=False, server_default="1"),
    sa.Column("label", sa.Text, nullable=False, server_default=""),
    sa.Column("sheet_row", sa.Integer),
    sa.Column("state", sa.String(32), nullable=False),
    sa.Column("request_id", sa.String(255)),
    sa.Column("queue_position", sa.Integer),
    sa.Column("video_url", sa.Text),
    sa.Column("error", sa.Text),
    sa.Column("estimated_cost", sa.Float),
    sa.Column("cost", sa.Float),
    sa.Column("submit_attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("submitted_at", sa.Float),
    sa.Column("started_at", sa.Float),
    sa.Column("finished_at", sa.Float),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Column("download_path", sa.Text),
)
sa.Index("ix_jobs_request_id", jobs_table.c.request_id)
sa.Index("ix_jobs_state", jobs_table.c.state)
locks_table = sa.Table(
    "run_locks",
    metadata,
    sa.Column("scope", sa.String(1024), primary_key=True),
    sa.Column("run_id", sa.String(64), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("started_at", sa.Float, nullable=False),
    sa.Column("heartbeat_at", sa.Float, nullable=False),
    sa.Column("progress", sa.Text, nullable=False, server_default="{}"),
)
# 0002: the completed jobs' index is COMPLETED_INDEX_DDL (batchgen._ddl)
# 0003: a sheet's plan as its last resume left the ledger: a rerun with the same jobs at the
# same rows skips matching every job against the ledger (see resume)
marks_table = sa.Table(
    "plan_marks",
    metadata,
    sa.Column("scope", sa.String(1024), primary_key=True),
    sa.Column("digest", sa.String(64), nullable=False),
)
# Alembic's own bookkeeping table, as Alembic creates it
_version_table = sa.Table(
    VERSION_TABLE,
    sa.MetaData(),
    sa.Column("version_num", sa.String(32), nullable=False),
    sa.PrimaryKeyConstraint("version_num", name="alembic_version_pkc"),
)


def bring_to_head(conn: sa.Connection) -> None:
    """Create a new database's tables, or run the migrations an older one lacks."""
    tables = sa.inspect(conn).get_table_names()
    revision = schema_revision(conn)
    if revision == SCHEMA_REVISION:
        return
    if not tables:
        metadata.create_all(conn)
        conn.exec_driver_sql(COMPLETED_INDEX_DDL)
        _version_table.create(conn)
        conn.execute(_version_table.insert().values(version_num=SCHEMA_REVISION))
        return
    upgrade(conn)


def schema_revision(conn: sa.Connection) -> str | None:
    """The revision Alembic recorded in this database, or None if it has none."""
    if not sa.inspect(conn).has_table(_version_table.name):
        return None
    return conn.execute(sa.select(_version_table.c.version_num)).scalar()


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
