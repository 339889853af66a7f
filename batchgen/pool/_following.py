"""Following a submitted job: when to look, what its answer means, its result and video."""

from __future__ import annotations

import time
from typing import Any

import anyio

from batchgen.client import FINAL_STATUSES, JobStatus, normalise_status
from batchgen.errors import (
    ApiError,
    ApiPermanentError,
    ApiTransientError,
    AuthError,
    BalanceError,
    NotFoundError,
)
from batchgen.pool._base import PoolBase, log


class Following(PoolBase):
    """Polls each job to its end, fetches the result, downloads the video."""

    async def _poll(self, key: str) -> None:
        record = self.records[key]
        checks = 0
        # monotonic time of the submit, also for jobs resumed from an earlier run
        submitted = time.monotonic() - max(0.0, time.time() - (record.submitted_at or time.time()))
        last_look = submitted
        # --job-timeout counts from the submit, or from this run's start for an older job
        followed_since = max(submitted, self._started)
        # the first few jobs of a run are looked at early, so the clock learns soon
        probe = self.clock.take_probe()
        try:
            while True:
                delay = self.clock.next_delay(
                    state=record.state,
                    age=time.monotonic() - submitted,
                    checks=checks,
                    queue_position=record.queue_position,
                    probe=probe,
                )
                if self.clock.learned:
                    await anyio.sleep(delay)
                else:
                    with anyio.move_on_after(delay) as waited:
                        await self._learned.wait()
                    if not waited.cancelled_caught:
                        continue  # the clock learned meanwhile: place this check anew
                checks += 1
                try:
                    answer, is_result = await self._ask(self._look(record.request_id or ""))
                except NotFoundError as exc:
                    await self._set(key, state="failed", error=str(exc), finished_at=time.time())
                    return
                except AuthError as exc:
                    self._on_submit_refused(key, exc)
                    return
                except ApiError:
                    # anything else (5xx, 402 on a poll, bad answers) may pass: look again later
                    answer = None
                done = answer is not None and normalise_status(answer.status) in FINAL_STATUSES
                if not done and time.monotonic() - followed_since > self.options.job_timeout:
                    await self._set(
                        key,
                        error=f"still {record.state} after "
                        f"{self.options.job_timeout / 60:g} min (request "
                        f"{record.request_id}); a rerun keeps following it",
                    )
                    return
                if answer is None:
                    continue
                self._reached = True
                state = normalise_status(answer.status)
                if state in FINAL_STATUSES:
                    turnaround = answer.server_turnaround
                    if turnaround is None or turnaround < 0:
                        # it finished somewhere between the last look and this one
                        turnaround = (last_look + time.monotonic()) / 2 - submitted
                    else:
                        # it was not done at the last look, whatever the server's clock says
                        turnaround = max(turnaround, last_look - submitted)
                    self.clock.observe(turnaround)
                    if self.clock.learned:
                        self._learned.set()
                    if await self._finish(key, state, answer if is_result else None):
                        return
                    continue
                last_look = time.monotonic()
                if state == "in_queue":
                    self.clock.saw_queued()
                if state != record.state or answer.queue_position != record.queue_position:
                    extra: dict[str, Any] = (
                        {"started_at": time.time()} if state == "in_progress" else {}
                    )
                    await self._set(key, state=state, queue_position=answer.queue_position, **extra)
        finally:
            self._release()

    async def _look(self, request_id: str) -> tuple[JobStatus, bool]:
        """One check of a job; (answer, whether it is the result answer).

        The result call answers with the current status until the job is done (API.md), so
        one call per check serves both; an API that refuses it early gets status calls.
        """
        if self._poll_results:
            try:
                return await self.client.result(request_id), True
            except NotFoundError:
                # an API that says 404 to results not ready yet: trust status to decide
                status = await self.client.status(request_id)  # a real 404 raises here
                self._poll_results = False
                log.info("the API answers 404 to early result calls; polling status")
                return status, False
            except ApiPermanentError as exc:
                if exc.status_code not in (400, 405, 422) or isinstance(exc, BalanceError):
                    raise
                self._poll_results = False
                log.info("the API refuses result calls before the end (%s); polling status", exc)
        return await self.client.status(request_id), False

    async def _finish(self, key: str, state: str, result: JobStatus | None) -> bool:
        """Record a final state (fetching the result if needed); False if it is not ready."""
        if state == "cancelled":
            await self._set(key, state="cancelled", queue_position=None, finished_at=time.time())
            return True
        record = self.records[key]
        if result is None:
            try:
                result = await self._ask(self.client.result(record.request_id or ""))
            except NotFoundError as exc:
                await self._set(key, state="failed", error=str(exc), finished_at=time.time())
                return True
            except AuthError as exc:
                self._on_submit_refused(key, exc)
                return True
            except ApiError:
                return False  # it finished; the next look fetches the result again
        final = normalise_status(result.status)
        if final not in FINAL_STATUSES:
            return False
        error: str | None
        if final == "completed" and not result.video_url:
            final = "failed"
            error = result.error or "the API reported completion but gave no video URL"
        else:
            error = result.error if final != "completed" else None
        if final == "failed" and not error:
            error = "the API reported the job failed without a reason"
        await self._set(
            key,
            state=final,
            video_url=result.video_url,
            error=error,
            cost=result.cost,
            queue_position=None,
            finished_at=time.time(),
        )
        if final == "completed" and self.options.download_dir is not None:
            assert self._polls is not None
            self._polls.start_soon(self._download, key)
        return True

    async def _download(self, key: str) -> None:
        record = self.records[key]
        directory = self.options.download_dir
        if directory is None or not record.video_url or self.options.download_name is None:
            return
        dest = directory / self.options.download_name(record)
        if dest.is_file() and dest.stat().st_size > 0:
            if record.download_path != str(dest):
                await self._set(key, download_path=str(dest))
            return
        async with self._download_slots:
            try:
                directory.mkdir(parents=True, exist_ok=True)
                await self.client.download(record.video_url, dest)
            except (ApiTransientError, OSError) as exc:
                self._notice(f"row {record.sheet_row}: download failed: {exc}")
                return
        await self._set(key, download_path=str(dest))
