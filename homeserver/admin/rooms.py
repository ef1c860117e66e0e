"""Rooms as server admins see and steer them (Synapse's room admin API).

Reads (list, details, members, state, messages, context, extremities) see every
room the server knows, regardless of membership or history visibility. Changes act
through the room service as a local user of the room (make_room_admin, joining a
user), so every event they produce is authorised like any other.
"""

from __future__ import annotations

from typing import Any, Literal

from homeserver.errors import MatrixError, not_found
from homeserver.events import Event
from homeserver.graph.power_levels import PowerLevels
from homeserver.moderation import Moderation
from homeserver.rooms.directory import RoomDirectory
from homeserver.rooms.event_filter import RoomEventFilter
from homeserver.rooms.local_events import LocalEvents
from homeserver.rooms.membership import MembershipService
from homeserver.rooms.pagination import RoomToken
from homeserver.rooms.purge import RoomPurger
from homeserver.rooms.reader import RoomReader
from homeserver.storage import Stores
from homeserver.storage.admin_rooms import AdminRoomStore, RoomFilter, RoomStats

from .paging import Page
from .room_stats import RoomStatsUpdater


def room_json(stats: RoomStats) -> dict[str, Any]:
    """One entry of the room list (Synapse's shape)."""
    return {
        "room_id": stats.room_id,
        "name": stats.name,
        "canonical_alias": stats.canonical_alias,
        "joined_members": stats.joined_members,
        "joined_local_members": stats.joined_local_members,
        "version": stats.version,
        "creator": stats.creator,
        "encryption": stats.encryption,
        "federatable": stats.federatable,
        "public": stats.public,
        "join_rules": stats.join_rules,
        "guest_access": stats.guest_access,
        "history_visibility": stats.history_visibility,
        "state_events": stats.state_events,
        "room_type": stats.room_type,
    }


class AdminRooms:
    def __init__(
        self,
        server_name: str,
        store: AdminRoomStore,
        stats: RoomStatsUpdater,
        stores: Stores,
        reader: RoomReader,
        directory: RoomDirectory,
        membership: MembershipService,
        local_events: LocalEvents,
        moderation: Moderation,
        purger: RoomPurger,
    ) -> None:
        self._server_name = server_name
        self._store = store
        self._stats = stats
        self._stores = stores
        self._reader = reader
        self._directory = directory
        self._membership = membership
        self._events = local_events
        self._moderation = moderation
        self._purger = purger

    def _is_local(self, user_id: str) -> bool:
        return user_id.partition(":")[2] == self._server_name

    async def resolve(self, room_id_or_alias: str) -> str:
        """A room ID, or the room an alias names (404 when it names none)."""
        if room_id_or_alias.startswith("#"):
            room_id, _ = await self._directory.resolve_alias(room_id_or_alias)
            return room_id
        return room_id_or_alias

    async def known(self, room_id: str) -> None:
        if await self._stores.rooms.get_room_version(room_id) is None:
            raise not_found("Room not found")

    # -- the list and one room ---------------------------------------------------------

    async def list_rooms(
        self, page: Page, room_filter: RoomFilter, order_by: str, reverse: bool
    ) -> dict[str, Any]:
        await self._stats.catch_up()
        rooms, total = await self._store.list_rooms(
            page.start, page.limit, room_filter, order_by, reverse
        )
        body: dict[str, Any] = {
            "rooms": [room_json(r) for r in rooms],
            "offset": page.start,
            "total_rooms": total,
        }
        if page.start + page.limit < total:
            body["next_batch"] = page.start + page.limit
        if page.start > 0:
            body["prev_batch"] = max(0, page.start - page.limit)
        return body

    async def details(self, room_id: str) -> dict[str, Any]:
        await self._stats.catch_up()
        stats = await self._store.get_room_stats(room_id)
        if stats is None:
            raise not_found("Room not found")
        body = room_json(stats)
        body.update(
            {
                "topic": stats.topic,
                "avatar": stats.avatar,
                "joined_local_devices": await self._store.joined_local_devices(room_id),
                "forgotten": await self._store.forgotten_by_all_local(room_id),
                "tombstoned": stats.tombstoned,
                "replacement_room": stats.tombstone_successor,
            }
        )
        return body

    async def members(self, room_id: str) -> dict[str, Any]:
        await self.known(room_id)
        members = await self._stores.current_state.get_users_in_room(room_id)
        return {"members": members, "total": len(members)}

    async def state(self, admin_id: str, room_id: str, event_type: str | None) -> dict[str, Any]:
        await self.known(room_id)
        ids = await self._stores.current_state.get_current_state_ids(
            room_id, [event_type] if event_type else None
        )
        events = await self._stores.events.get_events(ids.values())
        ordered = [events[e] for e in ids.values() if e in events]
        return {"state": await self._reader.serialize(ordered, admin_id, None, prev_state=False)}

    async def messages(
        self,
        admin_id: str,
        room_id: str,
        *,
        from_token: RoomToken | None,
        to_token: RoomToken | None,
        direction: Literal["f", "b"],
        limit: int,
        event_filter: RoomEventFilter,
    ) -> dict[str, Any]:
        return await self._reader.messages(
            room_id,
            admin_id,
            None,
            from_token=from_token,
            to_token=to_token,
            direction=direction,
            limit=limit,
            event_filter=event_filter,
            server_admin=True,
        )

    async def context(
        self, admin_id: str, room_id: str, event_id: str, limit: int, event_filter: RoomEventFilter
    ) -> dict[str, Any]:
        return await self._reader.context(
            room_id,
            admin_id,
            None,
            event_id,
            limit=limit,
            event_filter=event_filter,
            server_admin=True,
        )

    async def timestamp_to_event(
        self, admin_id: str, room_id: str, ts: int, direction: Literal["f", "b"]
    ) -> dict[str, Any]:
        return await self._reader.timestamp_to_event(
            room_id, admin_id, ts, direction, server_admin=True
        )

    # -- forward extremities -----------------------------------------------------------

    async def forward_extremities(self, room_id: str) -> dict[str, Any]:
        await self.known(room_id)
        found = await self._store.forward_extremities(room_id)
        results = [
            {
                "event_id": x.event_id,
                "state_group": x.state_group,
                "depth": x.depth,
                "received_ts": x.received_ts,
            }
            for x in found
        ]
        return {"count": len(results), "results": results}

    async def delete_forward_extremities(self, room_id: str) -> dict[str, Any]:
        """Keep only the newest extremity (by stream ordering), as Synapse does."""
        await self.known(room_id)
        return {"deleted": await self._purger.delete_extra_extremities(room_id)}

    # -- blocking ---------------------------------------------------------------------

    async def get_block(self, room_id: str) -> dict[str, Any]:
        block = await self._store.get_block(room_id)
        if block is None:
            return {"block": False}
        return {"block": True, "user_id": block.user_id}

    async def set_block(self, admin_id: str, room_id: str, block: bool) -> dict[str, Any]:
        """Rooms can be blocked before this server knows them (Synapse allows it too)."""
        if block:
            await self._store.block_room(room_id, admin_id)
        else:
            await self._store.unblock_room(room_id)
        return {"block": block}

    # -- acting in a room -------------------------------------------------------------

    async def join_user(self, room_id: str, user_id: str, servers: list[str]) -> dict[str, Any]:
        """Put a local user into a room: invited first (by a local member with the power
        to) unless the room is public, then joined as the user."""
        if not self._is_local(user_id):
            raise MatrixError(
                400, "M_INVALID_PARAM", "This endpoint can only be used with local users"
            )
        if await self._stores.accounts.get_user(user_id) is None:
            raise not_found("User not found")
        join_rule = await self._state_content(room_id, "m.room.join_rules")
        membership = await self._stores.current_state.get_membership(room_id, user_id)
        if join_rule.get("join_rule") != "public" and membership not in ("join", "invite"):
            inviter = await self._powerful_local_member(room_id, "invite")
            await self._membership.invite(room_id, inviter, user_id, {})
        event = await self._membership.join(room_id, user_id, servers)
        return {"room_id": event.room_id}

    async def make_room_admin(self, room_id: str, user_id: str) -> dict[str, Any]:
        """Give `user_id` the power level of the most powerful local member (who sends
        the change); invite them unless they are in the room or it is public."""
        await self.known(room_id)
        admin = await self._powerful_local_member(room_id, None)
        levels_content = await self._state_content(room_id, "m.room.power_levels")
        levels = await self._power_levels(room_id)
        content = dict(levels_content)
        users = dict(content.get("users") or {})
        granted = levels.user_level(admin)
        users[user_id] = granted if isinstance(granted, int) and granted < 2**53 else 100
        content["users"] = users
        try:
            await self._events.send(room_id, admin, "m.room.power_levels", content, "")
        except MatrixError as exc:
            raise MatrixError(
                400, "M_UNKNOWN", "No local admin user in room with power to update power levels."
            ) from exc
        membership = await self._stores.current_state.get_membership(room_id, user_id)
        join_rule = (await self._state_content(room_id, "m.room.join_rules")).get("join_rule")
        if membership not in ("join", "invite") and join_rule != "public":
            await self._membership.invite(room_id, admin, user_id, {})
        return {}

    async def _state_content(self, room_id: str, event_type: str) -> dict[str, Any]:
        event_id = await self._stores.current_state.get_current_state_event_id(room_id, event_type)
        event = await self._stores.events.get_event(event_id) if event_id else None
        return dict(event.content) if event is not None else {}

    async def _power_levels(self, room_id: str) -> PowerLevels:
        ids = await self._stores.current_state.get_current_state_ids(
            room_id, ["m.room.power_levels", "m.room.create"]
        )
        loaded: dict[str, Event] = await self._stores.events.get_events(ids.values())
        return PowerLevels(
            loaded.get(ids.get(("m.room.power_levels", ""), "")),
            loaded.get(ids.get(("m.room.create", ""), "")),
        )

    async def _powerful_local_member(self, room_id: str, action: str | None) -> str:
        """The joined local user with the highest power level (who may `action`)."""
        levels = await self._power_levels(room_id)
        joined = [
            u
            for u in await self._stores.current_state.get_users_in_room(room_id)
            if self._is_local(u)
        ]
        if not joined:
            raise MatrixError(400, "M_UNKNOWN", "No local admin user in room")
        best = max(joined, key=lambda u: (levels.user_level(u), u))
        if action == "invite" and levels.user_level(best) < levels.invite:
            raise MatrixError(400, "M_UNKNOWN", "No local user in the room may invite")
        return best
