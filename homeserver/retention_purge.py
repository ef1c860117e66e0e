"""Retention purge jobs (MSC1763, Synapse's `retention.purge_jobs`): delete the messages
rooms' retention policies have expired.

Each configured job runs every `interval` on the main process only (workers never
purge: one process deletes, every process reads; see homeserver/retention.py) and
handles the rooms whose declared max_lifetime (the room's, else the default policy's)
lies in its range, as Synapse picks them. In such a room, the messages this server
received more than the *purge* lifetime ago (the declared one brought within
allowed_lifetime_min/max) go, through the admin history purge (RoomPurger.delete_history:
under the room's lock, caches dropped afterwards). State events and the room's latest
events (its forward extremities) stay; local users' messages go too.

Bounds, per run of one job (so a first run on a large old server cannot stall it):

- at most MAX_ROOMS_PER_RUN rooms examined (one or two indexed queries each);
- at most MAX_EVENTS_PER_RUN events deleted in all;
- each deletion is one transaction of at most BATCH_EVENTS events, holding the room's
  lock only for that long (sends to the room wait for one batch, not for the room).

A run that stops at a bound remembers the room it reached and the next run carries on
from there, so every room is reached in turn.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import partial

from aiohttp import web

from homeserver.background import BackgroundTasks, every
from homeserver.config.retention import PurgeJob, RetentionSettings
from homeserver.rooms.purge import RoomPurger
from homeserver.storage.room_retention import RoomRetention, clock_ms

log = logging.getLogger(__name__)

MAX_ROOMS_PER_RUN = 20_000
MAX_EVENTS_PER_RUN = 50_000
BATCH_EVENTS = 500
ROOM_PAGE = 500


@dataclass
class PurgeRun:
    """What one run did (logged; tests read it)."""

    rooms_examined: int = 0
    rooms_purged: int = 0
    events_deleted: int = 0
    stopped_at_bound: bool = False


class RetentionPurgeJobs:
    def __init__(self, retention: RoomRetention, purger: RoomPurger) -> None:
        self._retention = retention
        self._purger = purger
        # job -> the room ID the previous run stopped at, where the next one starts.
        self._resume: dict[PurgeJob, str] = {}

    @property
    def settings(self) -> RetentionSettings:
        return self._retention.settings

    def start(self, tasks: BackgroundTasks) -> None:
        """Spawn every configured job (each: first after its interval, then every one)."""
        for job in self.settings.purge_jobs:
            log.info("retention purge job: %s", job)
            tasks.spawn(every(job.interval_ms / 1000, partial(self.run, job)), "retention purge")

    async def run(self, job: PurgeJob, now_ms: int | None = None) -> PurgeRun:
        """One run of `job` at `now_ms` (default: the clock)."""
        now = clock_ms() if now_ms is None else now_ms
        settings = self.settings
        result = PurgeRun()
        room_max = await self._retention.rooms_with_policies()
        default = settings.default_max_lifetime_ms
        every_room = default is not None and job.covers(default)
        start = self._resume.pop(job, "")
        budget = MAX_EVENTS_PER_RUN
        async for room_id in self._candidates(room_max, every_room, start):
            if result.rooms_examined >= MAX_ROOMS_PER_RUN:
                self._resume[job] = room_id
                result.stopped_at_bound = True
                break
            result.rooms_examined += 1
            declared = settings.declared_max_lifetime(room_max.get(room_id))
            lifetime = settings.purge_lifetime(room_max.get(room_id))
            if declared is None or lifetime is None or not job.covers(declared):
                continue
            deleted = await self._purge_room(room_id, now - lifetime, budget)
            if deleted:
                result.rooms_purged += 1
                result.events_deleted += deleted
                budget -= deleted
            if budget <= 0:  # this room may hold more: the next run starts with it
                self._resume[job] = room_id
                result.stopped_at_bound = True
                break
        if result.events_deleted or result.stopped_at_bound:
            log.info("retention purge %s: %s", job, result)
        return result

    async def _candidates(
        self, room_max: dict[str, int | None], every_room: bool, start: str
    ) -> AsyncIterator[str]:
        """Room IDs from `start` on, in order: every room when the default policy falls
        in the job's range, else only rooms with a policy of their own."""
        if not every_room:
            for room_id in sorted(r for r in room_max if r >= start):
                yield room_id
            return
        page = await self._retention.room_ids_from(start, ROOM_PAGE, inclusive=True)
        while page:
            for room_id in page:
                yield room_id
            if len(page) < ROOM_PAGE:
                return
            await asyncio.sleep(0)  # a page at a time: other tasks run in between

    async def _purge_room(self, room_id: str, received_before_ms: int, budget: int) -> int:
        deleted = 0
        while deleted < budget:
            batch = min(BATCH_EVENTS, budget - deleted)
            cut = await self._retention.cut_for(room_id, received_before_ms, batch)
            if cut is None:
                break
            purged = await self._purger.delete_history(room_id, cut, delete_local_events=True)
            deleted += purged
            if purged < batch:
                break  # the rest under the cut is kept (state, latest events)
        return deleted


RETENTION_PURGE: web.AppKey[RetentionPurgeJobs] = web.AppKey("retention_purge")
