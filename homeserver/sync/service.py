"""The /sync request loop: register with the notifier, build, wait, rebuild.

The listener is registered BEFORE anything is read, so an update that lands while a
response is being computed wakes the wait that follows. When the token already equals
the notifier's current position the build is skipped entirely: an idle incremental
sync costs a dictionary lookup and a token comparison before it waits.

Why no item can fall between a response's data and its `next_batch` (the token `now`,
read from `Notifier.current` in `_build` before any data is read):

1. Every read of the build is bounded above by `now`, per stream (timeline and
   membership rows by `now.events`, receipts by `now.receipts`, ...), so an item that
   commits while the response is being built is left for the next sync, never skipped:
   the next sync starts from `now` and the item's position is above it.
2. A stream's position reaches `Notifier.current` only after everything at or below it
   can be read, so the bounded reads of (1) see every item up to `now`:
   - events: positions are allocated inside the serialised write transaction, so commit
     order is stream order, and the persister announces commits strictly in that order
     (`rooms.commit_order`), after the commit and after a redaction is applied. The
     in-memory activity window is a listener of the same announcements, so it holds
     every event at or below the announced position (it answers None, "ask the
     database", for what it no longer holds: tests/storage/test_sync_activity.py).
   - receipts, account data, to-device and device lists: positions come from the
     database inside the write transaction (serialised, across a deployment too) and
     are announced after the commit; readers query the database, where every smaller
     position is already committed.
   - typing (memory only) and presence: the data is updated before (typing: in the same
     synchronous step as) the position is announced; presence is a latest-state stream,
     so a newer entry stands for an older one.
3. Tokens from before a restart are clamped to the current positions (`clamp`).

tests/client/test_sync_consistency.py checks the result with concurrent writers and
syncing clients on SQLite and PostgreSQL.
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
from .tokens import STREAMS, StreamToken

MAX_TIMEOUT_MS = 120_000

# How many /sync responses are built at once. A build is Python work between database
# reads; running more of them at once adds no throughput on one event loop, only memory
# (each holds its response while it grows) and delay for every other request queued on
# the loop: 1,000 concurrent initial syncs of a 1,000-member room held a message send
# for 80 s and the process at 530 MB. Initial (and full-state) syncs are big and rare,
# incremental ones small and latency-sensitive, so each kind has its own pool and a
# flood of initial syncs cannot delay the long-polls' answers.
MAX_INITIAL_BUILDS = 2
MAX_INCREMENTAL_BUILDS = 16

# A long-poll woken only by presence (notifier.LAZY_STREAMS) waits this long for more
# before answering, unless something else arrives first: presence a second late costs
# users nothing, and 1,000 members of one room coming online answer each long-poll a
# few times instead of 1,000 times.
LAZY_WAKE_DELAY_S = 1.0


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
        self._initial_slots = asyncio.Semaphore(MAX_INITIAL_BUILDS)
        self._incremental_slots = asyncio.Semaphore(MAX_INCREMENTAL_BUILDS)

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
                    and not _moved_for(req, clamp(req.since, now), now)
                )
                response = None if idle else await self._build(req)
                if response is not None and not is_empty(response):
                    return response
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return response if response is not None else await self._build(req)
                woken = await listener.wait(remaining)
                if woken:
                    lazy = min(LAZY_WAKE_DELAY_S, deadline - time.monotonic())
                    if lazy > 0:
                        await listener.wait_urgent(lazy)
            if not woken:
                return await self._build(req)
            await asyncio.sleep(0)  # let the writer that woke us finish its announcements

    async def _build(self, req: SyncRequest) -> dict[str, Any]:
        """Build in a free slot, with the token read once the slot is ours (so a
        response that waited for its turn is as fresh as one that did not)."""
        initial = req.since is None or req.full_state
        async with self._initial_slots if initial else self._incremental_slots:
            return await self.builder.build(req, self.notifier.current)


def _moved_for(req: SyncRequest, since: StreamToken, now: StreamToken) -> bool:
    """Whether a stream this request can see moved (presence filtered out is ignored:
    a client that asked for no presence is not answered for it)."""
    moved = [s for s in STREAMS if getattr(now, s) > getattr(since, s)]
    if moved == ["presence"]:
        presence = req.filter.presence
        return not (presence.allows_nothing or not presence.allows_type("m.presence"))
    return bool(moved)
