"""The ledger's schema, whose one source is the migrations: a new ledger equals one upgraded
in place from each older revision. On SQLite and, where BATCHGEN_TEST_PG_URL names a server,
on PostgreSQL.
"""

from __future__ import annotations

import contextlib
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.script import ScriptDirectory

from batchgen import schema
from batchgen.errors import LedgerError
from batchgen.ledger import Ledger, ledger_url
from tests.helpers import fresh_pg_database


@contextlib.contextmanager
def empty_databases(kind: str, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """Two empty databases of `kind`."""
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path / 'one.db'}", f"sqlite:///{tmp_path / 'two.db'}"
        return
    with fresh_pg_database() as one, fresh_pg_database() as two:
        yield one, two


def describe(url: str) -> dict[str, Any]:
    """Every table's columns, keys and indexes (partial indexes with their condition)."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            inspector = sa.inspect(conn)
            tables: dict[str, Any] = {}
            for name in sorted(inspector.get_table_names()):
                columns = [
                    (c["name"], str(c["type"]), c["nullable"], c.get("default"))
                    for c in inspector.get_columns(name)
                ]
                indexes = sorted(
                    (
                        i["name"],
                        tuple(i["column_names"]),
                        bool(i["unique"]),
                        {k: str(v) for k, v in i.get("dialect_options", {}).items()},
                    )
                    for i in inspector.get_indexes(name)
                )
                tables[name] = {
                    "columns": columns,
                    "primary key": inspector.get_pk_constraint(name),
                    "indexes": indexes,
                    "unique": inspector.get_unique_constraints(name),
                }
            if conn.dialect.name == "sqlite":  # the DDL itself, word for word
                tables["sqlite_master"] = conn.exec_driver_sql(
                    "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY name"
                ).all()
            return tables
    finally:
        engine.dispose()


def _revisions() -> list[str]:
    """Every migration's revision, oldest first."""
    script = ScriptDirectory.from_config(schema.alembic_config())
    return [r.revision for r in reversed(list(script.walk_revisions()))]


def test_the_schema_revision_is_the_newest_migration() -> None:
    head = ScriptDirectory.from_config(schema.alembic_config()).get_current_head()
    assert head == schema.SCHEMA_REVISION == _revisions()[-1]


def _insert_job(conn: sa.Connection, key: str) -> None:
    """A job as every revision's jobs table takes it (the columns of 0001)."""
    conn.exec_driver_sql(
        'INSERT INTO jobs ("key", model_id, payload, state, created_at, updated_at) '
        f"VALUES ('{key}', 'm', '{{}}', 'completed', 1.0, 1.0)"
    )


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
@pytest.mark.parametrize("older", _revisions()[:-1])
def test_a_new_ledger_and_one_upgraded_from_an_older_revision_come_out_identical(
    kind: str, older: str, tmp_path: Path
) -> None:
    with empty_databases(kind, tmp_path) as (built, upgraded):
        Ledger(built).close()
        engine = sa.create_engine(upgraded)
        with engine.begin() as conn:
            schema.upgrade(conn, older)
            _insert_job(conn, "k1")
        with engine.connect() as conn:
            assert schema.schema_revision(conn) == older
        engine.dispose()

        ledger = Ledger(upgraded)  # upgraded in place, on open
        try:
            jobs = ledger.get_jobs()
            ledger.set_plan_mark("scope", "digest")
            mark = ledger.plan_mark("scope")
        finally:
            ledger.close()
        assert list(jobs) == ["k1"] and jobs["k1"].state == "completed"
        assert jobs["k1"].take == 1 and jobs["k1"].submit_attempts == 0  # server defaults
        assert mark == "digest"

        new, old = describe(built), describe(upgraded)
        assert new == old  # on SQLite, the DDL in sqlite_master word for word too
        assert {"jobs", "run_locks", "plan_marks", "alembic_version"} <= set(new)
        assert [i[0] for i in new["jobs"]["indexes"]] == [
            "ix_jobs_completed",
            "ix_jobs_request_id",
            "ix_jobs_state",
        ]
        engine = sa.create_engine(built)
        with engine.connect() as conn:
            assert schema.schema_revision(conn) == schema.SCHEMA_REVISION
        engine.dispose()


def test_an_older_sqlite_ledger_with_url_characters_in_its_path_is_upgraded_in_place(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "ads ?%41 #1"
    folder.mkdir()
    db = folder / "What?%20.csv.batchgen.db"
    engine = sa.create_engine(sa.engine.URL.create("sqlite", database=str(db)))
    with engine.begin() as conn:
        schema.upgrade(conn, "0002")
    engine.dispose()

    ledger = Ledger(ledger_url(None, folder / "What?%20.csv"))
    try:
        ledger.set_plan_mark("scope", "digest")  # a table of revision 0003
    finally:
        ledger.close()
    assert [p.name for p in folder.iterdir() if p.name.endswith(".db")] == [db.name]
    with contextlib.closing(sqlite3.connect(db)) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [
            (schema.SCHEMA_REVISION,)
        ]


# A process creating a new ledger that stops after its first table (a slow disk, a lock wait,
# a kill -9) until told to go on: its SQLite connections trace their statements and pause
# before the one after CREATE TABLE jobs, in that process only.
PAUSED_CREATOR = r"""
import sqlite3
import sqlite3.dbapi2
import sys
from batchgen.ledger import Ledger

connect = sqlite3.connect
done = []  # "jobs" once its CREATE TABLE ran, then "paused"

def pause(statement):
    if done == ["jobs"]:
        done.append("paused")
        print("created jobs", flush=True)
        sys.stdin.readline()
    elif not done and statement.strip().startswith("CREATE TABLE jobs"):
        done.append("jobs")

def traced(*args, **kwargs):
    connection = connect(*args, **kwargs)
    connection.set_trace_callback(pause)
    return connection

sqlite3.connect = sqlite3.dbapi2.connect = traced  # SQLAlchemy's driver is sqlite3.dbapi2
Ledger(sys.argv[1]).close()
print("done", flush=True)
"""


def _paused_creator(url: str) -> subprocess.Popen[str]:
    creator = subprocess.Popen(
        [sys.executable, "-c", PAUSED_CREATOR, url],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert creator.stdout is not None
    assert creator.stdout.readline().strip() == "created jobs"
    return creator


def _visible_tables(db: Path) -> list[str]:
    with contextlib.closing(sqlite3.connect(db, timeout=0)) as conn:
        return [row[0] for row in conn.execute("SELECT name FROM sqlite_master")]


@pytest.mark.parametrize("ending", ["goes on", "is killed"])
def test_a_new_sqlite_ledger_is_created_whole_or_not_at_all(ending: str, tmp_path: Path) -> None:
    db = tmp_path / "shared.db"
    url = f"sqlite:///{db}"
    creator = _paused_creator(url)
    try:
        # halfway: another process sees none of it (it would take a half-built ledger for
        # an old one and run the migrations over it, breaking it for good)
        assert _visible_tables(db) == []
        if ending == "goes on":
            out, _ = creator.communicate("go\n", timeout=60)
            assert out.strip() == "done"
        else:
            creator.kill()
            creator.wait(timeout=60)
    finally:
        if creator.poll() is None:
            creator.kill()
    ledger = Ledger(url)  # whole, or created now
    ledger.close()
    assert {"jobs", "run_locks", "plan_marks", "alembic_version"} <= set(_visible_tables(db))
    with contextlib.closing(sqlite3.connect(db)) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [
            (schema.SCHEMA_REVISION,)
        ]


def test_a_ledger_a_newer_batchgen_made_is_refused_with_a_message(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    Ledger(f"sqlite:///{db}").close()
    with contextlib.closing(sqlite3.connect(db)) as conn, conn:
        conn.execute("UPDATE alembic_version SET version_num = '0999'")
    with pytest.raises(LedgerError, match=r"'0999' .*made by a newer batchgen"):
        Ledger(f"sqlite:///{db}")
