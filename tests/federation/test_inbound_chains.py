"""A peer's transaction of message chains (rooms/ingest.py `_receive_chain`), on both
backends: each room's run of plain messages is checked together and written in one
transaction, and what the one-by-one receiving algorithm would do otherwise still
happens - a rejected event is rejected alone, a redaction that came first applies,
duplicates are answered as duplicates, a state event splits the run - while local
users send into the same rooms and sync."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import pytest

from homeserver.app import create_app
from homeserver.appstate import LOCAL_EVENTS, STORES
from homeserver.events import Event, get_room_version
from homeserver.events.builder import build_event
from homeserver.graph.auth_rules import auth_types_for_event
from homeserver.rooms.persister import Persister
from tests.client.helpers import auth, deployed, join_room, make_user
from tests.federation.inbound_helpers import (
    REMOTE,
    REMOTE_KEY,
    RITA,
    create_room,
    fed,
    join_remote,
    remote_event,
    seed_remote_key,
)

MALLORY = "@mallory:remote.test"  # never joined


@pytest.fixture
async def client(aiohttp_client: Any, tmp_config: Any, database_settings: dict[str, Any]) -> Any:
    app_client = await aiohttp_client(create_app(tmp_config(**database_settings)))
    await seed_remote_key(app_client)
    return app_client


@pytest.fixture
async def writes(client: Any, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """(room, events) of every write transaction of room events."""
    if deployed(client):
        pytest.skip("counts the write transactions of an in-process server")
    events = client.app[STORES].events
    original = events.persist_events
    seen: list[tuple[str, int]] = []

    async def counted(room_id: str, items: Any, **kw: Any) -> Any:
        seen.append((room_id, len(items)))
        return await original(room_id, items, **kw)

    monkeypatch.setattr(events, "persist_events", counted)
    return seen


async def new_room(client: Any, alice: str) -> str:
    room_id = await create_room(client, creator=alice)
    await join_remote(client, room_id)
    return room_id


async def chain(
    client: Any, room_id: str, bodies: list[str], *, prev: list[str] | None = None
) -> list[Event]:
    """Rita's messages, each built on the one before, the first on `prev` (default:
    the room's forward extremities)."""
    stores = client.app[STORES]
    version = get_room_version(await stores.rooms.get_room_version(room_id))
    state = await stores.current_state.get_current_state_ids(room_id)
    content = {"msgtype": "m.text"}
    keys = auth_types_for_event(version, "m.room.message", RITA, None, content)
    auth_ids = [state[k] for k in sorted(keys) if k in state]
    prev_ids = prev or await stores.events.get_forward_extremities(room_id)
    depth = max(e.depth for e in (await stores.events.get_events(prev_ids)).values()) + 1
    out = []
    for i, body in enumerate(bodies):
        event = build_event(
            version, room_id=room_id, sender=RITA, type="m.room.message",
            content={**content, "body": body}, state_key=None, prev_event_ids=prev_ids,
            auth_event_ids=auth_ids, depth=depth + i,
            origin_server_ts=int(time.time() * 1000) + i,
            server_name=REMOTE, signing_key=REMOTE_KEY,
        )  # fmt: skip
        out.append(event)
        prev_ids = [event.event_id]
    return out


async def send(client: Any, txn: str, events: list[Event]) -> dict[str, Any]:
    body = {"origin": REMOTE, "origin_server_ts": 1, "pdus": [e.pdu for e in events]}
    status, answer = await fed(client, "PUT", f"/_matrix/federation/v1/send/{txn}", body)
    assert status == 200, answer
    return answer["pdus"]


async def timeline(client: Any, room_id: str) -> list[str]:
    """The room's accepted events' bodies in stream order."""
    rows = await client.app[STORES].events.db.fetch(
        "SELECT event_id FROM events WHERE room_id = $1 AND type = 'm.room.message'"
        " AND rejected_reason IS NULL AND NOT soft_failed AND NOT outlier"
        " ORDER BY stream_ordering",
        room_id,
    )
    events = await client.app[STORES].events.get_events([r[0] for r in rows])
    return [events[r[0]].content.get("body") for r in rows]


async def test_each_rooms_chain_is_one_write_and_read_in_order(
    client: Any, writes: list[tuple[str, int]]
) -> None:
    alice, token, _ = await make_user(client, "alice")
    rooms = [await new_room(client, alice) for _ in range(2)]
    chains = [
        await chain(client, r, [f"{n}{i}" for i in range(20)])
        for n, r in zip("ab", rooms, strict=True)
    ]
    r = await client.get("/_matrix/client/v3/sync", headers=auth(token))
    since = (await r.json())["next_batch"]
    writes.clear()
    # Interleaved in the transaction, as a sending server mixes rooms.
    pdus = [e for pair in zip(*chains, strict=True) for e in pair]
    assert await send(client, "t1", pdus) == {e.event_id: {} for e in pdus}
    assert sorted(writes) == sorted((r, 20) for r in rooms)
    stores = client.app[STORES]
    for room_id, events in zip(rooms, chains, strict=True):
        assert await timeline(client, room_id) == [e.content["body"] for e in events]
        assert await stores.events.get_forward_extremities(room_id) == [events[-1].event_id]
    # A local member's /sync sees every message once, in order.
    flt = '{"room":{"timeline":{"limit":50}}}'
    r = await client.get(
        "/_matrix/client/v3/sync", params={"since": since, "filter": flt}, headers=auth(token)
    )
    joined = (await r.json())["rooms"]["join"]
    for room_id, events in zip(rooms, chains, strict=True):
        seen = [e["event_id"] for e in joined[room_id]["timeline"]["events"]]
        assert seen == [e.event_id for e in events]
    # The same PDUs again (a new transaction ID): duplicates, nothing written twice.
    writes.clear()
    assert await send(client, "t2", pdus) == {e.event_id: {} for e in pdus}
    assert writes == []
    assert await timeline(client, rooms[0]) == [e.content["body"] for e in chains[0]]


async def test_a_chain_with_a_bad_event_goes_one_by_one(
    client: Any, writes: list[tuple[str, int]]
) -> None:
    """Mallory, not in the room, signs the chain's last event: it alone is rejected,
    the four before it are accepted (the one-by-one path, one write each)."""
    alice, _, _ = await make_user(client, "alice")
    room_id = await new_room(client, alice)
    events = await chain(client, room_id, ["m0", "m1", "m2", "m3"])
    bad = await remote_event(
        client, room_id, MALLORY, "m.room.message", {"body": "bad"}, prev=[events[-1].event_id]
    )
    writes.clear()
    results = await send(client, "t1", [*events, bad])
    assert [results[e.event_id] for e in events] == [{}] * 4
    assert "error" in results[bad.event_id] and "Rejected" in results[bad.event_id]["error"]
    assert await timeline(client, room_id) == ["m0", "m1", "m2", "m3"]
    assert [n for _, n in writes] == [1] * 5
    stored = await client.app[STORES].events.get_event(bad.event_id)
    assert stored is not None and stored.rejected_reason


async def test_a_state_event_splits_the_run(client: Any, writes: list[tuple[str, int]]) -> None:
    alice, _, _ = await make_user(client, "alice")
    room_id = await new_room(client, alice)
    before = await chain(client, room_id, ["a0", "a1", "a2"])
    member = await remote_event(
        client, room_id, RITA, "m.room.member", {"membership": "join", "displayname": "R"},
        RITA, prev=[before[-1].event_id],
    )  # fmt: skip
    writes.clear()
    assert await send(client, "t1", [*before, member]) == {
        e.event_id: {} for e in [*before, member]
    }
    after = await chain(client, room_id, ["b0", "b1", "b2"])
    assert await send(client, "t2", after) == {e.event_id: {} for e in after}
    assert [n for _, n in writes] == [3, 1, 3]
    assert await timeline(client, room_id) == ["a0", "a1", "a2", "b0", "b1", "b2"]
    state = await client.app[STORES].current_state.get_current_state_ids(room_id)
    assert state[("m.room.member", RITA)] == member.event_id


async def test_a_redaction_that_came_first_applies_to_its_target_in_a_chain(
    client: Any, writes: list[tuple[str, int]]
) -> None:
    """Rita's redaction of a message reaches us before the message (built on the
    room's tips, it forks from the chain): once the chain comes, in one write, the
    message is stored redacted."""
    alice, token, _ = await make_user(client, "alice")
    room_id = await new_room(client, alice)
    events = await chain(client, room_id, ["keep", "gone", "keep too"])
    target = events[1].event_id
    redaction = await remote_event(client, room_id, RITA, "m.room.redaction", {"redacts": target})
    assert await send(client, "t1", [redaction]) == {redaction.event_id: {}}
    writes.clear()
    assert await send(client, "t2", events) == {e.event_id: {} for e in events}
    assert writes == [(room_id, 3)]
    stores = client.app[STORES]
    redacted = await stores.events.get_redacted_because([e.event_id for e in events])
    assert {k: v for k, v in redacted.items() if v} == {target: redaction.event_id}
    for event in events:  # as alice reads them
        r = await client.get(
            f"/_matrix/client/v3/rooms/{room_id}/event/{event.event_id}", headers=auth(token)
        )
        seen = await r.json()
        if event.event_id == target:
            assert seen["content"] == {}
            assert seen["unsigned"]["redacted_because"]["event_id"] == redaction.event_id
        else:
            assert seen["content"]["body"] == event.content["body"]
    assert sorted(await stores.events.get_forward_extremities(room_id)) == sorted(
        [redaction.event_id, events[-1].event_id]
    )


async def test_chains_and_local_sends_at_once_lose_nothing(client: Any) -> None:
    """Three transactions of a chain built ahead on the room's tips while local users
    send into the same room: the room forks and merges, and a local member's
    incremental syncs see every event exactly once."""
    alice, token, _ = await make_user(client, "alice")
    room_id = await new_room(client, alice)
    bob, _, _ = await make_user(client, "bob")
    await join_room(client, room_id, bob)
    remote = await chain(client, room_id, [f"r{i}" for i in range(60)])
    r = await client.get("/_matrix/client/v3/sync", headers=auth(token))
    since = (await r.json())["next_batch"]
    local = client.app[LOCAL_EVENTS]

    async def feed() -> None:
        for t in range(3):
            results = await send(client, f"c{t}", remote[t * 20 : (t + 1) * 20])
            assert all(v == {} for v in results.values()), results
            await asyncio.sleep(0)

    async def speak(user: str, n: int) -> None:
        for i in range(n):
            await local.send(room_id, user, "m.room.message", {"body": f"{user[1]}{i}"})

    await asyncio.gather(feed(), speak(alice, 15), speak(bob, 15))
    bodies = await timeline(client, room_id)
    assert Counter(bodies) == Counter(
        [f"r{i}" for i in range(60)] + [f"a{i}" for i in range(15)] + [f"b{i}" for i in range(15)]
    )
    assert [b for b in bodies if b.startswith("r")] == [f"r{i}" for i in range(60)]
    seen: list[str] = []
    flt = '{"room":{"timeline":{"limit":200}}}'
    for _ in range(20):
        r = await client.get(
            "/_matrix/client/v3/sync",
            params={"since": since, "filter": flt, "timeout": "0"},
            headers=auth(token),
        )
        data = await r.json()
        since = data["next_batch"]
        room = data.get("rooms", {}).get("join", {}).get(room_id)
        if not room:
            break
        seen += [
            e["content"]["body"]
            for e in room["timeline"]["events"]
            if e["type"] == "m.room.message"
        ]
    assert seen == bodies


async def test_a_chain_whose_write_fails_goes_one_by_one(
    client: Any, writes: list[tuple[str, int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failure of the chain's own write (nothing committed) costs the peer nothing:
    its events are then taken one by one, each answered on its own."""
    alice, _, _ = await make_user(client, "alice")
    room_id = await new_room(client, alice)

    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(Persister, "persist_chain", broken)
    events = await chain(client, room_id, ["x0", "x1", "x2"])
    writes.clear()
    assert await send(client, "t1", events) == {e.event_id: {} for e in events}
    assert [n for _, n in writes] == [1, 1, 1]
    assert await timeline(client, room_id) == ["x0", "x1", "x2"]
