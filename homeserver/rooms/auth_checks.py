"""The one auth-check path of the room service: which events an event is checked
against, for every kind of write (local, pushed by a peer, fetched, backfilled, joins
through a handshake).

The rules themselves are `homeserver.graph.auth_rules` (pure); here is only the
selection of what they see, named after the spec's receiving checks:

- `check_own_auth_events` (check 4): the event is allowed by the auth events it cites
  (plus the create event, which room version 12 never cites);
- `check_against_state` (checks 5 and 6, and every local event): the event is allowed by
  a state map (the state before it, or the room's current state), reading from it the
  keys the rules need for this event.

Both answer with the reason for a refusal, or None when the event is allowed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from homeserver.events import Event, StateKey
from homeserver.graph.auth_rules import (
    AuthError,
    auth_types_for_event,
    check_auth_events_selection,
    check_auth_rules,
)

from .room_state import RoomState

CREATE_KEY: StateKey = ("m.room.create", "")


def create_event_id_of(room_id: str) -> str:
    """In room v12 the room ID is the create event's ID with another sigil."""
    return "$" + room_id[1:]


def auth_event_ids_wanted(event: Event) -> list[str]:
    """The events check 4 needs: the cited auth events, and the create event in v12."""
    wanted = list(event.auth_event_ids)
    if event.room_version.room_id_is_create_event_id and not event.is_create():
        wanted.append(create_event_id_of(event.room_id))
    return wanted


def check_own_auth_events(event: Event, auth_events: Mapping[str, Event]) -> str | None:
    """Check 4: allowed by the auth events it lists (and the create event)."""
    listed = [auth_events[a] for a in event.auth_event_ids if a in auth_events]
    if len(listed) != len(set(event.auth_event_ids)):
        return "some auth events are unknown"
    try:
        check_auth_events_selection(event, listed)
        auth_state = {e.state_tuple: e for e in listed if e.is_state()}
        if CREATE_KEY not in auth_state:
            create = next((e for e in auth_events.values() if e.is_create()), None)
            if create is not None:
                auth_state[CREATE_KEY] = create
        check_auth_rules(event, auth_state)
    except AuthError as e:
        return str(e)
    return None


def auth_keys_for(event: Event) -> set[StateKey]:
    """The state keys the auth rules read for `event` (the create event always)."""
    keys = auth_types_for_event(
        event.room_version, event.type, event.sender, event.state_key, event.content
    )
    return set(keys) | {CREATE_KEY}


async def check_against_state(
    room_state: RoomState, event: Event, state: Mapping[StateKey, str]
) -> str | None:
    """Checks 5/6: allowed by the state map `state` (state before it, or current)."""
    auth_state = await room_state.auth_state_for(state, auth_keys_for(event))
    return check_with_auth_state(event, auth_state)


def check_with_auth_state(event: Event, auth_state: Mapping[StateKey, Event]) -> str | None:
    """The rules over already loaded auth state (local sends reuse it across a batch)."""
    try:
        check_auth_rules(event, auth_state)
    except AuthError as e:
        return str(e)
    return None


def in_depth_order(events: Iterable[Event]) -> list[Event]:
    """Events ordered so that an event's own auth events (shallower) come first."""
    return sorted(events, key=lambda e: (e.depth, e.event_id))
