"""Rerun marks in the ledger: what a sheet held when its last run had finished every job.

Every run that may change job records (and `batchgen cancel`) forgets every sheet's mark when
it starts and when it ends, and a new generation is drawn each time; a run sets its own mark
only if the generation it drew as it started (before it read any record) is still the current
one: no other run or cancel started or ended meanwhile. So a mark is never older than a
change to the jobs it describes.
"""

from __future__ import annotations

import secrets

from batchgen._store import Store

# the row holding the generation: no sheet's scope (an absolute path) is empty
_GENERATION = ""


class RerunMarks(Store):
    """The rerun_marks table of a ledger."""

    def rerun_mark(self, scope: str) -> tuple[str, str] | None:
        """`scope`'s mark: (digest, body), if one is set."""
        with self._read() as cursor:
            cursor.execute(
                self._sql("SELECT digest, body FROM rerun_marks WHERE scope = :scope"),
                {"scope": scope},
            )
            row = cursor.fetchone()
        return None if row is None else (str(row[0]), str(row[1]))

    def rerun_generation(self) -> str | None:
        """The current generation of the marks (None before any run drew one)."""
        mark = self.rerun_mark(_GENERATION)
        return None if mark is None else mark[0]

    def forget_rerun_marks(
        self,
        *,
        scope: str | None = None,
        generation: str | None = None,
        digest: str = "",
        body: str = "",
    ) -> bool:
        """Forget every mark and draw a new generation; then, if `generation` was still the
        current one, set `scope`'s mark (digest, body). Whether it was set."""
        with self._write() as cursor:
            cursor.execute(
                self._sql("SELECT digest FROM rerun_marks WHERE scope = :scope"),
                {"scope": _GENERATION},
            )
            row = cursor.fetchone()
            current = None if row is None else str(row[0])
            cursor.execute("DELETE FROM rerun_marks")
            insert = self._sql(
                "INSERT INTO rerun_marks (scope, digest, body) VALUES (:scope, :digest, :body)"
            )
            fresh = secrets.token_hex(16)
            cursor.execute(insert, {"scope": _GENERATION, "digest": fresh, "body": ""})
            keep = scope is not None and generation is not None and current == generation
            if keep:
                cursor.execute(insert, {"scope": scope, "digest": digest, "body": body})
            return keep

    def rerun_counts(self, scope: str) -> tuple[int, int, int]:
        """Jobs in the ledger, those of them not completed, and run locks of other sheets
        (live or left by a run that died: either may have changed jobs since a mark)."""
        with self._read() as cursor:
            cursor.execute("SELECT COUNT(*) FROM jobs")
            jobs = int(cursor.fetchone()[0] or 0)
            cursor.execute("SELECT COUNT(*) FROM jobs WHERE state <> 'completed'")
            unfinished = int(cursor.fetchone()[0] or 0)
            cursor.execute(
                self._sql("SELECT COUNT(*) FROM run_locks WHERE scope <> :scope"), {"scope": scope}
            )
            others = int(cursor.fetchone()[0] or 0)
        return jobs, unfinished, others
