"""Restricted joins (room versions 8+): may a remote user join through us, and which of
our users vouches for it (`join_authorised_via_users_server`)?

A user not invited to a `restricted` (or `knock_restricted`) room may join if they are
joined to one of the rooms its `allow` list names. Only a server in such a room can tell,
so the joining server asks one: we answer for rooms we are in, and name a local user who
may invite (the highest power level first) as the authoriser.
"""

from __future__ import annotations

from homeserver.errors import MatrixError
from homeserver.events import Event, RoomVersion
from homeserver.graph.power_levels import PowerLevels
from homeserver.storage import Stores

CREATE_KEY = ("m.room.create", "")
JOIN_RULES_KEY = ("m.room.join_rules", "")
POWER_LEVELS_KEY = ("m.room.power_levels", "")


class RestrictedJoins:
    def __init__(self, stores: Stores, server_name: str) -> None:
        self._stores = stores
        self._server_name = server_name

    async def _state_event(self, room_id: str, key: tuple[str, str]) -> Event | None:
        event_id = await self._stores.current_state.get_current_state_event_id(room_id, *key)
        return None if event_id is None else await self._stores.events.get_event(event_id)

    async def authoriser(self, room_id: str, user_id: str, version: RoomVersion) -> str | None:
        """For a restricted room the user is not invited to or in: a local user who may
        invite, after checking the user meets an `allow` condition (400/403 if not).
        None when the room's join rule is not restricted, or the user needs no
        authoriser."""
        stores = self._stores
        rules = await self._state_event(room_id, JOIN_RULES_KEY)
        join_rule = rules.content.get("join_rule") if rules else None
        restricted = (join_rule == "restricted" and version.restricted_join_rule) or (
            join_rule == "knock_restricted" and version.knock_restricted_join_rule
        )
        if not restricted or rules is None:
            return None
        if await stores.current_state.get_membership(room_id, user_id) in ("invite", "join"):
            return None
        allow = rules.content.get("allow")
        allowed_rooms = [
            a.get("room_id")
            for a in (allow if isinstance(allow, list) else [])
            if isinstance(a, dict) and a.get("type") == "m.room_membership"
        ]
        known_any = False
        satisfied = False
        for other in allowed_rooms:
            if not isinstance(other, str) or await stores.rooms.get_room_version(other) is None:
                continue
            if self._server_name not in await stores.current_state.get_joined_hosts(other):
                continue
            known_any = True
            if await stores.current_state.get_membership(other, user_id) == "join":
                satisfied = True
                break
        if not known_any:
            raise MatrixError(400, "M_UNABLE_TO_GRANT_JOIN", "No allowed room is known here")
        if not satisfied:
            raise MatrixError(
                403,
                "M_UNABLE_TO_AUTHORISE_JOIN",
                "The user is not in any room that allows joining",
            )
        power = PowerLevels(
            await self._state_event(room_id, POWER_LEVELS_KEY),
            await self._state_event(room_id, CREATE_KEY),
        )
        members = await stores.current_state.get_members(room_id)
        candidates = sorted(
            (
                u
                for u, m in members.items()
                if m == "join" and u.partition(":")[2] == self._server_name
            ),
            key=lambda u: (-power.user_level(u), u),
        )
        for user in candidates:
            if power.user_level(user) >= power.invite:
                return user
        raise MatrixError(
            400, "M_UNABLE_TO_GRANT_JOIN", "No local user here may authorise the join"
        )
