"""The /sync request loop: register with the notifier, build, wait, rebuild.

The listener is registered BEFORE anything is read, so an update that lands while a
response is being computed wakes the wait that follows. When the token already equals
the notifier's current position the build is skipped entirely: an idle incremental
sync costs a dictionary lookup and a token comparison before it waits.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from homeserver.ephemeral.presence import PresenceService
from homeserver.storage.filters import FilterStore

from .builder import SyncBuilder, SyncRequest, clamp, is_empty
from .joined_rooms import JoinedRoomsCache
from .notifier import Notifier

MAX_TIMEOUT_MS = 120_000


class SyncService:
    def __init__(
        self,
        builder: SyncBuilder,
        notifier: Notifier,
        joined: JoinedRoomsCache,
        presence: PresenceService,
        filters: FilterStore,
    ) -> None:
        self.builder = builder
        self.notifier = notifier
        self.joined = joined
        self.presence = presence
        self.filters = filters

    async def sync(
        self, req: SyncRequest, timeout_ms: int, set_presence: str | None = "online"
    ) -> dict[str, Any]:
        # The presence service counts syncs in progress (no offline timeout while any runs).
        async with self.presence.syncing(req.user_id, set_presence):
            return await self._sync(req, timeout_ms)

    async def _sync(self, req: SyncRequest, timeout_ms: int) -> dict[str, Any]:
        deadline = time.monotonic() + min(max(timeout_ms, 0), MAX_TIMEOUT_MS) / 1000
        while True:
            rooms = await self.joined.get(req.user_id)
            with self.notifier.listen(req.user_id, rooms) as listener:
                now = self.notifier.current
                idle = (
                    req.since is not None
                    and not req.full_state
                    and not now.is_after(clamp(req.since, now))
                )
                response = None if idle else await self.builder.build(req, now)
                if response is not None and not is_empty(response):
                    return response
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return response if response is not None else await self.builder.build(req, now)
                woken = await listener.wait(remaining)
            if not woken:
                return await self.builder.build(req, self.notifier.current)
            await asyncio.sleep(0)  # let the writer that woke us finish its announcements
