"""Runs sharing one PostgreSQL ledger (the claims themselves: tests/test_ledger.py).

These run where BATCHGEN_TEST_PG_URL names a PostgreSQL server that lets its user create
databases (CI starts one: see .ci/run); each test gets a database of its own.
"""

from __future__ import annotations

from pathlib import Path

from batchgen.simulator import Simulator, SimulatorServer
from tests.helpers import ad_rows, fast_config, read_csv, run_cli, start_cli, write_csv


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
