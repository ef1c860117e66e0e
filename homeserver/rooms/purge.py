"""Deleting from a room's graph on an admin's request: the whole room (room deletion),
its old history (history purge), or all forward extremities but the newest.

Deleting is writing the event graph, so it is the room service's job, under the
room's lock like every other graph write: no event of the room is persisted while its
rows go (`RoomPurgeStore` deletes them in one transaction). Afterwards the caches
that could still serve them are dropped.
"""

from __future__ import annotations

import logging

from homeserver.errors import MatrixError
from homeserver.storage import Stores
from homeserver.storage.room_purge import RoomPurgeStore

from .keyed_lock import KeyedLock

log = logging.getLogger(__name__)


class RoomPurger:
    def __init__(
        self, stores: Stores, purge_store: RoomPurgeStore, locks: KeyedLock, server_name: str
    ) -> None:
        self._stores = stores
        self._purge = purge_store
        self._locks = locks
        self._server_name = server_name

    def _is_local(self, user_id: str) -> bool:
        return user_id.partition(":")[2] == self._server_name

    async def delete_room(self, room_id: str, *, force: bool = False) -> int:
        """Delete every row of the room; refused (400) while local users are still
        joined unless `force`. Returns the number of events deleted."""
        async with self._locks.hold(room_id):
            joined = [
                u
                for u in await self._stores.current_state.get_users_in_room(room_id)
                if self._is_local(u)
            ]
            if joined and not force:
                raise MatrixError(
                    400, "M_UNKNOWN", f"Users are still joined to this room: {', '.join(joined)}"
                )
            purged = await self._purge.purge_room(room_id)
            self._stores.events.forget_events(room_id, purged.event_ids)
            self._stores.state.forget_events(purged.event_ids)
            self._stores.rooms.forget_room(room_id)
            self._stores.current_state.memberships_changed(room_id, purged.member_ids)
        log.info(
            "purged room %s: %d events, %d tables", room_id, len(purged.event_ids), len(purged.rows)
        )
        return len(purged.event_ids)

    async def delete_history(
        self, room_id: str, before_stream: int, *, delete_local_events: bool
    ) -> int:
        """Delete the room's non-state events older than `before_stream` (local users'
        events too if `delete_local_events`); returns how many were deleted."""
        async with self._locks.hold(room_id):
            purged = await self._purge.purge_history(
                room_id,
                before_stream,
                local_server=None if delete_local_events else self._server_name,
            )
            self._stores.events.forget_events(room_id, purged.event_ids)
            self._stores.state.forget_events(purged.event_ids)
        return len(purged.event_ids)

    async def delete_extra_extremities(self, room_id: str) -> int:
        """Keep only the newest forward extremity (by stream ordering), as Synapse's
        admin API does; returns how many were dropped."""
        events = self._stores.events
        async with self._locks.hold(room_id):
            extremities = await events.get_forward_extremities(room_id)
            if len(extremities) <= 1:
                return 0
            orderings = {e: await events.get_stream_ordering(e) or 0 for e in extremities}
            keep = max(extremities, key=lambda e: orderings[e])
            remove = [e for e in extremities if e != keep]
            await events.update_forward_extremities(room_id, [], remove)
        return len(remove)
