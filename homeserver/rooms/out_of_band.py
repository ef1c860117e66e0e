"""Out-of-band memberships: member events of rooms our server is not in.

An invite a peer sends one of our users, our user's knock, and our user's rejection of
an invite are stored outside the room's graph (we hold no state to check them against)
and update only that user's membership row, so that /sync can show them.

They never stand in for the room's current state: while our server is joined to a room
(some local user's membership in current state is `join`), its memberships, joined
hosts and join routing come from current state alone, and out-of-band writes for it are
refused (`OutOfBandRefused`). The check and the write happen under the room's lock, so
a join that lands meanwhile cannot be overwritten.
"""

from __future__ import annotations

from homeserver.events import Event
from homeserver.storage import Stores

from .keyed_lock import KeyedLock
from .persister import Persister


class OutOfBandRefused(Exception):
    """Our server is in the room: the event must go through the room's graph."""


class OutOfBandMemberships:
    def __init__(
        self, stores: Stores, persister: Persister, locks: KeyedLock, server_name: str
    ) -> None:
        self._stores = stores
        self._persister = persister
        self._locks = locks
        self._server_name = server_name

    async def server_joined(self, room_id: str) -> bool:
        """Whether one of our users is joined to the room by its current state."""
        return self._server_name in await self._stores.current_state.get_joined_hosts(room_id)

    async def store(self, event: Event, creator: str | None = None) -> None:
        """Store an out-of-band member event (recording the room and its version first
        if we have never heard of it); a repeat is a no-op."""
        room_id = event.room_id
        async with self._locks.hold(room_id):
            if await self.server_joined(room_id):
                raise OutOfBandRefused(f"{self._server_name} is in {room_id}")
            await self._stores.rooms.store_room(
                room_id, event.room_version.identifier, creator or event.sender
            )
            if event.event_id in await self._stores.events.have_events([event.event_id]):
                return
            await self._persister.persist_out_of_band_membership(event)
