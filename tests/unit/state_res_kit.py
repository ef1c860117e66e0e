"""Shared building blocks for the state resolution tests (test_state_res*.py): a Room
that builds hand-made event DAGs and computes the state after each event the way a
server would (resolving the states after its prev_events).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping

from homeserver.events.event import Event, StateKey
from homeserver.events.room_versions import KNOWN_ROOM_VERSIONS
from homeserver.graph.auth_rules import auth_types_for_event
from homeserver.graph.state_res import resolve_state

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
