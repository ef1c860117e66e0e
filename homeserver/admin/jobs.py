"""Background jobs started through the admin API, one at a time.

A request that starts a long job (deleting a room, purging history) gets a job ID at
once; the job runs in the background and its status (scheduled, active, complete,
failed) is kept in the database (`AdminJobStore`), which the status endpoints and
/_synapse/admin/v1/scheduled_tasks read. Jobs run one after another: each holds the
database's write lock for a while, and running them concurrently would only make
everyone else wait longer. At most MAX_QUEUED jobs wait; more are refused (429).
A job left unfinished by a restart is marked failed at the next start.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

from homeserver.background import cancel_and_wait
from homeserver.errors import limit_exceeded
from homeserver.storage.admin_jobs import AdminJobStore, Job

log = logging.getLogger(__name__)

MAX_QUEUED = 100
# Finished jobs are kept this long (Synapse keeps delete statuses for a day).
KEEP_FINISHED_MS = 7 * 24 * 3600 * 1000

# A job's body: gets a `progress(result)` callback to publish partial results.
JobBody = Callable[[Callable[[Any], Awaitable[None]]], Awaitable[Any]]


class JobRunner:
    def __init__(self, store: AdminJobStore) -> None:
        self._store = store
        self._queue: asyncio.Queue[tuple[str, JobBody]] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def store(self) -> AdminJobStore:
        return self._store

    async def start(self) -> None:
        failed = await self._store.fail_interrupted("interrupted by a server restart")
        if failed:
            log.warning("%d admin job(s) were interrupted by a restart; marked failed", failed)
        self._worker = asyncio.create_task(self._run(), name="admin-jobs")

    async def stop(self) -> None:
        await cancel_and_wait(self._worker)
        self._worker = None

    async def submit(
        self, action: str, resource_id: str | None, params: dict[str, Any], body: JobBody
    ) -> Job:
        """Record a scheduled job and queue `body`; its ID identifies it from now on."""
        if self._queue.qsize() >= MAX_QUEUED:
            raise limit_exceeded(60_000)
        job = await self._store.add(secrets.token_urlsafe(12), action, resource_id, params)
        self._idle.clear()
        self._queue.put_nowait((job.job_id, body))
        return job

    async def wait_idle(self) -> None:
        """Until every queued job finished (tests, the synchronous v1 room delete)."""
        await self._idle.wait()

    async def wait_for(self, job_id: str, poll_s: float = 0.05) -> Job | None:
        while True:
            job = await self._store.get(job_id)
            if job is None or job.status not in ("scheduled", "active"):
                return job
            await asyncio.sleep(poll_s)

    async def _run(self) -> None:
        while True:
            job_id, body = await self._queue.get()
            try:
                await self._run_one(job_id, body)
            finally:
                if self._queue.empty():
                    self._idle.set()

    async def _run_one(self, job_id: str, body: JobBody) -> None:
        async def progress(result: Any) -> None:
            await self._store.update(job_id, "active", result=result)

        await self._store.update(job_id, "active")
        try:
            result = await body(progress)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the job failed; the server goes on
            log.exception("admin job %s failed", job_id)
            job = await self._store.get(job_id)
            await self._store.update(
                job_id, "failed", result=job.result if job else None, error=str(exc)[:1000]
            )
            return
        await self._store.update(job_id, "complete", result=result)
        await self._store.delete_older_than(int(time.time() * 1000) - KEEP_FINISHED_MS)
