"""What a remote server may read of a room's history.

Request level: the server has a user joined to the room now, or the room is
world-readable. Event level (spec: history visibility, as applied to servers): an event
whose `m.room.history_visibility` at that point is `joined` is visible only if one of the
server's users was joined then (`invited`: joined or invited); `shared` and
`world_readable` events are visible. Invisible events are returned redacted, so the
graph stays connected for the peer.
"""

from __future__ import annotations

from collections.abc import Iterable

from homeserver.events import Event
from homeserver.events.redaction import redact
from homeserver.storage import Stores

HV = ("m.room.history_visibility", "")


def _server_of(user_id: str) -> str:
    return user_id.partition(":")[2]


async def _history_visibility(stores: Stores, event_id: str | None) -> str:
    if event_id is None:
        return "shared"
    ev = await stores.events.get_event(event_id)
    value = ev.content.get("history_visibility") if ev is not None else None
    return value if isinstance(value, str) else "shared"


async def server_in_room(stores: Stores, room_id: str, server: str) -> bool:
    return server in await stores.current_state.get_joined_hosts(room_id)


async def server_can_read_room(stores: Stores, room_id: str, server: str) -> bool:
    if await server_in_room(stores, room_id, server):
        return True
    hv_id = await stores.current_state.get_current_state_event_id(room_id, *HV)
    return await _history_visibility(stores, hv_id) == "world_readable"


async def _visible(stores: Stores, event: Event, server: str, sender_erased: bool) -> bool:
    state = await stores.state.get_state_ids_for_event(event.event_id)
    if state is None:
        return True  # an outlier (auth event): always shareable
    visibility = await _history_visibility(stores, state.get(HV))
    if visibility not in ("joined", "invited") and not sender_erased:
        return True
    member_ids = [
        eid for (t, sk), eid in state.items() if t == "m.room.member" and _server_of(sk) == server
    ]
    members = await stores.events.get_events(member_ids)
    allowed = {"join", "invite"} if visibility == "invited" and not sender_erased else {"join"}
    return any(m.membership in allowed for m in members.values())


async def filter_events_for_server(
    stores: Stores, server: str, events: Iterable[Event]
) -> list[Event]:
    """`events` with the ones `server` may not see replaced by redacted copies.

    Events of a user who asked for erasure are redacted too unless one of the
    server's users was joined when they were sent (as Synapse)."""
    events = list(events)
    erased = await stores.accounts.erased_among({e.sender for e in events})
    out: list[Event] = []
    for ev in events:
        if await _visible(stores, ev, server, ev.sender in erased):
            out.append(ev)
        else:
            out.append(Event(redact(ev.pdu, ev.room_version), ev.room_version, ev.event_id))
    return out
