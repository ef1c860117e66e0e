"""State resolution v1 (room version 1 only). Spec: content/rooms/v1.md.

Known to reset state (the reason v2 exists); implemented for rooms that still use it.
Only the conflicted events, and the unconflicted events their auth checks read, are
loaded. Details the prose leaves open follow Synapse:

* a key missing from some state sets is not a conflict;
* the auth-affecting kinds are resolved in passes (power levels, then join rules, then
  memberships), each pass checking against the state resolved by the earlier passes;
* for other keys, if no candidate passes the auth checks, the one sorted last (lowest
  depth) is used.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

from ..events.event import Event, StateKey
from ..events.room_versions import RoomVersion
from .auth_chain import EventLoader, FetchEvents
from .auth_rules import AuthError, auth_types_for_event, check_auth_rules

StateMap = Mapping[StateKey, str]

CREATE_KEY: StateKey = ("m.room.create", "")
POWER_LEVELS_KEY: StateKey = ("m.room.power_levels", "")


async def resolve_v1(
    room_version: RoomVersion, state_sets: Sequence[StateMap], fetch_events: FetchEvents
) -> dict[StateKey, str]:
    """Resolve `state_sets` with the room version 1 algorithm."""
    unconflicted, conflicted_ids = separate_v1(state_sets)
    if not conflicted_ids:
        return unconflicted

    loader = EventLoader(fetch_events)
    loaded = await loader.load(i for ids in conflicted_ids.values() for i in sorted(ids))
    conflicted: dict[StateKey, list[Event]] = {}
    for key, ids in conflicted_ids.items():
        events = [loaded[i] for i in sorted(ids) if i in loaded]
        if len(events) > 1:
            conflicted[key] = events
        elif events:
            unconflicted[key] = events[0].event_id  # the others are unknown to us

    # R starts as the unconflicted state, restricted to what the checks will read.
    wanted: set[StateKey] = {CREATE_KEY}
    for events in conflicted.values():
        for event in events:
            wanted |= auth_types_for_event(
                room_version, event.type, event.sender, event.state_key, event.content
            )
    base = await loader.load(unconflicted[k] for k in wanted if k in unconflicted)
    state: dict[StateKey, Event] = {
        k: base[unconflicted[k]] for k in wanted if unconflicted.get(k) in base
    }

    resolved: dict[StateKey, Event] = {}
    passes = (
        lambda key: key == POWER_LEVELS_KEY,
        lambda key: key[0] == "m.room.join_rules",
        lambda key: key[0] == "m.room.member",
    )
    for selects in passes:
        this_pass = {
            key: _resolve_auth_key(events, state)
            for key, events in conflicted.items()
            if key not in resolved and selects(key)
        }
        resolved.update(this_pass)
        state.update(this_pass)
    for key, events in conflicted.items():
        if key not in resolved:
            resolved[key] = _resolve_other_key(events, state)

    result = dict(unconflicted)
    result.update((key, event.event_id) for key, event in resolved.items())
    return result


def separate_v1(
    state_sets: Sequence[StateMap],
) -> tuple[dict[StateKey, str], dict[StateKey, set[str]]]:
    """Unconflicted state, and the conflicting event IDs of each conflicted key.

    A conflict is two sets holding different events for one key; a key only some sets
    have is unconflicted.
    """
    unconflicted: dict[StateKey, str] = {}
    conflicted: dict[StateKey, set[str]] = {}
    for state_set in state_sets:
        for key, event_id in state_set.items():
            if key in conflicted:
                conflicted[key].add(event_id)
                continue
            current = unconflicted.get(key)
            if current is None:
                unconflicted[key] = event_id
            elif current != event_id:
                conflicted[key] = {current, event_id}
                del unconflicted[key]
    return unconflicted, conflicted


def _sha1(event: Event) -> str:
    return hashlib.sha1(event.event_id.encode("utf-8")).hexdigest()


def _by_depth_desc(events: list[Event]) -> list[Event]:
    """Highest depth first; among equal depths the lowest sha1(event_id) first."""
    return sorted(events, key=lambda e: (-e.depth, _sha1(e)))


def _allowed(event: Event, state: Mapping[StateKey, Event]) -> bool:
    try:
        check_auth_rules(event, state)
    except AuthError:
        return False
    return True


def _resolve_auth_key(events: list[Event], state: Mapping[StateKey, Event]) -> Event:
    """Ascending depth (descending sha1): take the first, then each next one while it
    is allowed by the state holding its predecessor."""
    ordered = list(reversed(_by_depth_desc(events)))
    chosen = ordered[0]
    trial = dict(state)
    for event in ordered[1:]:
        trial[chosen.state_tuple] = chosen
        if not _allowed(event, trial):
            break
        chosen = event
    return chosen


def _resolve_other_key(events: list[Event], state: Mapping[StateKey, Event]) -> Event:
    """The highest depth (lowest sha1) event that passes auth; the last one if none."""
    ordered = _by_depth_desc(events)
    for event in ordered:
        if _allowed(event, state):
            return event
    return ordered[-1]


__all__ = ["resolve_v1", "separate_v1"]
