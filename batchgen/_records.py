"""Job records in the ledger: reads, group writes with write-ahead claims, and plan marks."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, fields
from typing import Any

from batchgen._store import Store, insert_new


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
    claimed_by: str | None = None  # the run (its lock's run_id) that last claimed the job

    def update(self, values: dict[str, Any]) -> None:
        """Set several fields at once (in memory only)."""
        for name, value in values.items():
            setattr(self, name, value)


_RECORD_FIELDS = [f.name for f in fields(JobRecord)]


@dataclass(frozen=True)
class Claim:
    """Write-ahead mark of a job about to be submitted, won only if its state is `expect`.

    A won claim sets state `submitting`, adds one to submit_attempts, clears the error,
    stamps submitted_at with the commit's time and claimed_by with the ledger's run_id: a
    claim belongs to its run, and only a run that is gone loses it (see batchgen.resume).
    """

    key: str
    expect: str


def _to_row(record: JobRecord) -> dict[str, Any]:
    row = {name: getattr(record, name) for name in _RECORD_FIELDS}
    row["payload"] = _payload_text(record.payload)
    return row


def _payload_text(payload: dict[str, Any]) -> str:
    """A job's input as the ledger stores it."""
    return json.dumps(payload, ensure_ascii=False, sort_keys=True)


def _quoted(column: str) -> str:
    return '"key"' if column == "key" else column  # a keyword in SQL


_COLUMNS = [_quoted(name) for name in _RECORD_FIELDS]
# a won claim (see Claim): only where the job's state is still the one expected
_CLAIM = (
    "UPDATE jobs SET state = 'submitting', submit_attempts = submit_attempts + 1, "
    "submitted_at = :_now, error = NULL, updated_at = :_now, claimed_by = :_run "
    'WHERE "key" = :_key AND state = :_expect'
)


# what the sheet shows of a job, taken into a ledger that has no request_id for it
_ADOPTED = ("state", "request_id", "video_url", "error", "finished_at")
_ADOPT = (
    "UPDATE jobs SET state = :state, request_id = :request_id, video_url = :video_url, "
    "error = :error, finished_at = :finished_at, submit_attempts = submit_attempts + 1, "
    'submitted_at = :now, updated_at = :now WHERE "key" = :key AND request_id IS NULL '
    "AND state IN ('pending', 'unknown') "
    "AND NOT EXISTS (SELECT 1 FROM jobs AS held WHERE held.request_id = :request_id)"
)


class JobStore(Store):
    """The jobs table and the plan marks of a ledger."""

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
        columns = [c for c in _COLUMNS if payloads or c != "payload"]
        selected = f"SELECT {', '.join(columns)} FROM jobs"
        conditions: list[str] = []
        params: dict[str, Any] = {}
        if not_state is not None:
            # two ranges of the state index (SQLite scans the table for `!=`)
            conditions.append("(state < :not_state OR state > :not_state)")
            params["not_state"] = not_state
        wanted = None if keys is None else set(keys)
        out: dict[str, JobRecord] = {}
        payload_at = _RECORD_FIELDS.index("payload")
        with self._read() as cursor:
            if wanted is not None and len(wanted) <= 2000:
                batches = []
                for part in _chunks(list(wanted), 500):
                    key_in, key_params = _key_in(part)
                    query = " AND ".join([*conditions, key_in])
                    cursor.execute(self._sql(f"{selected} WHERE {query}"), params | key_params)
                    batches.append(cursor.fetchall())
            else:
                # one scan beats thousands of IN lookups
                query = f"{selected} WHERE {conditions[0]}" if conditions else selected
                cursor.execute(self._sql(query), params)
                batches = [cursor.fetchall()]
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
        with self._read() as cursor:
            cursor.execute(self._completed('"key", sheet_row'))
            return dict(cursor.fetchall())

    def completed_cost(self, keys: Sequence[str] | None = None) -> float:
        """The estimated costs of the completed jobs (of `keys` only, if given), summed."""
        with self._read() as cursor:
            if keys is None:
                cursor.execute(self._completed("SUM(estimated_cost)"))
                return cursor.fetchone()[0] or 0.0
            total = 0.0
            for part in _chunks(list(keys), 500):
                key_in, key_params = _key_in(part)
                query = f"{self._completed('SUM(estimated_cost)')} AND {key_in}"
                cursor.execute(self._sql(query), key_params)
                total += cursor.fetchone()[0] or 0.0
            return total

    def _completed(self, columns: str) -> str:
        """A SELECT of `columns` of the completed jobs, from ix_jobs_completed.

        The state is a literal (with a parameter no planner can tell that the partial index
        applies), and SQLite, without statistics, must be told to use it.
        """
        source = "jobs INDEXED BY ix_jobs_completed" if self.is_local else "jobs"
        return f"SELECT {columns} FROM {source} WHERE state = 'completed'"

    def add_jobs(self, records: Iterable[JobRecord]) -> None:
        """Insert records whose key is not in the ledger yet (one transaction)."""
        rows = [_to_row(r) for r in records]
        if not rows:
            return
        # another runner may have added some meanwhile: insert only the missing ones
        insert = self._sql(insert_new("jobs", _COLUMNS, '"key"'))
        with self._write() as cursor:
            cursor.executemany(insert, rows)

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
                row["payload"] = _payload_text(row["payload"])
            row.setdefault("updated_at", now)
            row["_key"] = key
            groups.setdefault(tuple(sorted(row)), []).append(row)
        with self._write() as cursor:
            for columns, rows in groups.items():
                cursor.executemany(self._update(columns), rows)
            won = []
            claim = self._sql(_CLAIM)
            for item in claims:
                values = {
                    "_key": item.key,
                    "_expect": item.expect,
                    "_now": now,
                    "_run": self.run_id,
                }
                cursor.execute(claim, values)
                # a job claimed twice in one batch is won once: the second finds it submitting
                won.append(cursor.rowcount == 1)
            return won

    def adopt_jobs(self, adopted: Sequence[JobRecord]) -> set[str]:
        """Give jobs the request_id (and state) the sheet shows for them; the keys that took it.

        The sheet is a second ledger, never the first: only a job this ledger holds without
        a request_id (pending or unknown) takes one, and only an id no other job holds.
        """
        won: set[str] = set()
        if not adopted:
            return won
        statement = self._sql(_ADOPT)
        now = time.time()
        with self._write() as cursor:
            for record in adopted:
                values = {name: getattr(record, name) for name in _ADOPTED}
                cursor.execute(statement, {**values, "key": record.key, "now": now})
                if cursor.rowcount == 1:
                    won.add(record.key)
        return won

    def _update(self, columns: tuple[str, ...]) -> str:
        """An UPDATE by key (`_key`) setting `columns`, built once per set of columns."""
        statement = self._statements.get(columns)
        if statement is None:
            unknown = set(columns) - {*_RECORD_FIELDS, "_key"}
            if unknown:
                raise ValueError(f"no such column: {', '.join(sorted(unknown))}")
            assignments = ", ".join(f"{_quoted(c)} = :{c}" for c in columns if c != "_key")
            statement = self._sql(f'UPDATE jobs SET {assignments} WHERE "key" = :_key')
            self._statements[columns] = statement
        return statement

    # plan marks ------------------------------------------------------------

    def plan_mark(self, scope: str) -> str | None:
        """The digest of `scope`'s jobs and rows as its last resume left them, if still valid."""
        with self._read() as cursor:
            cursor.execute(
                self._sql("SELECT digest FROM plan_marks WHERE scope = :scope"), {"scope": scope}
            )
            row = cursor.fetchone()
        return row[0] if row is not None else None

    def set_plan_mark(self, scope: str, digest: str) -> None:
        """Record that every job of `scope`'s plan (`digest`) is in the ledger at its row."""
        with self._write() as cursor:
            cursor.execute(
                self._sql("DELETE FROM plan_marks WHERE scope = :scope"), {"scope": scope}
            )
            cursor.execute(
                self._sql("INSERT INTO plan_marks (scope, digest) VALUES (:scope, :digest)"),
                {"scope": scope, "digest": digest},
            )

    def clear_plan_marks(self) -> None:
        """Forget every sheet's mark: jobs are being added or rows moved, which may be another
        sheet's too (sheets sharing a ledger share identical jobs)."""
        with self._write() as cursor:
            cursor.execute("DELETE FROM plan_marks")

    def job_count(self) -> int:
        """How many jobs the ledger holds."""
        with self._read() as cursor:
            cursor.execute("SELECT COUNT(*) FROM jobs")
            return cursor.fetchone()[0] or 0


def _key_in(keys: list[str]) -> tuple[str, dict[str, str]]:
    """A condition that the key is one of `keys`, and its parameters."""
    params = {f"k{i}": key for i, key in enumerate(keys)}
    return '"key" IN (' + ", ".join(f":{name}" for name in params) + ")", params


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
