"""The ledger on PostgreSQL: the same models, migrations and claims as on SQLite.

These run where BATCHGEN_TEST_PG_URL names a PostgreSQL server that lets its user create
databases (CI starts one: see .ci/run); each test gets a database of its own.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from batchgen.ledger import Claim, JobRecord, Ledger
from batchgen.simulator import Simulator, SimulatorServer
from tests.conftest import ad_rows, fast_config, read_csv, run_cli, start_cli, write_csv

SERVER_URL = os.environ.get("BATCHGEN_TEST_PG_URL", "")
pytestmark = pytest.mark.skipif(not SERVER_URL, reason="BATCHGEN_TEST_PG_URL is not set")


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, empty database on the test server; dropped afterwards."""
    name = f"batchgen_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(SERVER_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield (
            sa.engine.make_url(SERVER_URL).set(database=name).render_as_string(hide_password=False)
        )
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def test_claims_on_postgresql_win_once_and_only_where_the_state_is_expected(
    pg_url: str,
) -> None:
    ledger = Ledger(pg_url)
    try:
        ledger.add_jobs(
            JobRecord(key=k, model_id="m", payload={"p": k}, state="pending") for k in "abc"
        )
        ledger.add_jobs([JobRecord(key="a", model_id="m", payload={}, state="pending")])
        won = ledger.write_jobs(
            [("a", {"state": "in_queue", "request_id": "r-a"})],
            [Claim("a", "pending"), Claim("b", "pending"), Claim("b", "pending"), Claim("c", "x")],
            now=1234.5,
        )
        jobs = ledger.get_jobs()
    finally:
        ledger.close()

    assert won == [False, True, False, False]
    a = jobs["a"]
    assert (a.state, a.request_id, a.payload) == ("in_queue", "r-a", {"p": "a"})
    assert (jobs["b"].state, jobs["b"].submit_attempts, jobs["b"].submitted_at) == (
        "submitting",
        1,
        1234.5,
    )
    assert (jobs["c"].state, jobs["c"].submit_attempts) == ("pending", 0)


def test_two_sheets_sharing_a_postgresql_ledger_pay_once_and_rerun_nothing(
    tmp_path: Path, pg_url: str
) -> None:
    rows = ad_rows(12)
    sheets = [write_csv(tmp_path / f"{name}.csv", rows) for name in ("a", "b")]
    config = fast_config(capacity=8, min_duration=0.2, max_duration=0.4)
    with SimulatorServer(Simulator(config)) as server:
        procs = [
            start_cli(["run", sheet, "--concurrency", "12", "--db", pg_url], server)
            for sheet in sheets
        ]
        for proc in procs:
            _, err = proc.communicate(timeout=60)
            assert proc.returncode in (0, 1), err
        assert len(server.simulator.submissions()) == 12
        for sheet in sheets:
            again = run_cli(["run", sheet, "--db", pg_url], server)
            assert again.returncode == 0, again.stderr
            assert {r["status"] for r in read_csv(sheet)} == {"completed"}
        assert len(server.simulator.submissions()) == 12
