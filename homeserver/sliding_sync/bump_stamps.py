"""Rooms' bump stamps in memory: the room list's sort key, read for every room of the
user on every sliding sync request.

The stored value (room_bump_stamps, written with each event) is read once per room;
after that, this cache hears of every persisted event (an EventListener, like the sync
activity window) and raises the stamp itself, so sorting 2,000 rooms costs no query.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterable
from itertools import islice

from homeserver.events import Event
from homeserver.storage.sliding_sync import BUMP_EVENT_TYPES, SlidingSyncStore

MAX_ROOMS = 200_000
# Rooms whose stamp moved, newest last: lets a cached room order catch up by looking at
# the rooms that moved instead of re-sorting all of a user's rooms (room_order.py).
MAX_LOG = 20_000


class BumpStamps:
    def __init__(self, store: SlidingSyncStore, size: int = MAX_ROOMS) -> None:
        self._store = store
        self._size = size
        self._stamps: OrderedDict[str, int] = OrderedDict()
        self._log: deque[str] = deque()
        self._log_start = 0  # the position of the log's first entry

    @property
    def position(self) -> int:
        """How many stamp moves have been logged so far."""
        return self._log_start + len(self._log)

    def moved_since(self, position: int) -> list[str] | None:
        """Rooms whose stamp may have moved after `position` (repeats possible); None
        when the log no longer reaches back that far."""
        if position < self._log_start:
            return None
        # The newest entries, read from the right end: O(moves), not O(log).
        return list(islice(reversed(self._log), self.position - position))

    def on_new_event(self, event: Event, stream_ordering: int) -> None:
        if event.type not in BUMP_EVENT_TYPES or stream_ordering <= 0:
            return
        # Logged even when not cached: a reader's cached order must hear of it.
        self._log.append(event.room_id)
        if len(self._log) > MAX_LOG:
            self._log.popleft()
            self._log_start += 1
        # Listeners hear events in stream order, so this is the room's newest stamp:
        # cached even for a room not cached yet (a read of it in flight may have seen
        # the database before this event's commit; the max in `get` keeps this one).
        known = self._stamps.get(event.room_id)
        if known is None or stream_ordering > known:
            self._stamps[event.room_id] = stream_ordering
            if known is None and len(self._stamps) > self._size:
                self._stamps.popitem(last=False)

    async def get(self, room_ids: Iterable[str]) -> dict[str, int]:
        rooms = list(room_ids)
        missing = [r for r in rooms if r not in self._stamps]
        if not missing:
            return {r: self._stamps[r] for r in rooms if r in self._stamps}
        loaded = await self._store.bump_stamps(missing)
        for room_id, stamp in loaded.items():
            # An event may have raised it while we read.
            self._stamps[room_id] = max(stamp, self._stamps.get(room_id, 0))
        # The answer is taken before evicting: under pressure the eviction may drop
        # rooms of this very request, which must still be answered.
        out = {r: self._stamps[r] for r in rooms if r in self._stamps}
        while len(self._stamps) > self._size:
            self._stamps.popitem(last=False)
        return out
