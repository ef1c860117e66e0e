"""State resolution v1, v2 and v2.1 on hand-built event DAGs: dispatch, trivial cases,
and the classic v2 scenarios.

Each scenario builds a room event by event (explicit event IDs, no signatures) and
compares the resolved state with the exact expected event IDs, worked out by hand from
the spec's algorithm; the comments say why. See state_res_kit.py.
"""

from __future__ import annotations

from collections import Counter

import pytest

from homeserver.events.event import Event
from homeserver.graph.auth_chain import EventLoader
from homeserver.graph.state_res_v1 import separate_v1
from homeserver.graph.state_res_v2 import _mainline_sort, is_power_event, separate
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
    V2_VERSIONS,
    ZARA,
    initial_room,
    member,
)

# --------------------------------------------------------------------------------------
# Dispatch and the trivial cases
# --------------------------------------------------------------------------------------


async def test_no_state_sets_and_single_set_need_no_io() -> None:
    room = await initial_room("11")
    assert await room.resolve([]) == {}
    assert room.named(await room.resolve(["IMZ"])) == INITIAL_NAMED
    assert room.fetched == Counter()


@pytest.mark.parametrize("version", ["1", "11", "12"])
async def test_identical_state_sets_resolve_to_themselves_without_io(version: str) -> None:
    room = await initial_room(version)
    state = await room.resolve(["IMZ", "IMZ", "IMZ"])
    assert room.named(state) == INITIAL_NAMED
    assert room.fetched == Counter()


def test_separate_v2_treats_missing_keys_as_conflicts() -> None:
    unconflicted, conflicted = separate(
        [{CREATE: "$c", TOPIC: "$t1", PL: "$p"}, {CREATE: "$c", TOPIC: "$t2"}]
    )
    assert unconflicted == {CREATE: "$c"}
    assert conflicted == {TOPIC: {"$t1", "$t2"}, PL: {"$p"}}


def test_separate_v1_does_not_treat_missing_keys_as_conflicts() -> None:
    unconflicted, conflicted = separate_v1(
        [{CREATE: "$c", TOPIC: "$t1", PL: "$p"}, {CREATE: "$c", TOPIC: "$t2"}]
    )
    assert unconflicted == {CREATE: "$c", PL: "$p"}
    assert conflicted == {TOPIC: {"$t1", "$t2"}}


async def test_power_events() -> None:
    room = await initial_room("11")
    kick = await room.member("KICK", BOB, "leave", sender=ALICE, prev=["IMZ"])
    leave = await room.member("LEAVE", CHARLIE, "leave", prev=["IMZ"])
    ban = await room.member("BAN", ZARA, "ban", sender=ALICE, prev=["IMZ"])
    topic = await room.topic("T", ALICE, prev=["IMZ"])
    events = room.events
    assert [is_power_event(events[room.id(n)]) for n in ("CREATE", "IPOWER", "IJR", "IMA")] == [
        True,
        True,
        True,
        False,
    ]
    assert is_power_event(events[kick]) and is_power_event(events[ban])
    assert not is_power_event(events[leave]) and not is_power_event(events[topic])


# --------------------------------------------------------------------------------------
# The classic v2 scenarios (every v2 room version and v2.1)
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", V2_VERSIONS)
async def test_ban_vs_power_levels(version: str) -> None:
    """Bob changes the power levels while alice concurrently bans him: the ban (sorted
    first, alice being more powerful) wins and bob's power levels event fails auth."""
    room = await initial_room(version)
    await room.pl("PA", ALICE, {ALICE: 100, BOB: 50}, prev=["IMZ"])
    await room.member("MA", ALICE, "join", prev=["PA"])
    await room.member("MB", BOB, "ban", sender=ALICE, prev=["MA"])
    await room.pl("PB", BOB, {ALICE: 100, BOB: 50, CHARLIE: 50}, prev=["PA"])

    state = room.named(await room.resolve(["MB", "PB"]))
    assert state == {**INITIAL_NAMED, PL: "PA", member(ALICE): "MA", member(BOB): "MB"}
    assert max(room.fetched.values()) == 1


@pytest.mark.parametrize("version", V2_VERSIONS)
async def test_join_rule_evasion(version: str) -> None:
    """Evelyn joins while alice concurrently makes the room invite-only: join rules
    are power events, applied first, so the join fails against them."""
    room = await initial_room(version)
    await room.add("JR", "m.room.join_rules", ALICE, {"join_rule": "invite"}, "", prev=["IMZ"])
    await room.member("ME", EVELYN, "join", prev=["IMZ"])

    state = room.named(await room.resolve(["JR", "ME"]))
    assert state == {**INITIAL_NAMED, JR: "JR"}


@pytest.mark.parametrize("version", V2_VERSIONS)
async def test_offtopic_power_levels(version: str) -> None:
    """A chain of PL changes by successively less powerful users, against a fork that
    only has the first: the auth difference replays the whole chain, each step
    authorised by the previous one."""
    room = await initial_room(version)
    await room.pl("PA", ALICE, {ALICE: 100, BOB: 50}, prev=["IMZ"])
    await room.pl("PB", BOB, {ALICE: 100, BOB: 50, CHARLIE: 50}, prev=["PA"])
    await room.pl("PC", CHARLIE, {ALICE: 100, BOB: 50, CHARLIE: 0}, prev=["PB"])

    state = room.named(await room.resolve(["PC", "PA"]))
    assert state == {**INITIAL_NAMED, PL: "PC"}


@pytest.mark.parametrize("version", V2_VERSIONS)
async def test_topic_basic(version: str) -> None:
    """Alice demotes bob (PA2) while bob, still a moderator on his fork, changes the
    PL (PB) and the topic (T3). PA2 sorts before PB (alice is more powerful), so PB and
    then T3 fail; T2 is alice's and stays."""
    room = await initial_room(version)
    await room.topic("T1", ALICE, prev=["IMZ"])
    await room.pl("PA1", ALICE, {ALICE: 100, BOB: 50}, prev=["T1"])
    await room.topic("T2", ALICE, prev=["PA1"])
    await room.pl("PA2", ALICE, {ALICE: 100, BOB: 0}, prev=["T2"])
    await room.pl("PB", BOB, {ALICE: 100, BOB: 50}, prev=["PA1"])
    await room.topic("T3", BOB, prev=["PB"])

    state = room.named(await room.resolve(["PA2", "T3"]))
    assert state == {**INITIAL_NAMED, PL: "PA2", TOPIC: "T2"}


@pytest.mark.parametrize("version", V2_VERSIONS)
async def test_topic_reset(version: str) -> None:
    """Bob changes the topic, then alice bans him; a fork still has the first topic
    and the initial PL. The ban is replayed before the topics, so bob's topic fails and
    the earlier topic comes back."""
    room = await initial_room(version)
    await room.topic("T1", ALICE, prev=["IMZ"])
    await room.pl("PA", ALICE, {ALICE: 100, BOB: 50}, prev=["T1"])
    await room.topic("T2", BOB, prev=["PA"])
    await room.member("MB", BOB, "ban", sender=ALICE, prev=["T2"])

    state = room.named(await room.resolve(["MB", "T1"]))
    assert state == {**INITIAL_NAMED, PL: "PA", member(BOB): "MB", TOPIC: "T1"}


@pytest.mark.parametrize("version", V2_VERSIONS)
async def test_topic(version: str) -> None:
    """topic_basic, then a merge (MZ1) and a new topic by alice after it: resolving
    the new topic's fork against the merge keeps the newest topic."""
    room = await initial_room(version)
    await room.topic("T1", ALICE, prev=["IMZ"])
    await room.pl("PA1", ALICE, {ALICE: 100, BOB: 50}, prev=["T1"])
    await room.topic("T2", ALICE, prev=["PA1"])
    await room.pl("PA2", ALICE, {ALICE: 100, BOB: 0}, prev=["T2"])
    await room.pl("PB", BOB, {ALICE: 100, BOB: 50}, prev=["PA1"])
    await room.topic("T3", BOB, prev=["PB"])
    await room.add("MZ1", "m.room.message", ZARA, {"body": "hi"}, prev=["PA2", "T3"])
    await room.topic("T4", ALICE, prev=["MZ1"])

    assert room.named(room.state_after[room.id("MZ1")])[TOPIC] == "T2"
    state = room.named(await room.resolve(["T4", "MZ1"]))
    assert state == {**INITIAL_NAMED, PL: "PA2", TOPIC: "T4"}


@pytest.mark.parametrize("version", V2_VERSIONS)
async def test_mainline_sort(version: str) -> None:
    """TX cites the newer PL (PA2), TY the older one (PA1) but was sent later. Mainline
    order puts TY first, so TX is applied last and wins despite its earlier timestamp."""
    room = await initial_room(version)
    await room.pl("PA1", ALICE, {ALICE: 100, BOB: 50}, prev=["IMZ"])
    await room.pl("PA2", ALICE, {ALICE: 100, BOB: 50, CHARLIE: 10}, prev=["PA1"])
    await room.topic("TX", ALICE, prev=["PA2"])
    await room.topic("TY", BOB, prev=["PA1"])
    assert room.events[room.id("TX")].origin_server_ts < room.events[room.id("TY")].origin_server_ts

    state = room.named(await room.resolve(["TX", "TY"]))
    assert state == {**INITIAL_NAMED, PL: "PA2", TOPIC: "TX"}


async def test_mainline_sort_order_directly() -> None:
    """Events that never meet the mainline first, then by mainline position, then
    timestamp, then event ID."""
    room = await initial_room("11")
    await room.pl("PA1", ALICE, {ALICE: 100, BOB: 50}, prev=["IMZ"])
    await room.pl("PA2", ALICE, {ALICE: 100, BOB: 60}, prev=["PA1"])
    await room.topic("NEW", ALICE, prev=["PA2"], ts=1)
    await room.topic("OLD", BOB, prev=["PA1"], ts=50)
    await room.topic("OLD2", BOB, prev=["PA1"], ts=50)
    await room.topic("OLDER", BOB, prev=["IMZ"], ts=99)
    # Cites an unrelated PL branch: walks PB -> PA1, which is on the mainline.
    await room.pl("PB", BOB, {ALICE: 100, BOB: 50, ZARA: 1}, prev=["PA1"])
    await room.topic("SIDE", BOB, prev=["PB"], ts=0)
    # No PL event in its auth events at all.
    room.events["$NOPL"] = Event(
        {
            "type": "m.room.topic",
            "state_key": "",
            "sender": ALICE,
            "content": {},
            "room_id": room.room_id,
            "origin_server_ts": 1000,
            "auth_events": [room.id("CREATE"), room.id("IMA")],
        },
        room.rv,
        event_id="$NOPL",
    )
    loader = EventLoader(room.fetch)
    ids = [room.id(n) for n in ("NEW", "OLD2", "SIDE", "OLDER", "OLD")] + ["$NOPL"]
    await loader.load(ids)
    order = await _mainline_sort(ids, room.id("PA2"), loader)
    assert [room.name(i) for i in order] == ["NOPL", "OLDER", "SIDE", "OLD", "OLD2", "NEW"]


@pytest.mark.parametrize("version", V2_VERSIONS)
async def test_rejected_events_are_not_admitted(version: str) -> None:
    """A previously rejected event never enters the resolved state, and a rejected
    auth event does not vouch for anything."""
    room = await initial_room(version)
    await room.topic("TA", ALICE, prev=["IMZ"])
    await room.topic("TB", ALICE, prev=["IMZ"])
    state = room.named(await room.resolve(["TA", "TB"]))
    assert state[TOPIC] == "TB"  # same mainline position: the later timestamp wins
    room.events[room.id("TB")].rejected_reason = "auth"
    state = room.named(await room.resolve(["TA", "TB"]))
    assert state == {**INITIAL_NAMED, TOPIC: "TA"}


@pytest.mark.parametrize("version", V2_VERSIONS)
async def test_each_event_fetched_at_most_once(version: str) -> None:
    room = await initial_room(version)
    await room.topic("T1", ALICE, prev=["IMZ"])
    await room.pl("PA1", ALICE, {ALICE: 100, BOB: 50}, prev=["T1"])
    await room.topic("T2", ALICE, prev=["PA1"])
    await room.pl("PA2", ALICE, {ALICE: 100, BOB: 0}, prev=["T2"])
    await room.pl("PB", BOB, {ALICE: 100, BOB: 50}, prev=["PA1"])
    await room.topic("T3", BOB, prev=["PB"])
    await room.member("ME", EVELYN, "join", prev=["T3"])
    await room.member("MC", CHARLIE, "leave", prev=["PA2"])

    state = room.named(await room.resolve(["PA2", "T3", "ME", "MC"]))
    assert state == {
        **INITIAL_NAMED,
        PL: "PA2",
        TOPIC: "T2",
        member(EVELYN): "ME",
        member(CHARLIE): "MC",
    }
    assert room.fetched and max(room.fetched.values()) == 1
    # Unconflicted state that no check reads and no conflicted event's chain reaches
    # is never loaded.
    assert room.id("IMZ") not in room.fetched


@pytest.mark.parametrize("version", V2_VERSIONS)
async def test_power_events_bring_their_auth_ancestors(version: str) -> None:
    """Dave's join (DJ) is not a power event but authorises his kick of zara (DK), so it
    is replayed with the power events; dave's leave on the other fork (DL) is replayed
    after it, in mainline order, and wins. Sorting DJ with the ordinary events instead
    would put it after DL (closer to the resolved PL) and also let zara's join back."""
    room = await initial_room(version)
    await room.pl("PLD", ALICE, {ALICE: 100, DAVE: 50}, prev=["IMZ"])
    await room.member("DJ", DAVE, "join", prev=["PLD"])
    await room.member("DK", ZARA, "leave", sender=DAVE, prev=["DJ"])
    await room.member("DJB", DAVE, "join", prev=["IMZ"])
    await room.member("DL", DAVE, "leave", prev=["DJB"])

    state = room.named(await room.resolve(["DK", "DL"]))
    assert state == {**INITIAL_NAMED, PL: "PLD", member(DAVE): "DL", member(ZARA): "DK"}


@pytest.mark.parametrize(("version", "topic"), [("11", "TB"), ("12", "TA")])
async def test_unconflicted_state_is_reapplied_last(version: str, topic: str) -> None:
    """Both forks agree on P3 (bob's concurrent PB lost to it at merge M1), but PB is
    in the auth difference (only TA's chain has it). v2.1 replays it from an empty state,
    where it passes, so the mainline is PB's (TB then TA); the unconflicted P3 still
    ends up as the power levels. v2 checks PB against P3, which forbids it."""
    room = await initial_room(version)
    await room.pl("PA", ALICE, {ALICE: 100, BOB: 50}, prev=["IMZ"])
    await room.pl("PB", BOB, {ALICE: 100, BOB: 50, CHARLIE: 50}, prev=["PA"])
    await room.topic("TA", BOB, prev=["PB"])
    await room.add(
        "P3",
        "m.room.power_levels",
        ALICE,
        room.power_levels({ALICE: 100, BOB: 50}, events={"m.room.power_levels": 75}),
        "",
        prev=["PA"],
    )
    await room.add("M1", "m.room.message", ZARA, {"body": "merge"}, prev=["TA", "P3"])
    assert room.named(room.state_after[room.id("M1")])[PL] == "P3"
    await room.topic("TB", ALICE, prev=["P3"])

    state = room.named(await room.resolve(["M1", "TB"]))
    assert state == {**INITIAL_NAMED, PL: "P3", TOPIC: topic}
