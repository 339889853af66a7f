"""The ledger: its group write (changes, then write-ahead claims, in one transaction), its reads.

Run on SQLite and, where BATCHGEN_TEST_PG_URL names a server, on PostgreSQL.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from batchgen import ledger as ledger_module
from batchgen.errors import LedgerError
from batchgen.ledger import Claim, JobRecord, Ledger


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty ledger database of each kind."""
    if request.param == "postgresql":
        return str(request.getfixturevalue("pg_url"))
    return f"sqlite:///{tmp_path / 'ledger.db'}"


def test_claims_win_only_where_the_state_is_still_expected_and_each_job_once(
    ledger_url: str,
) -> None:
    ledger = Ledger(ledger_url)
    try:
        ledger.add_jobs(
            JobRecord(key=k, model_id="m", payload={"p": k}, state="pending") for k in "abc"
        )
        # a job already in the ledger is left as it is
        ledger.add_jobs([JobRecord(key="a", model_id="m", payload={}, state="pending")])
        won = ledger.write_jobs(
            [("a", {"state": "in_queue", "request_id": "r-a"})],  # applied before the claims
            [Claim("a", "pending"), Claim("b", "pending"), Claim("b", "pending"), Claim("c", "x")],
            now=1234.5,
        )
        jobs = ledger.get_jobs()
    finally:
        ledger.close()

    assert won == [False, True, False, False]
    a, b, c = jobs["a"], jobs["b"], jobs["c"]
    assert (a.state, a.request_id, a.submit_attempts, a.payload) == (
        "in_queue",
        "r-a",
        0,
        {"p": "a"},
    )
    assert (b.state, b.submit_attempts, b.submitted_at, b.payload) == (
        "submitting",
        1,
        1234.5,
        {"p": "b"},
    )
    assert (c.state, c.submit_attempts) == ("pending", 0)


def test_a_ledger_that_cannot_be_read_says_so_as_a_ledger_error(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    ledger = Ledger(f"sqlite:///{db}")
    try:
        with sqlite3.connect(db) as conn:  # a ledger damaged behind its back
            conn.execute("DROP TABLE jobs")
            conn.execute("DROP TABLE plan_marks")
        # the lean reads run on the driver's cursor, the others through SQLAlchemy
        reads = [
            ledger.completed_rows,
            ledger.completed_cost,
            lambda: ledger.completed_cost(["a"]),
            lambda: ledger.get_jobs(["a"]),
            ledger.get_jobs,
            ledger.job_count,
            lambda: ledger.plan_mark("scope"),
        ]
        for read in reads:
            with pytest.raises(LedgerError, match="cannot read the ledger: no such table"):
                read()
    finally:
        ledger.close()


def test_a_group_write_that_fails_leaves_nothing_half_written(ledger_url: str) -> None:
    ledger = Ledger(ledger_url)
    try:
        ledger.add_jobs(
            JobRecord(key=k, model_id="m", payload={}, state="pending") for k in ("a", "b")
        )
        with pytest.raises(LedgerError, match="cannot write the ledger"):
            ledger.write_jobs(
                [("a", {"state": "in_queue", "request_id": "r-a"}), ("b", {"no_such": 1})],
                [Claim("b", "pending")],
            )
        after_failure = ledger.get_jobs()
        # the next group write goes on, on a fresh connection
        won = ledger.write_jobs([("a", {"state": "in_queue"})], [Claim("b", "pending")])
        jobs = ledger.get_jobs()
    finally:
        ledger.close()
    assert {k: (r.state, r.request_id) for k, r in after_failure.items()} == {
        "a": ("pending", None),
        "b": ("pending", None),
    }
    assert won == [True]
    # nothing of the failed group reached the disk later either
    assert (jobs["a"].state, jobs["a"].request_id, jobs["b"].state) == (
        "in_queue",
        None,
        "submitting",
    )


def test_text_sqlite_cannot_encode_fails_the_write_without_holding_the_ledger(
    tmp_path: Path,
) -> None:
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    try:
        ledger.add_jobs(
            JobRecord(key=k, model_id="m", payload={}, state="pending") for k in ("a", "b")
        )
        with pytest.raises(LedgerError, match="cannot write the ledger"):
            ledger.write_jobs(
                [("a", {"state": "in_queue", "request_id": "r-a"}), ("b", {"error": "\ud83d"})]
            )
        # the failed group's transaction is gone: another connection writes at once (with
        # the transaction left open it waited 15 s for the lock and failed)
        with sqlite3.connect(tmp_path / "ledger.db", timeout=0) as other:
            other.execute("UPDATE jobs SET label = 'x' WHERE key = 'b'")
        ledger.write_jobs([("b", {"state": "failed"})])
        jobs = ledger.get_jobs()
    finally:
        ledger.close()
    assert (jobs["a"].state, jobs["a"].request_id) == ("pending", None)
    assert (jobs["b"].state, jobs["b"].label) == ("failed", "x")


def test_a_run_on_an_existing_sqlite_ledger_imports_neither_sqlalchemy_nor_alembic(
    tmp_path: Path,
) -> None:
    # they build or upgrade a ledger (the migrations are the schema); a ledger at the newest
    # revision is recognised by its stamp, read with plain sqlite3
    code = (
        "import sys\n"
        "from batchgen.ledger import Claim, JobRecord, Ledger\n"
        "ledger, key = Ledger(sys.argv[1]), sys.argv[2]\n"
        "ledger.add_jobs([JobRecord(key=key, model_id='m', payload={}, state='pending')])\n"
        "assert ledger.write_jobs([], [Claim(key, 'pending')]) == [True]\n"
        "ledger.acquire_lock('scope', run_id='r')\n"
        "ledger.release_lock('scope', run_id='r')\n"
        "assert ledger.get_jobs()[key].state == 'submitting'\n"
        "ledger.close()\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'sqlalchemy', 'alembic'}))\n"
    )
    imported = {}
    for attempt in ("new", "existing"):
        done = subprocess.run(
            [sys.executable, "-c", code, f"sqlite:///{tmp_path / 'ledger.db'}", attempt],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        imported[attempt] = done.stdout.strip()
    assert imported == {"new": "['alembic', 'sqlalchemy']", "existing": "[]"}


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("sqlite://", "a SQLite ledger is a file"),
        ("sqlite:///:memory:", "a SQLite ledger is a file"),
        ("sqlite://ledger.db", "a SQLite URL is sqlite:///relative/path"),  # one slash short
        ("sqlite:///ledger.db?mode=ro", r"a SQLite URL takes no \?options"),
        ("mysql://me:s3cret@127.0.0.1/db", "a SQLite file .* or a PostgreSQL database"),
        ("postgresql+pg8000://me:s3cret@127.0.0.1/db", "cannot open the ledger"),
    ],
)
def test_a_ledger_url_batchgen_cannot_keep_is_refused_with_a_message(
    url: str, message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(LedgerError, match=message) as refused:
        Ledger(url)
    assert "s3cret" not in str(refused.value)
    assert list(tmp_path.iterdir()) == []  # no file made under a wrong name


def test_a_ledger_beside_a_sheet_with_url_characters_in_its_name(tmp_path: Path) -> None:
    for name in ("What?.xlsx", "100% #1.csv", "a%20b.csv"):
        ledger = Ledger(ledger_module.ledger_url(None, tmp_path / name))
        ledger.close()
        assert (tmp_path / f"{name}.batchgen.db").is_file()
    # a URL's escapes are decoded, as SQLAlchemy decodes them (an existing ledger is found)
    Ledger(f"sqlite:///{tmp_path}/my%20ledger.db").close()
    assert (tmp_path / "my ledger.db").is_file()


def test_a_ledger_an_earlier_batchgen_kept_under_a_cut_name_is_still_found(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # before 2026-11-26 the path went to SQLAlchemy unquoted: "What?.csv" had the ledger
    # "What" (the rest read as URL options), and %-escapes were decoded
    for sheet, earlier in (("What?.csv", "What"), ("a%20b.csv", "a b.csv.batchgen.db")):
        ledger = Ledger(f"sqlite:///{tmp_path / 'made.db'}")
        ledger.add_jobs([JobRecord(key=sheet, model_id="m", payload={}, state="completed")])
        ledger.close()
        (tmp_path / "made.db").rename(tmp_path / earlier)
        with caplog.at_level("WARNING", logger="batchgen"):
            found = Ledger(ledger_module.ledger_url(None, tmp_path / sheet))
        try:
            assert list(found.get_jobs()) == [sheet]
        finally:
            found.close()
        assert f"using the ledger {tmp_path / earlier}" in caplog.text
        assert not (tmp_path / f"{sheet}.batchgen.db").exists()
    # a file of that name that is no ledger is left alone
    (tmp_path / "Who").write_text("notes")
    url = ledger_module.ledger_url(None, tmp_path / "Who?.csv")
    assert url.endswith("/Who%3F.csv.batchgen.db")
