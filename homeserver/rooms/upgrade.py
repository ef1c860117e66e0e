"""Room upgrades (`/rooms/{id}/upgrade`): a new room that continues an old one.

Steps, as clients expect them (spec "Room Upgrades"): check the upgrader may send the
tombstone; create the new room with `predecessor` in its create event and a copy of
the old room's significant state and power levels (the upgrader raised so they can
set everything up, then the old levels restored); send `m.room.tombstone` in the old
room; move local aliases and the directory listing; and restrict the old room so only
moderators can speak or invite.
"""

from __future__ import annotations

import contextlib
import copy
from typing import Any

from homeserver.errors import MatrixError, forbidden, not_found
from homeserver.events import KNOWN_ROOM_VERSIONS, get_room_version
from homeserver.graph.power_levels import PowerLevels
from homeserver.storage import Stores

from .creation import RoomCreator, RoomSpec
from .local_events import LocalEvents

COPIED_STATE = (
    "m.room.server_acl",
    "m.room.encryption",
    "m.room.name",
    "m.room.join_rules",
    "m.room.topic",
    "m.room.history_visibility",
    "m.room.guest_access",
    "m.room.avatar",
)


class RoomUpgrader:
    def __init__(self, stores: Stores, events: LocalEvents, creator: RoomCreator) -> None:
        self._stores = stores
        self._events = events
        self._creator = creator

    async def upgrade(
        self,
        room_id: str,
        user_id: str,
        new_version: str,
        member_content: dict[str, Any],
        additional_creators: list[str] | None = None,
    ) -> str:
        """Tombstone `room_id` and create its replacement; returns the new room's ID.

        `additional_creators` (v1.16) become creators of the new room when its version
        has privileged creators (ignored otherwise; the old room's are not copied).
        """
        if new_version not in KNOWN_ROOM_VERSIONS:
            raise MatrixError(
                400, "M_UNSUPPORTED_ROOM_VERSION", f"Unsupported room version {new_version}"
            )
        if await self._stores.rooms.get_room_version(room_id) is None:
            raise not_found(f"Unknown room {room_id}")  # as Synapse: 404 before any 403
        if await self._stores.current_state.get_membership(room_id, user_id) != "join":
            raise forbidden(f"User {user_id} not in room {room_id}")
        ids = await self._stores.current_state.get_current_state_ids(room_id)
        loaded = await self._stores.events.get_events(ids.values())
        state = {k: loaded[v] for k, v in ids.items() if v in loaded}
        create = state.get(("m.room.create", ""))
        pl_event = state.get(("m.room.power_levels", ""))
        levels = PowerLevels(pl_event, create)
        if levels.user_level(user_id) < levels.event_level("m.room.tombstone", True):
            raise forbidden("You don't have permission to upgrade the room")

        version = get_room_version(new_version)
        creation: dict[str, Any] = {"predecessor": {"room_id": room_id}}
        extra = [u for u in dict.fromkeys(additional_creators or ()) if u != user_id]
        if version.privileged_creators and extra:
            creation["additional_creators"] = extra
        if create is not None:
            for key in ("type", "m.federate"):
                if key in create.content:
                    creation[key] = copy.deepcopy(create.content[key])
        is_space = create is not None and create.content.get("type") == "m.space"
        initial_state = [
            {"type": t, "state_key": k, "content": copy.deepcopy(ev.content)}
            for (t, k), ev in state.items()
            if (t in COPIED_STATE and k == "")
            # A space keeps its rooms (removed children, with empty content, are dropped).
            or (is_space and t == "m.space.child" and ev.content)
        ]
        old_pl = copy.deepcopy(pl_event.content) if pl_event is not None else {}
        listed = old_pl.get("users")
        users: dict[str, Any] = dict(listed) if isinstance(listed, dict) else {}
        if version.privileged_creators:
            # v12+: the new room's creators hold infinite power and must not be listed in
            # `users`. Other users (old creators included) keep their levels.
            for creator in {user_id, *extra}:
                users.pop(creator, None)
        final_pl = {**old_pl, "users": dict(users)}
        setup_pl = copy.deepcopy(final_pl)
        if not version.privileged_creators:
            needed = max(100, _max_level(final_pl))
            setup_pl["users"][user_id] = max(_as_int(users.get(user_id)), needed)
        # The tombstone is built first so that the new room's create event can cite it
        # (`predecessor.event_id`, as Synapse); v12 room IDs come from the create event,
        # so there the tombstone can only follow and the predecessor names the room alone.
        tombstone = None
        new_room_id = None
        if not version.room_id_is_create_event_id:
            new_room_id = await self._events.new_room_id()
            tombstone = await self._events.build_only(
                room_id, user_id, "m.room.tombstone", _tombstone(new_room_id), ""
            )
            creation["predecessor"]["event_id"] = tombstone.event_id
        spec = RoomSpec(
            room_version=new_version,
            preset="public_chat",
            creation_content=creation,
            initial_state=initial_state,
            power_level_content_override=setup_pl,
            room_id=new_room_id,
        )
        new_room = await self._creator.create_room(user_id, spec, member_content)
        await self._copy_bans(new_room, user_id, state)
        if setup_pl != final_pl:
            await self._events.send(new_room, user_id, "m.room.power_levels", final_pl, "")

        if tombstone is not None and new_room == new_room_id:
            await self._events.persist_built(tombstone)
        else:
            await self._events.send(room_id, user_id, "m.room.tombstone", _tombstone(new_room), "")
        await self._move_aliases(room_id, new_room, user_id, state)
        await self._restrict_old_room(room_id, user_id, pl_event)
        return new_room

    async def _copy_bans(self, new_room: str, user_id: str, state: dict[Any, Any]) -> None:
        """Who was banned from the old room is banned from the new one (as Synapse)."""
        for (etype, target), ev in sorted(state.items()):
            if etype != "m.room.member" or ev.content.get("membership") != "ban":
                continue
            content: dict[str, Any] = {"membership": "ban"}
            reason = ev.content.get("reason")
            if isinstance(reason, str):
                content["reason"] = reason
            with contextlib.suppress(MatrixError):
                await self._events.send(new_room, user_id, "m.room.member", content, target)

    async def _move_aliases(
        self, old_room: str, new_room: str, user_id: str, state: dict[Any, Any]
    ) -> None:
        rooms = self._stores.rooms
        for alias in await rooms.get_aliases_for_room(old_room):
            info = await rooms.get_alias(alias)
            if info is None:
                continue
            await rooms.delete_alias(alias)
            await rooms.create_alias(alias, new_room, info.servers, creator=info.creator)
        canonical = state.get(("m.room.canonical_alias", ""))
        if canonical is not None and canonical.content:
            try:
                await self._events.send(
                    new_room, user_id, "m.room.canonical_alias", canonical.content, ""
                )
                await self._events.send(old_room, user_id, "m.room.canonical_alias", {}, "")
            except MatrixError:
                pass  # the alias move is best effort; the tombstone is what matters
        room = await rooms.get_room(old_room)
        if room is not None and room.is_public:
            await rooms.set_room_is_public(old_room, False)
            await rooms.set_room_is_public(new_room, True)

    async def _restrict_old_room(self, room_id: str, user_id: str, pl_event: Any) -> None:
        content = copy.deepcopy(pl_event.content) if pl_event is not None else {}
        restricted = max(50, _as_int(content.get("users_default")) + 1)
        changed = False
        for key in ("events_default", "invite"):
            if _as_int(content.get(key)) < restricted:
                content[key] = restricted
                changed = True
        if changed:
            with contextlib.suppress(MatrixError):
                await self._events.send(room_id, user_id, "m.room.power_levels", content, "")


def _tombstone(new_room: str) -> dict[str, Any]:
    return {"body": "This room has been replaced", "replacement_room": new_room}


def _as_int(value: Any) -> int:
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.lstrip("-").isdigit():
        return int(value)
    return 0


def _max_level(pl: dict[str, Any]) -> int:
    levels = [_as_int(pl.get(k)) for k in ("state_default", "ban", "kick", "redact", "invite")]
    events = pl.get("events")
    if isinstance(events, dict):
        levels.extend(_as_int(v) for v in events.values())
    return max(levels, default=0)
