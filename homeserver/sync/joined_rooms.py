"""An in-memory cache of each user's joined rooms.

Long-poll registration, presence fan-out and "who shares a room with whom" ask for it
on every request; it only changes with a membership event whose state_key is the user,
so the persister's event listener invalidates exactly that entry.
"""

from __future__ import annotations

from homeserver.events import Event
from homeserver.storage import Stores
from homeserver.storage.cache import LruCache


class JoinedRoomsCache:
    def __init__(self, stores: Stores, size: int = 50_000) -> None:
        self._stores = stores
        self._cache: LruCache[str, frozenset[str]] = LruCache(size, "get_rooms_for_user")

    def peek(self, user_id: str) -> frozenset[str] | None:
        """The cached answer without a trip through the event loop; None if not cached."""
        return self._cache.get(user_id)

    async def get(self, user_id: str) -> frozenset[str]:
        cached = self._cache.get(user_id)
        if cached is not None:
            return cached
        generation = self._cache.generation()
        rooms = frozenset(await self._stores.current_state.get_rooms_for_user(user_id))
        self._cache.set_if_current(user_id, rooms, generation)
        return rooms

    def invalidate(self, user_id: str) -> None:
        self._cache.invalidate(user_id)

    def on_new_event(self, event: Event, stream_ordering: int) -> None:
        """Persister listener: a member event changes its target's joined rooms."""
        if event.type == "m.room.member" and event.state_key:
            self._cache.invalidate(event.state_key)

    async def hosts_in_room(self, room_id: str) -> set[str]:
        """Servers with joined users in the room (not cached: federation fan-out only)."""
        return await self._stores.current_state.get_joined_hosts(room_id)
