"""Who may read a room, and up to where: one answer for every read that returns an
event (/messages, /context, /event, /state, /members, /relations, /threads, and the
aggregations bundled into events).

- A joined user reads the room under its history visibility.
- A user who left after having been *joined* keeps what they could read while in it:
  reads are capped at their leave (`cap`). A leave that follows only a knock or an
  invite (rescinding the knock, rejecting the invite) is not a departure from
  membership: that user never was a member, and `shared` history is not theirs.
- Banned users, and users who used /forget, read nothing (403), as in Synapse.
- Everyone else reads a world-readable room as a peeker (only world-readable events),
  or nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from homeserver.errors import forbidden
from homeserver.storage import Stores
from homeserver.storage.room_directory import RoomReadStore

from .visibility import is_world_readable


@dataclass(frozen=True)
class Access:
    """How a user may read a room: `membership` now, and `cap` (a stream position) past
    which they may not read if they left."""

    membership: str | None
    cap: int | None
    cap_event_id: str | None
    is_peeking: bool
    # A server admin reading through the admin API: everything, history visibility
    # notwithstanding (Synapse's admin room reads do the same).
    sees_all: bool = False
    # The stream position of the user's current join, when the caller knows it: the
    # timeline after it was all sent while they were in the room, so it is visible
    # without reading the state at each event (sliding sync's hot path).
    joined_at: int | None = None

    def allows_stream(self, stream_ordering: int) -> bool:
        return self.cap is None or stream_ordering <= self.cap


SERVER_ADMIN = Access("join", None, None, False, sees_all=True)


async def was_joined_before(stores: Stores, leave_event_id: str, user_id: str) -> bool:
    """Whether the membership a leave replaced was `join` (read from the leave's own
    auth events, which cite the target's previous membership)."""
    leave = await stores.events.get_event(leave_event_id)
    if leave is None:
        return False
    cited = await stores.events.get_events(leave.auth_event_ids)
    for event in cited.values():
        if event.type == "m.room.member" and event.state_key == user_id:
            return event.content.get("membership") == "join"
    return False


async def reader_access(
    stores: Stores, read_store: RoomReadStore, room_id: str, user_id: str
) -> Access:
    """How `user_id` may read `room_id`; 403 M_FORBIDDEN when not at all."""
    info = await stores.current_state.get_membership_info(room_id, user_id)
    if info is not None and info.membership == "join":
        return Access("join", None, None, False)
    if (
        info is not None
        and info.membership == "leave"
        and not await read_store.is_forgotten(user_id, room_id)
        and await was_joined_before(stores, info.event_id, user_id)
    ):
        return Access("leave", info.stream_ordering, info.event_id, False)
    if await stores.rooms.get_room_version(room_id) is not None and (
        await is_world_readable(stores, room_id)
    ):
        return Access(info.membership if info else None, None, None, True)
    raise forbidden(f"User {user_id} not in room {room_id}, and room previews are disabled")
