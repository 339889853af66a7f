"""Submitting: the feed within the concurrency and budget, the write-ahead claim, the POST."""

from __future__ import annotations

import anyio
from anyio.abc import TaskGroup

from batchgen.client import normalise_status
from batchgen.errors import (
    ApiPermanentError,
    ApiTransientError,
    AuthError,
    BalanceError,
    EndpointError,
    SubmitUncertainError,
)
from batchgen.pool._base import UNKNOWN_HINT, log
from batchgen.pool._following import Following


class Submitting(Following):
    """Feeds pending jobs to submit tasks, each of which follows its job on once accepted."""

    async def _submit_group(self) -> None:
        while self._polls is None:
            await anyio.sleep(0)
        with self._submit_scope:
            async with anyio.create_task_group() as submits:
                await self._feed(submits)
        self._submits_done = True
        self._wake()

    async def _feed(self, submits: TaskGroup) -> None:
        """Start submits while there is room; wait for refused ones that come back."""
        while not self._stopping:
            self.clock.draining = not self._pending
            if not self._pending:
                if self._submitting == 0:
                    return
                await self._changed.wait()
                continue
            if self._in_flight >= self.limit.value or self._submitting >= self._submit_window:
                await self._changed.wait()
                continue
            key = self._pending.popleft()
            record = self.records[key]
            cost = record.estimated_cost or 0.0
            cap = self.options.max_cost
            if cap is not None and self.spent + cost > cap + 1e-9:
                self.budget_blocked += 1
                await self._set(
                    key,
                    error=f"not submitted: it would take the estimated spend past --max-cost "
                    f"${cap:.2f}; rerun with a larger cap to continue",
                )
                continue
            await self._submit_slots.acquire()
            if self._stopping:  # a stop came while waiting for a slot
                self._submit_slots.release()
                self._pending.appendleft(key)
                return
            self._in_flight += 1
            self._submitting += 1
            self.spent += cost
            submits.start_soon(self._submit, key)

    async def _submit(self, key: str) -> None:
        record = self.records[key]
        keep_slot = False
        try:
            if not await self._claim(key):
                return
            if self.cancelled_by is not None:
                # the cancel came while the claim was being written: this submit never
                # leaves; the job goes back to the line, which the cancel marks `cancelled`
                await self._set(key, durable=True, state="pending", error=None)
                self.spent -= record.estimated_cost or 0.0
                self._pending.appendleft(key)
                return
            try:
                answer = await self._ask(
                    self.client.submit(
                        record.model_id, record.payload, on_send=lambda: self._sent.add(key)
                    )
                )
            except SubmitUncertainError as exc:
                await self._set(key, durable=True, state="unknown", error=f"{exc}; {UNKNOWN_HINT}")
                return
            except (AuthError, BalanceError, EndpointError, ApiTransientError) as exc:
                # provably not created: the job goes back to pending, untouched
                await self._set(key, durable=True, state="pending", error=None)
                self.spent -= record.estimated_cost or 0.0
                self._on_submit_refused(key, exc)
                return
            except ApiPermanentError as exc:
                await self._set(key, durable=True, state="failed", error=str(exc))
                return
            self._reached = True
            state = normalise_status(answer.status)
            await self._set(
                key,
                durable=True,
                state=state if state in ("in_queue", "in_progress") else "in_queue",
                request_id=answer.request_id,
            )
            self.limit.succeeded()
            self._submit_window = min(self._submit_window + 0.5, self.options.submits_in_flight)
            keep_slot = not self._poll_scope.cancel_called
        finally:
            self._submitting -= 1
            self._submit_slots.release()
            if not keep_slot:
                self._release()
            else:
                self._wake()
        if not keep_slot:
            return
        # this task follows the job on (a task per job, not one to submit and one to poll);
        # its own scope, so stopping the polls leaves the other submits running
        with anyio.CancelScope() as scope:
            self._follow_scopes.add(scope)
            try:
                await self._poll(key)
            finally:
                self._follow_scopes.discard(scope)

    async def _claim(self, key: str) -> bool:
        """Write-ahead: mark the job `submitting` if its ledger state is still ours.

        The update is conditional, so of several runners sharing one ledger only one
        submits a given job; the others leave it to that one.
        """
        record = self.records[key]
        claimed_at = await self.writer.claim(key, expect=record.state)
        if claimed_at is None:
            if self.writer.failure is not None:
                return False
            # shown in this sheet only: the ledger row belongs to the run that claimed it
            record.error = "another run sharing this ledger submitted this job; rerun to see it"
            self._dirty = True
            log.warning("row %s: another run is submitting this job; left to it", record.sheet_row)
            return False
        previous = record.state
        record.update(
            {
                "state": "submitting",
                "submit_attempts": record.submit_attempts + 1,
                "submitted_at": claimed_at,
                "error": None,
            }
        )
        self._dirty = True
        self.events.job_changed(record, previous)
        return True
