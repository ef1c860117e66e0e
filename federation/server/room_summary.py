"""The public summary of a room (publicRooms chunks, hierarchy entries) from its state."""

from __future__ import annotations

from typing import Any

from homeserver.storage import Stores

SUMMARY_TYPES = (
    "m.room.name",
    "m.room.topic",
    "m.room.canonical_alias",
    "m.room.avatar",
    "m.room.join_rules",
    "m.room.history_visibility",
    "m.room.guest_access",
    "m.room.create",
    "m.room.encryption",
)


async def room_summary(stores: Stores, room_id: str) -> dict[str, Any]:
    """The PublishedRoomsChunk fields for a room we know."""
    ids = await stores.current_state.get_current_state_ids(room_id, SUMMARY_TYPES)
    events = await stores.events.get_events([v for (_t, sk), v in ids.items() if sk == ""])
    content = {ev.type: ev.content for ev in events.values() if ev.state_key == ""}

    def field(event_type: str, key: str) -> Any:
        value = content.get(event_type, {}).get(key)
        return value if isinstance(value, str) else None

    chunk: dict[str, Any] = {
        "room_id": room_id,
        "num_joined_members": await stores.current_state.get_joined_member_count(room_id),
        "world_readable": field("m.room.history_visibility", "history_visibility")
        == "world_readable",
        "guest_can_join": field("m.room.guest_access", "guest_access") == "can_join",
        "join_rule": field("m.room.join_rules", "join_rule") or "invite",
    }
    for key, (event_type, ckey) in {
        "name": ("m.room.name", "name"),
        "topic": ("m.room.topic", "topic"),
        "canonical_alias": ("m.room.canonical_alias", "alias"),
        "avatar_url": ("m.room.avatar", "url"),
        "room_type": ("m.room.create", "type"),
    }.items():
        value = field(event_type, ckey)
        if value is not None:
            chunk[key] = value
    return chunk
