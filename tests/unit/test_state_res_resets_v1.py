"""State resolution: v2 vs v2.1 state resets, the auth difference, and v1.

Each scenario builds a room event by event (explicit event IDs, no signatures) and
compares the resolved state with the exact expected event IDs, worked out by hand from
the spec's algorithm; the comments say why. See state_res_kit.py.
"""

from __future__ import annotations

import pytest

from homeserver.events.event import Event, StateKey
from homeserver.graph.auth_chain import EventLoader, compute_auth_chain, load_auth_closure
from homeserver.graph.state_res import resolve_state
from homeserver.graph.state_res_v2 import _conflicted_subgraph, _full_conflicted_set, separate
from tests.unit.state_res_kit import (
    ALICE,
    BOB,
    CHARLIE,
    CREATE,
    DAVE,
    EVELYN,
    INITIAL_NAMED,
    JR,
    PL,
    TOPIC,
    ZARA,
    Room,
    initial_room,
    member,
)

# --------------------------------------------------------------------------------------
# v2 vs v2.1: state resets fixed by room version 12
# --------------------------------------------------------------------------------------


async def _problem_a(version: str) -> tuple[Room, list[dict[StateKey, str]]]:
    """Alice sets the join rules twice, then leaves. One state set (from a faulty
    partial sync) still has the first join rules event; everything else agrees."""
    room = await initial_room(version)
    await room.add("JR1", "m.room.join_rules", ALICE, {"join_rule": "invite"}, "", prev=["IMZ"])
    await room.add("JR2", "m.room.join_rules", ALICE, {"join_rule": "public"}, "", prev=["JR1"])
    await room.member("AL", ALICE, "leave", prev=["JR2"])
    good = room.state_after[room.id("AL")]
    stale = {**good, JR: room.id("JR1")}
    return room, [good, stale]


async def test_problem_a_v2_loses_the_join_rules() -> None:
    """v2 replays both join rules events on top of the unconflicted state, where alice
    has already left, so both fail and the room ends up with no join rules at all."""
    room, sets = await _problem_a("11")
    state = room.named(await resolve_state(room.rv, sets, room.fetch))
    expected = {**INITIAL_NAMED, member(ALICE): "AL"}
    del expected[JR]
    assert state == expected


async def test_problem_a_v2_1_keeps_the_join_rules() -> None:
    """v2.1 replays them from an empty state, i.e. against their own auth events."""
    room, sets = await _problem_a("12")
    state = room.named(await resolve_state(room.rv, sets, room.fetch))
    assert state == {**INITIAL_NAMED, member(ALICE): "AL", JR: "JR2"}


async def _problem_b(version: str) -> tuple[Room, list[dict[StateKey, str]]]:
    """Alice promotes bob (P1), bob promotes charlie (P2), charlie sets the topic and
    dave joins citing P2. One fork's state (faulty partial sync) still has the initial
    power levels although its dave join cites P2: P1 is in both auth chains, so it is
    not in the auth difference."""
    room = await initial_room(version)
    await room.pl("P1", ALICE, {ALICE: 100, BOB: 100}, prev=["IMZ"])
    await room.pl("P2", BOB, {ALICE: 100, BOB: 100, CHARLIE: 50}, prev=["P1"])
    await room.topic("T", CHARLIE, prev=["P2"])
    await room.member("DJ", DAVE, "join", prev=["P2"])
    fork1 = room.state_after[room.id("T")]
    fork2 = {**room.state_after[room.id("DJ")], PL: room.id("IPOWER")}
    return room, [fork1, fork2]


async def test_problem_b_v2_resets_the_power_levels() -> None:
    """v2 replays IPOWER then P2 only; without P1, bob cannot send P2, so the power
    levels reset to IPOWER and charlie's topic fails too."""
    room, sets = await _problem_b("11")
    state = room.named(await resolve_state(room.rv, sets, room.fetch))
    assert state == {**INITIAL_NAMED, PL: "IPOWER", member(DAVE): "DJ"}


async def test_problem_b_v2_1_replays_the_conflicted_subgraph() -> None:
    """v2.1 adds P1 (between the conflicted IPOWER and P2) and everything stands."""
    room, sets = await _problem_b("12")
    state = room.named(await resolve_state(room.rv, sets, room.fetch))
    assert state == {**INITIAL_NAMED, PL: "P2", TOPIC: "T", member(DAVE): "DJ"}


async def test_conflicted_subgraph_is_paths_between_conflicted_events() -> None:
    room = await initial_room("12")
    await room.pl("P1", ALICE, {BOB: 100}, prev=["IMZ"])
    await room.pl("P2", BOB, {BOB: 100, CHARLIE: 50}, prev=["P1"])
    await room.topic("T", CHARLIE, prev=["P2"])
    await room.member("DJ", DAVE, "join", prev=["P2"])
    closure = {i: e for i, e in room.events.items()}
    conflicted = {room.id(n) for n in ("IPOWER", "T", "DJ")}
    sub = _conflicted_subgraph(conflicted, closure)
    # Between T/DJ and IPOWER: the PL chain P2 -> P1, and the joins and join rules that
    # were authorised by IPOWER and are cited on the way (P2 cites bob's join IMB, T
    # charlie's IMC, DJ the join rules IJR). CREATE and alice's IMA reach no conflicted
    # event (v12 events never cite the create event), so they are out.
    assert {room.name(i) for i in sub} == {"IPOWER", "P1", "P2", "T", "DJ", "IMB", "IMC", "IJR"}
    # Without IPOWER conflicted nothing connects T and DJ.
    sub = _conflicted_subgraph({room.id("T"), room.id("DJ")}, closure)
    assert {room.name(i) for i in sub} == {"T", "DJ"}


# --------------------------------------------------------------------------------------
# The auth difference, and the fetch_auth_chain callback
# --------------------------------------------------------------------------------------


def _raw(room: Room, name: str, key: str, auth: list[str]) -> str:
    event_id = room.id(name)
    room.events[event_id] = Event(
        {
            "type": "m.test",
            "state_key": key,
            "sender": ALICE,
            "content": {},
            "room_id": room.room_id,
            "origin_server_ts": 1,
            "auth_events": [room.id(a) for a in auth],
        },
        room.rv,
        event_id=event_id,
    )
    return event_id


@pytest.mark.parametrize("use_callback", [False, True])
async def test_auth_difference_excludes_what_unconflicted_state_reaches(use_callback) -> None:
    """X is only in the chain of the conflicted Z and of the unconflicted Y (which the
    cheap checks do not see): it is in every state set's full auth chain, so not in the
    auth difference. W, cited only by Z, is."""
    room = Room("11")
    create = room.id("CREATE")
    room.events[create] = Event(
        {
            "type": "m.room.create",
            "state_key": "",
            "sender": ALICE,
            "content": {},
            "room_id": room.room_id,
        },
        room.rv,
        event_id=create,
    )
    x = _raw(room, "X", "x", ["CREATE"])
    y = _raw(room, "Y", "y", ["X"])
    w = _raw(room, "W", "w", ["CREATE"])
    z = _raw(room, "Z", "z", ["X", "W"])
    sets = [
        {CREATE: create, ("m.test", "y"): y, ("m.test", "z"): z},
        {CREATE: create, ("m.test", "y"): y},
    ]
    unconflicted, conflicted = separate(sets)
    loader = EventLoader(room.fetch)

    closure = await load_auth_closure([z], loader)
    calls: list[list[str]] = []

    async def fetch_auth_chain(ids):
        ids = list(ids)
        calls.append(ids)
        return await compute_auth_chain(ids, room.fetch)

    full = await _full_conflicted_set(
        room.rv,
        sets,
        unconflicted,
        conflicted,
        closure,
        loader,
        fetch_auth_chain if use_callback else None,
    )
    assert full == {z, w}
    if use_callback:
        assert calls == [[y]]
    assert x in room.fetched and max(room.fetched.values()) <= (2 if use_callback else 1)


# --------------------------------------------------------------------------------------
# v1
# --------------------------------------------------------------------------------------


async def test_v1_highest_depth_wins_for_ordinary_state() -> None:
    room = await initial_room("1")
    await room.topic("TA", ALICE, prev=["IMZ"])
    await room.topic("TA2", ALICE, prev=["TA"])
    await room.topic("TB", BOB, prev=["IMZ"])
    state = room.named(await room.resolve(["TA2", "TB"]))
    assert state == {**INITIAL_NAMED, TOPIC: "TA2"}


async def test_v1_equal_depth_lowest_sha1_wins() -> None:
    import hashlib

    room = await initial_room("1")
    names = ["TP", "TQ", "TR"]
    for name in names:
        await room.topic(name, ALICE, prev=["IMZ"])
    state = room.named(await room.resolve(names))
    expected = min(names, key=lambda n: hashlib.sha1(room.id(n).encode()).hexdigest())
    assert state == {**INITIAL_NAMED, TOPIC: expected}


async def test_v1_ordinary_state_that_fails_auth_loses_to_lower_depth() -> None:
    room = await initial_room("1")
    await room.topic("T0", ALICE, prev=["IMZ"])
    # Bob's topic is deeper but bob (level 0) may not set it.
    await room.add("X1", "m.room.message", BOB, {"body": "x"}, prev=["IMZ"])
    await room.topic("TB", BOB, prev=["X1"])
    state = room.named(await room.resolve(["T0", "TB"]))
    assert state == {**INITIAL_NAMED, TOPIC: "T0"}


async def test_v1_auth_events_are_resolved_first() -> None:
    """Alice demotes bob on one fork; bob sets a deeper topic on the other. The power
    levels are resolved first (ascending depth: PA, then PD which is allowed), and bob's
    topic is then checked against the demotion and loses to alice's older topic."""
    room = await initial_room("1")
    await room.topic("T0", ALICE, prev=["IMZ"])
    await room.pl("PA", ALICE, {ALICE: 100, BOB: 50}, prev=["T0"])
    await room.pl("PD", ALICE, {ALICE: 100, BOB: 0}, prev=["PA"])
    await room.add("X1", "m.room.message", BOB, {"body": "x"}, prev=["PA"])
    await room.add("X2", "m.room.message", BOB, {"body": "x"}, prev=["X1"])
    await room.topic("TB", BOB, prev=["X2"])
    state = room.named(await room.resolve(["PD", "TB"]))
    assert state == {**INITIAL_NAMED, PL: "PD", TOPIC: "T0"}


async def test_v1_power_levels_stop_at_first_unauthorised() -> None:
    """Ascending depth: PA (bob 50), then bob's deeper PB raising charlie is checked
    against PA and allowed, then zara's PZ is not: PB stays."""
    room = await initial_room("1")
    await room.pl("PA", ALICE, {ALICE: 100, BOB: 50}, prev=["IMZ"])
    await room.add("X1", "m.room.message", BOB, {"body": "x"}, prev=["PA"])
    await room.pl("PB", BOB, {ALICE: 100, BOB: 50, CHARLIE: 50}, prev=["X1"])
    await room.add("Z1", "m.room.message", ZARA, {"body": "x"}, prev=["X1"])
    await room.add("Z2", "m.room.message", ZARA, {"body": "x"}, prev=["Z1"])
    await room.pl("PZ", ZARA, {ALICE: 100, ZARA: 100}, prev=["Z2"])
    state = room.named(await room.resolve(["PA", "PB", "PZ"]))
    assert state == {**INITIAL_NAMED, PL: "PB"}


async def test_v1_missing_key_is_not_a_conflict() -> None:
    room = await initial_room("1")
    await room.topic("T", BOB, prev=["IMZ"])  # bob may not; v1 does not re-check it
    await room.member("ME", EVELYN, "join", prev=["IMZ"])
    state = room.named(await room.resolve(["T", "ME"]))
    assert state == {**INITIAL_NAMED, TOPIC: "T", member(EVELYN): "ME"}
