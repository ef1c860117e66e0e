"""Rooms' bump stamps in memory: the room list's sort key, read for every room of the
user on every sliding sync request.

The stored value (room_bump_stamps, written with each event) is read once per room;
after that, this cache hears of every persisted event (an EventListener, like the sync
activity window) and raises the stamp itself, so sorting 2,000 rooms costs no query.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

from homeserver.events import Event
from homeserver.storage.sliding_sync import BUMP_EVENT_TYPES, SlidingSyncStore

MAX_ROOMS = 200_000


class BumpStamps:
    def __init__(self, store: SlidingSyncStore, size: int = MAX_ROOMS) -> None:
        self._store = store
        self._size = size
        self._stamps: OrderedDict[str, int] = OrderedDict()

    def on_new_event(self, event: Event, stream_ordering: int) -> None:
        if event.type not in BUMP_EVENT_TYPES or stream_ordering <= 0:
            return
        known = self._stamps.get(event.room_id)
        # A room not cached yet is read from the database (written in the same commit).
        if known is not None and stream_ordering > known:
            self._stamps[event.room_id] = stream_ordering

    async def get(self, room_ids: Iterable[str]) -> dict[str, int]:
        rooms = list(room_ids)
        missing = [r for r in rooms if r not in self._stamps]
        if missing:
            loaded = await self._store.bump_stamps(missing)
            for room_id, stamp in loaded.items():
                # An event may have raised it while we read.
                self._stamps[room_id] = max(stamp, self._stamps.get(room_id, 0))
            while len(self._stamps) > self._size:
                self._stamps.popitem(last=False)
        return {r: self._stamps[r] for r in rooms if r in self._stamps}
