"""Many clients syncing while many writers commit: nobody misses or repeats anything.

The property under test is the one /sync exists for: a client that follows `next_batch`
sees every event of its rooms exactly once, or is told `limited: true` (and then fills
the gap from `prev_batch` with /messages, as Element does); it sees every to-device
message sent to its device exactly once; its receipts and room state end where the
server's end. It must hold while other requests commit concurrently, which is where a
token taken at a different moment from the data it covers loses events.

The writers mix every path that moves a stream /sync serves: messages in several rooms
(batched into group commits under load), redactions (applied between commit and
announcement), state changes, receipts and to-device messages; the readers mix initial
and incremental syncs, long-polls and immediate ones, small timelines (which go limited)
and large ones. Runs on SQLite and, with HS_TEST_POSTGRES_DSN, on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import random
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from homeserver.app import create_app
from tests.client.helpers import auth, make_user
from tests.conftest import make_config
from tests.storage.conftest import POSTGRES_SKIP_REASON, drop_postgres_schema, postgres_test_config

C = "/_matrix/client/v3"

USERS = 10
ROOMS = 3
WRITERS = 6
WRITES_PER_WRITER = 30


@pytest.fixture(params=["sqlite", "postgres"])
async def client(
    request: pytest.FixtureRequest, aiohttp_client: Any, tmp_path: Path
) -> AsyncIterator[TestClient]:
    db: dict[str, Any] | None = None
    overrides: dict[str, Any] = {"log_level": "INFO"}
    if request.param == "postgres":
        db = postgres_test_config()
        if db is None:
            pytest.skip(POSTGRES_SKIP_REASON)
        overrides["database"] = db
    try:
        yield await aiohttp_client(create_app(make_config(tmp_path, **overrides)))
    finally:
        if db is not None:
            await drop_postgres_schema(db)


async def ok(response: Any) -> Any:
    body = await response.json()
    assert response.status == 200, body
    return body


@dataclass
class Account:
    user_id: str
    token: str
    device_id: str


@dataclass
class View:
    """What one syncing client knows, built only from what the server told it."""

    account: Account
    timeline_limit: int
    long_poll: bool
    # Syncs once at the start and once at the end: its rooms must come back limited
    # (the gap is filled from prev_batch), whatever the machine's speed.
    away: bool = False
    events: dict[str, list[str]] = field(default_factory=dict)  # room -> event IDs in order
    duplicates: list[str] = field(default_factory=list)
    limited: int = 0
    to_device: list[str] = field(default_factory=list)
    receipts: dict[str, dict[str, str]] = field(default_factory=dict)  # room -> user -> event
    topics: dict[str, str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


async def fill_gap(
    c: TestClient, view: View, room_id: str, prev_batch: str, known: set[str]
) -> list[str]:
    """Page /messages backwards from `prev_batch` until an event the client has."""
    found: list[str] = []
    token = prev_batch
    headers = auth(view.account.token)
    for _ in range(200):
        page = await ok(
            await c.get(
                f"{C}/rooms/{room_id}/messages",
                params={"dir": "b", "from": token, "limit": "20"},
                headers=headers,
            )
        )
        for ev in page.get("chunk", []):
            if ev["event_id"] in known:
                return list(reversed(found))
            found.append(ev["event_id"])
        if "end" not in page or not page.get("chunk"):
            break
        token = page["end"]
    return list(reversed(found))


async def absorb(c: TestClient, view: View, body: dict[str, Any], initial: bool) -> None:
    for room_id, room in body.get("rooms", {}).get("join", {}).items():
        seen = view.events.setdefault(room_id, [])
        known = set(seen)
        timeline = room.get("timeline", {})
        ids = [e["event_id"] for e in timeline.get("events", [])]
        if timeline.get("limited") and not initial:
            view.limited += 1
            gap = await fill_gap(c, view, room_id, timeline["prev_batch"], known | set(ids))
            seen.extend(gap)
            known.update(gap)
        for eid in ids:
            if eid in known:
                view.duplicates.append(eid)
            else:
                seen.append(eid)
                known.add(eid)
        for ev in [*room.get("state", {}).get("events", []), *timeline.get("events", [])]:
            if ev.get("type") == "m.room.topic" and ev.get("state_key") == "":
                view.topics[room_id] = ev["content"].get("topic", "")
        for ev in room.get("ephemeral", {}).get("events", []):
            if ev.get("type") != "m.receipt":
                continue
            for event_id, kinds in ev["content"].items():
                for user_id in kinds.get("m.read", {}):
                    view.receipts.setdefault(room_id, {})[user_id] = event_id
    for ev in body.get("to_device", {}).get("events", []):
        view.to_device.append(ev["content"]["msg"])


async def sync_loop(c: TestClient, view: View, stop: asyncio.Event) -> None:
    flt = {"room": {"timeline": {"limit": view.timeline_limit}}, "presence": {"types": []}}
    headers = auth(view.account.token)
    body = await ok(await c.get(f"{C}/sync", params={"filter": _json(flt)}, headers=headers))
    await absorb(c, view, body, initial=True)
    since = body["next_batch"]
    if view.away:
        await stop.wait()
    while True:
        finishing = stop.is_set()
        params = {"filter": _json(flt), "since": since}
        params["timeout"] = "500" if view.long_poll and not finishing else "0"
        body = await ok(await c.get(f"{C}/sync", params=params, headers=headers))
        await absorb(c, view, body, initial=False)
        since = body["next_batch"]
        if finishing:
            return


def _json(value: Any) -> str:
    import json

    return json.dumps(value, separators=(",", ":"))


@dataclass
class Written:
    """What one writer did that clients must end up seeing."""

    to_device: list[str] = field(default_factory=list)
    receipts: dict[str, str] = field(default_factory=dict)  # room -> last receipt's event


async def writer(
    c: TestClient, me: Account, others: list[Account], rooms: list[str], rng: random.Random
) -> Written:
    """Random writes through the client API."""
    headers = auth(me.token)
    written = Written()
    mine: list[tuple[str, str]] = []
    for i in range(WRITES_PER_WRITER):
        room_id = rng.choice(rooms)
        kind = rng.random()
        txn = secrets.token_hex(6)
        if kind < 0.5 or not mine:
            sent = await ok(
                await c.put(
                    f"{C}/rooms/{room_id}/send/m.room.message/{txn}",
                    json={"msgtype": "m.text", "body": f"{me.user_id} {i}"},
                    headers=headers,
                )
            )
            mine.append((room_id, sent["event_id"]))
        elif kind < 0.6:
            target_room, target = mine.pop(rng.randrange(len(mine)))
            await ok(
                await c.put(
                    f"{C}/rooms/{target_room}/redact/{target}/{txn}", json={}, headers=headers
                )
            )
        elif kind < 0.7:
            await ok(
                await c.put(
                    f"{C}/rooms/{room_id}/state/m.room.topic/",
                    json={"topic": f"topic {me.user_id} {i}"},
                    headers=headers,
                )
            )
        elif kind < 0.85:
            target_room, event_id = rng.choice(mine)
            await ok(
                await c.post(
                    f"{C}/rooms/{target_room}/receipt/m.read/{event_id}", json={}, headers=headers
                )
            )
            written.receipts[target_room] = event_id
        else:
            to = rng.choice(others)
            msg = f"{me.user_id}/{i}"
            await ok(
                await c.put(
                    f"{C}/sendToDevice/m.test/{txn}",
                    json={"messages": {to.user_id: {to.device_id: {"msg": msg}}}},
                    headers=headers,
                )
            )
            written.to_device.append(msg)
        await asyncio.sleep(rng.random() * 0.01)
    return written


async def server_history(c: TestClient, account: Account, room_id: str) -> list[str]:
    """Every event of the room, oldest first, as /messages gives it."""
    out: list[str] = []
    token = None
    for _ in range(500):
        params = {"dir": "b", "limit": "100"}
        if token:
            params["from"] = token
        page = await ok(
            await c.get(f"{C}/rooms/{room_id}/messages", params=params, headers=auth(account.token))
        )
        out.extend(e["event_id"] for e in page.get("chunk", []))
        if "end" not in page or not page.get("chunk"):
            break
        token = page["end"]
    return list(reversed(out))


async def _types(c: TestClient, account: Account, room_id: str) -> dict[str, str]:
    page = await ok(
        await c.get(
            f"{C}/rooms/{room_id}/messages",
            params={"dir": "b", "limit": "1000"},
            headers=auth(account.token),
        )
    )
    return {e["event_id"]: e["type"] for e in page["chunk"]}


async def test_concurrent_writers_and_syncers_lose_nothing(client: TestClient) -> None:
    c = client
    accounts = [Account(*await make_user(c, f"u{i}")) for i in range(USERS)]
    rooms = []
    for r in range(ROOMS):
        creator = accounts[r % USERS]
        created = await ok(
            await c.post(
                f"{C}/createRoom",
                json={
                    "preset": "public_chat",
                    "name": f"room {r}",
                    "power_level_content_override": {"events": {"m.room.topic": 0}},
                },
                headers=auth(creator.token),
            )
        )
        rooms.append(created["room_id"])
        for a in accounts:
            if a is not creator:
                await ok(
                    await c.post(f"{C}/join/{created['room_id']}", json={}, headers=auth(a.token))
                )

    views = [
        View(
            a,
            timeline_limit=(3 if i % 3 == 0 else 100),
            long_poll=(i % 2 == 0),
            away=(i == USERS - 1),
        )
        for i, a in enumerate(accounts)
    ]
    stop = asyncio.Event()
    syncers = [asyncio.create_task(sync_loop(c, v, stop)) for v in views]
    writer_accounts = accounts[:WRITERS]
    try:
        await asyncio.sleep(0.05)  # some initial syncs overlap the first writes, some do not
        results = await asyncio.gather(
            *(
                writer(c, w, [a for a in accounts if a is not w], rooms, random.Random(i))
                for i, w in enumerate(writer_accounts)
            )
        )
        stop.set()
        await asyncio.wait_for(asyncio.gather(*syncers), 60)
    finally:
        for task in syncers:
            task.cancel()

    histories = {room_id: await server_history(c, accounts[0], room_id) for room_id in rooms}
    types = {
        eid: t for room_id in rooms for eid, t in (await _types(c, accounts[0], room_id)).items()
    }
    problems: list[str] = []
    for view in views:
        who = f"{view.account.user_id} (limit {view.timeline_limit})"
        if view.duplicates:
            problems.append(f"{who}: saw {len(view.duplicates)} events twice")
        for room_id in rooms:
            seen = view.events.get(room_id, [])
            history = histories[room_id]
            assert seen, f"{who} never saw {room_id}"
            # From the first event the client saw, it must have all of them, in order.
            expected = history[history.index(seen[0]) :]
            missing = [e for e in expected if e not in set(seen)]
            if missing:
                problems.append(
                    f"{who}: {len(missing)} events of {room_id} never delivered: "
                    + ", ".join(types.get(e, "?") for e in missing)
                )
            elif seen != expected:
                problems.append(f"{who}: events of {room_id} out of order")
        if len(view.to_device) != len(set(view.to_device)):
            problems.append(f"{who}: a to-device message delivered twice")
    # Every to-device message reached its one recipient exactly once.
    sent = {m for w in results for m in w.to_device}
    delivered = [m for v in views for m in v.to_device]
    if sent - set(delivered):
        problems.append(f"{len(sent - set(delivered))} to-device messages never delivered")
    if len(delivered) != len(set(delivered)):
        problems.append("a to-device message was delivered to two devices")
    # Receipts and topics: every client ends where the server ends.
    for room_id in rooms:
        state = await ok(await c.get(f"{C}/rooms/{room_id}/state", headers=auth(accounts[0].token)))
        topic = next(e["content"]["topic"] for e in state if e["type"] == "m.room.topic")
        for view in views:
            if view.topics.get(room_id) != topic:
                problems.append(f"{view.account.user_id}: topic of {room_id} is stale")
            for w, done in zip(writer_accounts, results, strict=True):
                final = done.receipts.get(room_id)
                if final and view.receipts.get(room_id, {}).get(w.user_id) != final:
                    problems.append(
                        f"{view.account.user_id}: {w.user_id}'s receipt in {room_id} is stale"
                    )
    assert not problems, "\n".join(problems[:20])
    assert views[-1].limited > 0, "the client that was away never saw a limited timeline"
    assert sent, "no to-device messages were sent"


QUIET_ROOMS = 12
QUIET_MESSAGES = 15


async def test_many_quiet_rooms_committed_in_groups_lose_nothing(client: TestClient) -> None:
    """A message each to many rooms at once: their chains share transactions (the
    store's group commit), a stream position per event. Watchers in every room, long-
    polling and not, with small and large timelines, must see every event of every
    room once and in order, whatever group it was committed in."""
    c = client
    senders = [Account(*await make_user(c, f"q{i}")) for i in range(QUIET_ROOMS)]
    watchers = [Account(*await make_user(c, f"watch{i}")) for i in range(3)]
    rooms = []
    for sender in senders:
        created = await ok(
            await c.post(
                f"{C}/createRoom", json={"preset": "public_chat"}, headers=auth(sender.token)
            )
        )
        rooms.append(created["room_id"])
        for w in watchers:
            await ok(await c.post(f"{C}/join/{created['room_id']}", json={}, headers=auth(w.token)))
    views = [
        View(w, timeline_limit=limit, long_poll=poll)
        for w, limit, poll in zip(watchers, (5, 100, 100), (True, True, False), strict=True)
    ]
    stop = asyncio.Event()
    syncers = [asyncio.create_task(sync_loop(c, v, stop)) for v in views]

    async def send_all(sender: Account, room_id: str, rng: random.Random) -> None:
        for i in range(QUIET_MESSAGES):
            await ok(
                await c.put(
                    f"{C}/rooms/{room_id}/send/m.room.message/{secrets.token_hex(6)}",
                    json={"msgtype": "m.text", "body": f"{i}"},
                    headers=auth(sender.token),
                )
            )
            await asyncio.sleep(rng.random() * 0.005)

    try:
        await asyncio.sleep(0.05)
        await asyncio.gather(
            *(
                send_all(s, r, random.Random(i))
                for i, (s, r) in enumerate(zip(senders, rooms, strict=True))
            )
        )
        stop.set()
        await asyncio.wait_for(asyncio.gather(*syncers), 60)
    finally:
        for task in syncers:
            task.cancel()
    problems = []
    for view in views:
        who = f"{view.account.user_id} (limit {view.timeline_limit})"
        if view.duplicates:
            problems.append(f"{who}: saw {len(view.duplicates)} events twice")
        for room_id in rooms:
            history = await server_history(c, watchers[0], room_id)
            assert len(history) >= QUIET_MESSAGES
            seen = view.events.get(room_id, [])
            expected = history[history.index(seen[0]) :] if seen else history
            if seen != expected:
                missing = len(set(expected) - set(seen))
                problems.append(f"{who}: {room_id}: {missing} missing or out of order")
    assert not problems, "\n".join(problems[:20])
