"""State resolution v1, v2 and v2.1 on hand-built event DAGs.

Each scenario builds a room event by event (explicit event IDs, no signatures); the
state after each event is computed the way a server would (resolving the states after
its prev_events), auth events are picked from the state before the event, and the
resolved state of the forks is compared with the exact expected event IDs. The
expectations were worked out by hand from the spec's algorithm; the comments say why.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping

import pytest

from homeserver.events.event import Event, StateKey
from homeserver.events.room_versions import KNOWN_ROOM_VERSIONS
from homeserver.graph.auth_chain import EventLoader, compute_auth_chain, load_auth_closure
from homeserver.graph.auth_rules import auth_types_for_event
from homeserver.graph.state_res import resolve_state
from homeserver.graph.state_res_v1 import separate_v1
from homeserver.graph.state_res_v2 import (
    _conflicted_subgraph,
    _full_conflicted_set,
    _mainline_sort,
    is_power_event,
    separate,
)

ALICE = "@alice:example.com"
BOB = "@bob:example.com"
CHARLIE = "@charlie:example.com"
ZARA = "@zara:example.com"
EVELYN = "@evelyn:example.com"
DAVE = "@dave:example.com"

CREATE = ("m.room.create", "")
PL = ("m.room.power_levels", "")
JR = ("m.room.join_rules", "")
TOPIC = ("m.room.topic", "")


def member(user: str) -> StateKey:
    return ("m.room.member", user)


class Room:
    """A room DAG under construction, with the state after every event."""

    def __init__(self, version: str) -> None:
        self.rv = KNOWN_ROOM_VERSIONS[version]
        self.events: dict[str, Event] = {}
        self.state_after: dict[str, dict[StateKey, str]] = {}
        self.fetched: Counter[str] = Counter()
        self.room_id = "!room:example.com"
        self._ts = 0

    def id(self, name: str) -> str:
        return f"${name}:example.com" if self.rv.event_id_in_event else f"${name}"

    def name(self, event_id: str) -> str:
        return event_id[1:].split(":")[0]

    async def fetch(self, event_ids: Iterable[str]) -> dict[str, Event]:
        ids = list(event_ids)
        self.fetched.update(ids)
        return {i: self.events[i] for i in ids if i in self.events}

    async def state_at(self, prev: list[str]) -> dict[StateKey, str]:
        sets = [self.state_after[p] for p in prev]
        if not sets:
            return {}
        return await resolve_state(self.rv, sets, self.fetch)

    def power_levels(self, users: Mapping[str, int], **extra: object) -> dict[str, object]:
        """PL content; v12 creators may not be listed (they are infinitely powerful)."""
        if self.rv.privileged_creators:
            users = {u: v for u, v in users.items() if u != ALICE}
        return {"users": dict(users), **extra}

    async def add(
        self,
        name: str,
        event_type: str,
        sender: str,
        content: dict,
        state_key: str | None = None,
        prev: Iterable[str] = (),
        ts: int | None = None,
        depth: int | None = None,
    ) -> str:
        event_id = self.id(name)
        prev_ids = [self.id(p) for p in prev]
        state_before = await self.state_at(prev_ids)
        keys = auth_types_for_event(self.rv, event_type, sender, state_key, content)
        if event_type == "m.room.create":
            auth_ids: list[str] = []
        else:
            auth_ids = sorted(state_before[k] for k in keys if k in state_before)
        self._ts += 1
        pdu: dict = {
            "type": event_type,
            "sender": sender,
            "content": content,
            "origin_server_ts": self._ts if ts is None else ts,
            "depth": depth
            if depth is not None
            else 1 + max((self.events[p].depth for p in prev_ids), default=0),
            "prev_events": prev_ids,
            "auth_events": auth_ids,
            "hashes": {"sha256": "x"},
            "signatures": {},
        }
        if state_key is not None:
            pdu["state_key"] = state_key
        is_create = event_type == "m.room.create"
        if not (is_create and self.rv.room_id_is_create_event_id):
            pdu["room_id"] = self.room_id
        event = Event(pdu, self.rv, event_id=event_id)
        if is_create:
            self.room_id = event.room_id
        self.events[event_id] = event
        state = dict(state_before)
        if state_key is not None:
            state[(event_type, state_key)] = event_id
        self.state_after[event_id] = state
        return event_id

    async def member(self, name: str, user: str, membership: str, sender: str | None = None, **kw):
        return await self.add(
            name, "m.room.member", sender or user, {"membership": membership}, user, **kw
        )

    async def topic(self, name: str, sender: str, **kw) -> str:
        return await self.add(name, "m.room.topic", sender, {"topic": name}, "", **kw)

    async def pl(self, name: str, sender: str, users: Mapping[str, int], **kw) -> str:
        return await self.add(
            name, "m.room.power_levels", sender, self.power_levels(users), "", **kw
        )

    async def initial(self) -> None:
        """CREATE, alice joins, alice's PL, public join rules, bob/charlie/zara join."""
        content = {"room_version": self.rv.identifier}
        if not self.rv.implicit_room_creator:
            content["creator"] = ALICE
        await self.add("CREATE", "m.room.create", ALICE, content, "")
        await self.member("IMA", ALICE, "join", prev=["CREATE"])
        await self.pl("IPOWER", ALICE, {ALICE: 100}, prev=["IMA"])
        await self.add(
            "IJR", "m.room.join_rules", ALICE, {"join_rule": "public"}, "", prev=["IPOWER"]
        )
        await self.member("IMB", BOB, "join", prev=["IJR"])
        await self.member("IMC", CHARLIE, "join", prev=["IMB"])
        await self.member("IMZ", ZARA, "join", prev=["IMC"])

    async def resolve(self, leaves: Iterable[str], **kw) -> dict[StateKey, str]:
        sets = [self.state_after[self.id(leaf)] for leaf in leaves]
        self.fetched.clear()
        return await resolve_state(self.rv, sets, self.fetch, **kw)

    def named(self, state: Mapping[StateKey, str]) -> dict[StateKey, str]:
        return {k: self.name(v) for k, v in state.items()}


INITIAL_NAMED = {
    CREATE: "CREATE",
    member(ALICE): "IMA",
    PL: "IPOWER",
    JR: "IJR",
    member(BOB): "IMB",
    member(CHARLIE): "IMC",
    member(ZARA): "IMZ",
}

V2_VERSIONS = ["2", "6", "10", "11", "12"]


async def initial_room(version: str) -> Room:
    room = Room(version)
    await room.initial()
    return room


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
