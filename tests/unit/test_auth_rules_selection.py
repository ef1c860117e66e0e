"""Auth events selection, listed-auth-event checks and required signature servers.

See auth_rules_kit.py for how the rooms are built.
"""

from __future__ import annotations

import pytest

from homeserver.events.event import Event
from homeserver.events.room_versions import KNOWN_ROOM_VERSIONS, RoomVersion
from homeserver.graph.auth_rules import (
    AuthError,
    auth_types_for_event,
    check_auth_events_selection,
    required_signature_servers,
)
from tests.unit.auth_rules_kit import (
    ALICE,
    BOB,
    CAROL,
    MOD,
    Room,
    authorised,
    create_event,
    standard_room,
    versions,
)

# --------------------------------------------------------------------------------------
# Auth events selection
# --------------------------------------------------------------------------------------

CREATE_K = ("m.room.create", "")
PL_K = ("m.room.power_levels", "")
JR_K = ("m.room.join_rules", "")


def with_create(rv: RoomVersion, keys: set) -> set:
    return keys if rv.room_id_is_create_event_id else keys | {CREATE_K}


@pytest.mark.parametrize("rv", versions())
def test_auth_types_for_event(rv: RoomVersion) -> None:
    def types(event_type: str, sender: str, state_key: str | None, content: dict) -> set:
        return auth_types_for_event(rv, event_type, sender, state_key, content)

    assert types("m.room.create", ALICE, "", {}) == set()
    assert types("m.room.message", BOB, None, {}) == with_create(rv, {PL_K, ("m.room.member", BOB)})
    assert types("m.room.topic", BOB, "", {}) == with_create(rv, {PL_K, ("m.room.member", BOB)})
    base = {PL_K, ("m.room.member", ALICE), ("m.room.member", BOB)}
    assert types("m.room.member", ALICE, BOB, {"membership": "ban"}) == with_create(rv, base)
    assert types("m.room.member", ALICE, BOB, {"membership": "leave"}) == with_create(rv, base)
    for membership in ("join", "invite", "knock"):
        assert types("m.room.member", ALICE, BOB, {"membership": membership}) == with_create(
            rv, base | {JR_K}
        )
    tpi = {"membership": "invite", "third_party_invite": {"signed": {"token": "tok"}}}
    assert types("m.room.member", ALICE, BOB, tpi) == with_create(
        rv, base | {JR_K, ("m.room.third_party_invite", "tok")}
    )
    restricted = {"membership": "join", "join_authorised_via_users_server": MOD}
    expected = {PL_K, JR_K, ("m.room.member", BOB)}
    if rv.restricted_join_rule:
        expected.add(("m.room.member", MOD))
    assert types("m.room.member", BOB, BOB, restricted) == with_create(rv, expected)
    # The authoriser only counts for joins.
    leave = {"membership": "leave", "join_authorised_via_users_server": MOD}
    assert types("m.room.member", BOB, BOB, leave) == with_create(
        rv, {PL_K, ("m.room.member", BOB)}
    )


def listing(room: Room, event: Event, auth_events: list[Event]) -> Event:
    """`event` re-made so that its PDU lists exactly `auth_events`."""
    event.pdu["auth_events"] = [e.event_id for e in auth_events]
    return event


def selection_ok(event: Event, auth_events: list[Event]) -> bool:
    try:
        check_auth_events_selection(event, auth_events)
    except AuthError:
        return False
    return True


@pytest.mark.parametrize("rv", versions())
def test_check_auth_events_selection(rv: RoomVersion) -> None:
    room = standard_room(rv)
    create = room.create
    pl = room.state[PL_K]
    bob = room.state[("m.room.member", BOB)]
    join_rules = room.state[JR_K]
    message = room.event("m.room.message", BOB, {})

    good = [pl, bob] if rv.room_id_is_create_event_id else [create, pl, bob]
    assert selection_ok(listing(room, message, good), good)
    # Fewer than the whole selection is fine (e.g. no PL event yet) ...
    minimal = [] if rv.room_id_is_create_event_id else [create]
    assert selection_ok(listing(room, message, minimal), minimal)
    # ... but v1-11 must cite the create event and v12 must not.
    with_create_listed = [pl, bob, create]
    assert selection_ok(listing(room, message, with_create_listed), with_create_listed) is (
        not rv.room_id_is_create_event_id
    )
    assert selection_ok(listing(room, message, [pl, bob]), [pl, bob]) is (
        rv.room_id_is_create_event_id
    )
    # Outside the selection: join rules for a message.
    extra = good + [join_rules]
    assert not selection_ok(listing(room, message, extra), extra)
    # Duplicate (type, state_key).
    old_pl = room.power_levels(ALICE, room.default_power_levels())
    dup = good + [old_pl]
    assert not selection_ok(listing(room, message, dup), dup)
    # The same ID twice.
    message.pdu["auth_events"] = [e.event_id for e in good] + [pl.event_id]
    assert not selection_ok(message, good)
    # Not listed by the event.
    listing(room, message, good[:-1])
    assert not selection_ok(message, good)
    # A message event is never an auth event.
    chat = room.event("m.room.message", BOB, {})
    assert not selection_ok(listing(room, message, good + [chat]), good + [chat])
    # Rejected auth event.
    listing(room, message, good)
    pl.rejected_reason = "auth"
    assert not selection_ok(message, good)
    pl.rejected_reason = None
    # Another room's event.
    foreign_bob = room.member(BOB, "join")
    foreign_bob.pdu["room_id"] = "!elsewhere:a.test"
    foreign_bob = Event(foreign_bob.pdu, rv, event_id="$foreign:b.test")
    mixed = [e for e in good if e is not bob] + [foreign_bob]
    assert not selection_ok(listing(room, message, mixed), mixed)


@pytest.mark.parametrize("rv", versions())
def test_check_auth_events_selection_create_event(rv: RoomVersion) -> None:
    assert selection_ok(create_event(rv), [])
    other = create_event(rv, auth_events=["$x:a.test"])
    assert not selection_ok(other, [])


@pytest.mark.parametrize("rv", versions())
def test_check_auth_events_selection_for_a_join(rv: RoomVersion) -> None:
    room = standard_room(rv, join_rule="restricted")
    mod = room.state[("m.room.member", MOD)]
    base = [room.state[PL_K], room.state[JR_K]]
    if not rv.room_id_is_create_event_id:
        base.append(room.create)
    join = room.member(CAROL, "join", **authorised(MOD))
    assert selection_ok(listing(room, join, base + [mod]), base + [mod]) is rv.restricted_join_rule
    assert selection_ok(listing(room, join, base), base)


def test_required_signature_servers() -> None:
    v1, v3, v8 = (KNOWN_ROOM_VERSIONS[v] for v in ("1", "3", "8"))
    room1, room3, room8 = Room(v1), Room(v3), Room(v8)
    message = room1.event("m.room.message", BOB, {})
    message.event_id = "$x:other.test"
    assert required_signature_servers(message) == {"b.test", "other.test"}
    assert required_signature_servers(room3.event("m.room.message", BOB, {})) == {"b.test"}
    join8 = room8.member(BOB, "join", **authorised(CAROL))
    assert required_signature_servers(join8) == {"b.test", "c.test"}
    join3 = room3.member(BOB, "join", **authorised(CAROL))
    assert required_signature_servers(join3) == {"b.test"}
