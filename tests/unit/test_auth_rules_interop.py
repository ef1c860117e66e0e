"""Cross-implementation vectors: every PDU Synapse sent in the recorded rooms (v1-12)
must pass our auth-events selection and auth rules against its own auth events.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from homeserver.events.event import Event
from homeserver.events.room_versions import KNOWN_ROOM_VERSIONS, RoomVersion
from homeserver.graph.auth_rules import AuthError, check_auth_events_selection, check_auth_rules

CAPTURES = Path("/work/shared/interop/captures/by-room-version")

pytestmark = pytest.mark.skipif(not CAPTURES.is_dir(), reason="interop captures not available")


def _pdus(value: Any) -> Iterator[dict[str, Any]]:
    if isinstance(value, dict):
        if {"type", "sender", "auth_events", "prev_events", "hashes"} <= value.keys():
            yield value
        for child in value.values():
            yield from _pdus(child)
    elif isinstance(value, list):
        for child in value:
            yield from _pdus(child)


def captured_events(rv: RoomVersion) -> dict[str, Event]:
    events: dict[str, Event] = {}
    for path in sorted(CAPTURES.glob(f"v{rv.identifier}-raw-*.jsonl")):
        for line in path.read_text().splitlines():
            exchange = json.loads(line)
            for pdu in _pdus([exchange.get("request_body"), exchange.get("response_body")]):
                event = Event(pdu, rv, event_id=pdu.get("event_id"))
                events[event.event_id] = event
    return events


def auth_state(event: Event, events: dict[str, Event]) -> dict[tuple[str, str], Event]:
    create = next(e for e in events.values() if e.is_create())
    state = {events[i].state_tuple: events[i] for i in event.auth_event_ids}
    state[("m.room.create", "")] = create
    return state


VERSIONS = [pytest.param(rv, id=f"v{v}") for v, rv in KNOWN_ROOM_VERSIONS.items()]


@pytest.mark.parametrize("rv", VERSIONS)
def test_every_captured_event_passes(rv: RoomVersion) -> None:
    events = captured_events(rv)
    kinds = set()
    for event in events.values():
        auth_events = [events[i] for i in event.auth_event_ids]
        check_auth_events_selection(event, auth_events)
        check_auth_rules(event, auth_state(event, events))
        kinds.add((event.type, event.membership))
    # The recordings cover a room's life: creation, the creator's first join, power
    # levels, join rules, a remote join, an invite, state and messages.
    assert {
        ("m.room.create", None),
        ("m.room.member", "join"),
        ("m.room.member", "invite"),
        ("m.room.power_levels", None),
        ("m.room.join_rules", None),
        ("m.room.name", None),
        ("m.room.message", None),
    } <= kinds
    assert len(events) >= 20


@pytest.mark.parametrize("rv", VERSIONS)
def test_captured_messages_from_an_outsider_are_refused(rv: RoomVersion) -> None:
    events = captured_events(rv)
    messages = [e for e in events.values() if e.type == "m.room.message"]
    assert messages
    for message in messages:
        forged = Event({**message.pdu, "sender": "@mallory:evil.test"}, rv, event_id="$forged")
        with pytest.raises(AuthError, match="not joined"):
            check_auth_rules(forged, auth_state(message, events))
