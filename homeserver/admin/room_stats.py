"""Keeps `room_stats` (what the admin room list shows and sorts by) in step with rooms.

Nothing on the send path waits for it: the persister tells us a state event was
stored, a background task folds the changed rooms in (debounced, in batches), and
`catch_up` runs before each read so a listing never misses a change committed before
the request. Progress is a stream ordering stored with the rows, so a restart resumes
where the last run stopped, and rooms that have no row yet (an upgraded server's
existing rooms) are filled in on the first pass.

Only state events mark a room as changed (memberships included); a current-state
change without a new state event (a state reset when forks merge) shows up with the
room's next state event.
"""

from __future__ import annotations

import asyncio
import logging

from homeserver.background import cancel_and_wait
from homeserver.events import Event
from homeserver.storage import EventStore
from homeserver.storage.admin_rooms import AdminRoomStore

log = logging.getLogger(__name__)

BATCH_ROOMS = 200
DEBOUNCE_S = 0.5


class RoomStatsUpdater:
    def __init__(self, store: AdminRoomStore, events: EventStore) -> None:
        self._store = store
        self._events = events
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # -- EventListener ----------------------------------------------------------------

    def on_new_event(self, event: Event, stream_ordering: int) -> None:
        if event.is_state():
            self._wake.set()

    # -- lifetime ---------------------------------------------------------------------

    async def start(self) -> None:
        self._wake.set()  # the first pass fills rooms without a row
        self._task = asyncio.create_task(self._loop(), name="room-stats")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def _loop(self) -> None:
        while True:
            await self._wake.wait()
            await asyncio.sleep(DEBOUNCE_S)
            self._wake.clear()
            try:
                await self.catch_up()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("room statistics update failed; retrying with the next change")

    # -- the work ---------------------------------------------------------------------

    async def catch_up(self) -> int:
        """Fold in every state change committed so far; returns rooms refreshed."""
        async with self._lock:
            head = await self._events.get_current_stream_position()
            position = await self._store.stats_position()
            rooms = set(await self._store.rooms_without_stats())
            if head > position:
                rooms.update(await self._store.rooms_with_state_changes(position, head))
            if not rooms and head == position:
                return 0
            ordered = sorted(rooms)
            if not ordered:
                await self._store.refresh_room_stats([], head)
            for i in range(0, len(ordered), BATCH_ROOMS):
                last = i + BATCH_ROOMS >= len(ordered)
                # The position moves only with the last batch: a crash in between
                # redoes the rest, never skips it.
                await self._store.refresh_room_stats(
                    ordered[i : i + BATCH_ROOMS], head if last else position
                )
            return len(ordered)

    async def refresh(self, room_ids: list[str]) -> None:
        """Recompute some rooms now (after an admin action changed them)."""
        async with self._lock:
            position = await self._store.stats_position()
            await self._store.refresh_room_stats(room_ids, position)
