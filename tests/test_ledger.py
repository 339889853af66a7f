"""The ledger's group write: changes, then write-ahead claims, in one transaction."""

from __future__ import annotations

from pathlib import Path

from batchgen.ledger import Claim, JobRecord, Ledger


def _ledger(tmp_path: Path, keys: list[str]) -> Ledger:
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    ledger.add_jobs(JobRecord(key=k, model_id="m", payload={"p": k}, state="pending") for k in keys)
    return ledger


def test_claims_win_only_where_the_state_is_still_expected_and_each_job_once(
    tmp_path: Path,
) -> None:
    ledger = _ledger(tmp_path, ["a", "b", "c"])
    try:
        won = ledger.write_jobs(
            [("a", {"state": "in_queue", "request_id": "r-a"})],  # applied before the claims
            [Claim("a", "pending"), Claim("b", "pending"), Claim("b", "pending"), Claim("c", "x")],
            now=1234.5,
        )
        jobs = ledger.get_jobs()
    finally:
        ledger.close()

    assert won == [False, True, False, False]
    assert (jobs["a"].state, jobs["a"].request_id, jobs["a"].submit_attempts) == (
        "in_queue",
        "r-a",
        0,
    )
    assert (jobs["b"].state, jobs["b"].submit_attempts, jobs["b"].submitted_at) == (
        "submitting",
        1,
        1234.5,
    )
    assert jobs["b"].payload == {"p": "b"}
    assert (jobs["c"].state, jobs["c"].submit_attempts) == ("pending", 0)
