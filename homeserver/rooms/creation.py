"""Room creation (`/createRoom`): the create event, then the initial state in order.

The order and defaults follow what clients expect from Synapse: create, creator's join,
power levels, canonical alias, preset state (join rules, history visibility, guest
access), initial_state, name, topic, then invites.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from homeserver.errors import MatrixError
from homeserver.events import KNOWN_ROOM_VERSIONS, get_room_version

from .local_events import LocalEvents

PRESETS: dict[str, dict[str, str]] = {
    "private_chat": {
        "join_rule": "invite",
        "history_visibility": "shared",
        "guest_access": "can_join",
    },
    "trusted_private_chat": {
        "join_rule": "invite",
        "history_visibility": "shared",
        "guest_access": "can_join",
    },
    "public_chat": {"join_rule": "public", "history_visibility": "shared", "guest_access": ""},
}


@dataclass
class RoomSpec:
    """A validated /createRoom request."""

    room_version: str
    preset: str
    visibility: str = "private"
    name: str | None = None
    topic: str | None = None
    alias: str | None = None
    invite: list[str] = field(default_factory=list)
    is_direct: bool = False
    creation_content: dict[str, Any] = field(default_factory=dict)
    initial_state: list[dict[str, Any]] = field(default_factory=list)
    power_level_content_override: dict[str, Any] | None = None
    # A room ID chosen beforehand (an upgrade names the new room in its tombstone before
    # creating it); only for versions whose room IDs are not derived from the create event.
    room_id: str | None = None


def default_power_levels(creator: str, version_id: str, preset: str, invite: list[str]) -> dict:
    version = get_room_version(version_id)
    users: dict[str, int] = {} if version.privileged_creators else {creator: 100}
    if preset == "trusted_private_chat" and not version.privileged_creators:
        for user in invite:
            users[user] = 100
    return {
        "users": users,
        "users_default": 0,
        "events": {
            "m.room.name": 50,
            "m.room.power_levels": 100,
            "m.room.history_visibility": 100,
            "m.room.canonical_alias": 50,
            "m.room.avatar": 50,
            "m.room.tombstone": 100,
            "m.room.server_acl": 100,
            "m.room.encryption": 100,
        },
        "events_default": 0,
        "state_default": 50,
        "ban": 50,
        "kick": 50,
        "redact": 50,
        "invite": 0 if preset in ("private_chat", "trusted_private_chat") else 50,
        "historical": 100,
    }


class RoomCreator:
    def __init__(self, local_events: LocalEvents) -> None:
        self._events = local_events

    async def create_room(
        self, creator: str, spec: RoomSpec, member_content: dict[str, Any]
    ) -> str:
        """Create a room and return its ID. Raises MatrixError on bad specs."""
        if spec.room_version not in KNOWN_ROOM_VERSIONS:
            raise MatrixError(
                400, "M_UNSUPPORTED_ROOM_VERSION", f"Unsupported room version {spec.room_version}"
            )
        version = get_room_version(spec.room_version)
        create_content = dict(spec.creation_content)
        create_content["room_version"] = version.identifier
        if not version.implicit_room_creator:
            create_content["creator"] = creator
        else:
            create_content.pop("creator", None)
        if version.privileged_creators and spec.preset == "trusted_private_chat":
            # v1.16: the invitees are merged into any additional_creators supplied.
            supplied = create_content.get("additional_creators")
            extra = [u for u in spec.invite if u != creator]
            if isinstance(supplied, list):
                extra = [*supplied, *(u for u in extra if u not in supplied)]
            if extra:
                create_content["additional_creators"] = extra
        room_id = None
        if not version.room_id_is_create_event_id:
            room_id = spec.room_id or await self._events.new_room_id()
        create = await self._events.create_room_event(version, creator, create_content, room_id)
        room_id = create.room_id
        send = self._events.send

        await send(
            room_id, creator, "m.room.member", {**member_content, "membership": "join"}, creator
        )
        pl = default_power_levels(creator, version.identifier, spec.preset, spec.invite)
        if spec.power_level_content_override:
            pl.update(copy.deepcopy(spec.power_level_content_override))
        await send(room_id, creator, "m.room.power_levels", pl, "")
        if spec.alias:
            await send(room_id, creator, "m.room.canonical_alias", {"alias": spec.alias}, "")
        preset = PRESETS[spec.preset]
        explicit = {(e["type"], e.get("state_key", "")) for e in spec.initial_state}
        if ("m.room.join_rules", "") not in explicit:
            await send(
                room_id, creator, "m.room.join_rules", {"join_rule": preset["join_rule"]}, ""
            )
        if ("m.room.history_visibility", "") not in explicit:
            await send(
                room_id,
                creator,
                "m.room.history_visibility",
                {"history_visibility": preset["history_visibility"]},
                "",
            )
        if preset["guest_access"] and ("m.room.guest_access", "") not in explicit:
            await send(
                room_id,
                creator,
                "m.room.guest_access",
                {"guest_access": preset["guest_access"]},
                "",
            )
        for ev in spec.initial_state:
            await send(room_id, creator, ev["type"], ev["content"], ev.get("state_key", ""))
        if spec.name is not None:
            await send(room_id, creator, "m.room.name", {"name": spec.name}, "")
        if spec.topic is not None:
            await send(room_id, creator, "m.room.topic", _topic_content(spec.topic), "")
        return room_id


def _topic_content(topic: str) -> dict[str, Any]:
    return {"topic": topic, "m.topic": {"m.text": [{"mimetype": "text/plain", "body": topic}]}}
