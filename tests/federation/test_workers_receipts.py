"""Read receipts and read markers written by the client readers (`stream_writers:
{receipts: [...], account_data: [...]}`).

Server A is the README's seven-process deployment behind nginx (tests/deployment.py
FULL_LAYOUT) whose two client readers write receipts and account data; server B is one
process on loopback, federating with A. What must hold:
- with A's main SIGKILLed, receipts and read markers still work (a reader serves them;
  before, it forwarded them to the main and answered 502): the reader's unread count
  drops to zero, the room's other local member sees the public receipt and not the
  private one, the fully-read marker is in the reader's account data, and the remote
  member's server receives the receipt (the reader queues the EDU in the durable outbox
  and wakes A's federation sender over the bus);
- the main and both readers writing receipts at once while local and remote members
  long-poll /sync: every member's last receipt reaches every observer and nobody's
  receipt ever goes backwards in what an observer sees (positions are allocated under
  the deployment's write lock, so a sync token never skips a receipt another process
  committed late).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.client.test_workers import port_url
from tests.federation.multiserver import (
    READERS,
    LoopbackServer,
    eventually,
    post_to,
    writers_and_peer,
)

READERS_PER_PROCESS = 3  # members writing receipts through each process at once
MESSAGES = 6  # each member reads them one after the other


@pytest.fixture
async def servers(tmp_path: Path) -> AsyncIterator[tuple[LoopbackServer, LoopbackServer]]:
    async with writers_and_peer(tmp_path, {"receipts": READERS, "account_data": READERS}) as pair:
        yield pair


def _receipts(body: dict[str, Any], room_id: str) -> dict[str, dict[str, str]]:
    """receipt type -> user -> event ID, from the room's m.receipt events in a /sync."""
    room = body.get("rooms", {}).get("join", {}).get(room_id, {})
    out: dict[str, dict[str, str]] = {}
    for edu in room.get("ephemeral", {}).get("events", []):
        if edu["type"] != "m.receipt":
            continue
        for event_id, by_type in edu["content"].items():
            for receipt_type, users in by_type.items():
                for user in users:
                    out.setdefault(receipt_type, {})[user] = event_id
    return out


async def _room_with(
    a: LoopbackServer, b: LoopbackServer, owner: str, local: list[str], remote: list[str]
) -> str:
    room_id = await a.create_room(owner)
    for user in local:
        await a.join(user, room_id, [a.name])
    for user in remote:
        await b.join(user, room_id, [a.name])
    return room_id


async def test_readers_write_receipts_and_read_markers_while_the_main_is_down(
    servers: Any,
) -> None:
    a, b = servers
    alice, carol, bob = (
        await a.register("alice"),
        await a.register("carol"),
        await b.register("bob"),
    )
    room_id = await _room_with(a, b, alice, [carol], [bob])
    events = [await a.send_text(alice, room_id, f"m{i}") for i in range(3)]

    async def carol_unread() -> dict[str, Any] | None:
        body = await a.ok("GET", "/sync", carol, timeout="0")
        room = body.get("rooms", {}).get("join", {}).get(room_id, {})
        counts = room.get("unread_notifications", {})
        return counts if counts.get("notification_count") == 3 else None

    await eventually(carol_unread, timeout=15)  # the persister's push actions are in
    alice_since = (await a.ok("GET", "/sync", alice, timeout="0"))["next_batch"]
    bob_since = (await b.ok("GET", "/sync", bob, timeout="0"))["next_batch"]
    token = a.tokens[carol]
    a.deployment.kill("main")
    try:
        reader1, reader2 = (port_url(a.deployment, r) for r in READERS)
        status, body = await post_to(
            a.http, reader1, token, f"/rooms/{room_id}/receipt/m.read/{events[1]}", {}
        )
        assert (status, body) == (200, {})
        # Through nginx, which sends receipts and markers to the readers.
        status, body = await post_to(
            a.http,
            f"http://{a.name}",
            token,
            f"/rooms/{room_id}/read_markers",
            {"m.fully_read": events[2], "m.read": events[2], "m.read.private": events[2]},
        )
        assert (status, body) == (200, {})
        status, body = await post_to(
            a.http, reader2, token, f"/rooms/{room_id}/receipt/m.fully_read/{events[2]}", {}
        )
        assert (status, body) == (200, {})

        async def carol_read() -> tuple[int, list[Any], dict[str, dict[str, str]]]:
            body = await a.ok("GET", "/sync", carol, timeout="0")
            room = body["rooms"]["join"][room_id]
            markers = [e for e in room["account_data"]["events"] if e["type"] == "m.fully_read"]
            count = room["unread_notifications"]["notification_count"]
            return count, markers, _receipts(body, room_id)

        # What three processes wrote, as carol's reader serves it (eventually: it hears
        # of the other readers' writes over Redis).
        expected = (
            0,
            [{"type": "m.fully_read", "content": {"event_id": events[2]}}],
            {"m.read": {carol: events[2]}, "m.read.private": {carol: events[2]}},
        )
        last: list[Any] = []

        async def carol_has_read() -> bool:
            last[:] = [await carol_read()]
            return last[0] == expected

        try:
            await eventually(carol_has_read, timeout=10)
        except TimeoutError:
            raise AssertionError(f"carol's /sync: {last[0]}, wanted {expected}") from None

        async def alice_sees() -> dict[str, dict[str, str]] | None:
            got = _receipts(await a.ok("GET", "/sync", alice, since=alice_since), room_id)
            return got if got.get("m.read", {}).get(carol) == events[2] else None

        seen = await eventually(alice_sees, timeout=15)
        assert "m.read.private" not in seen  # only ever shown to its owner

        async def bob_sees() -> dict[str, dict[str, str]] | None:
            got = _receipts(await b.ok("GET", "/sync", bob, since=bob_since), room_id)
            return got if got.get("m.read", {}).get(carol) == events[2] else None

        # Delivered by A's federation sender, woken by the readers (the main is down).
        seen = await eventually(bob_sees, timeout=30)
        assert "m.read.private" not in seen
    finally:
        await asyncio.to_thread(a.deployment.start_process, "main")


async def test_every_writer_at_once_every_last_receipt_arrives(servers: Any) -> None:
    a, b = servers
    alice, bob = await a.register("alice"), await b.register("bob")
    writers = [port_url(a.deployment, "main"), *(port_url(a.deployment, r) for r in READERS)]
    members = {
        (p, c): await a.register(f"reader{p}x{c}")
        for p in range(len(writers))
        for c in range(READERS_PER_PROCESS)
    }
    room_id = await _room_with(a, b, alice, list(members.values()), [bob])
    events = [await a.send_text(alice, room_id, f"m{i}") for i in range(MESSAGES)]
    index = {event_id: i for i, event_id in enumerate(events)}
    final = {user: events[-1] for user in members.values()}
    # What each observer saw of each member, in order (an index into `events`).
    seen: dict[str, dict[str, list[int]]] = {alice: {}, bob: {}}
    done = asyncio.Event()

    async def read_through(p: int, c: int) -> None:
        user = members[(p, c)]
        for event_id in events:
            path = f"/rooms/{room_id}/receipt/m.read/{event_id}"
            status, body = await post_to(a.http, writers[p], a.tokens[user], path, {})
            assert (status, body) == (200, {}), (writers[p], body)

    def record(observer: str, body: dict[str, Any]) -> None:
        for user, event_id in _receipts(body, room_id).get("m.read", {}).items():
            if user in final:
                seen[observer].setdefault(user, []).append(index[event_id])

    def complete(observer: str) -> bool:
        return all(seen[observer].get(user, [-1])[-1] == MESSAGES - 1 for user in final)

    async def follow(server: LoopbackServer, user: str) -> None:
        since = (await server.ok("GET", "/sync", user, timeout="0"))["next_batch"]
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            body = await server.ok("GET", "/sync", user, since=since, timeout="1000")
            since = body["next_batch"]
            record(user, body)
            if done.is_set() and complete(user):
                break
        record(user, await server.ok("GET", "/sync", user, since=since, timeout="0"))

    followers = [
        asyncio.create_task(follow(a, alice)),
        asyncio.create_task(follow(b, bob)),
    ]
    await asyncio.sleep(0.5)  # both observers are long-polling
    await asyncio.gather(*(read_through(p, c) for p, c in members))
    done.set()
    await asyncio.gather(*followers)
    for observer in (alice, bob):
        missing = [u for u in final if seen[observer].get(u, [-1])[-1] != MESSAGES - 1]
        assert not missing, f"{observer} never saw the last receipt of {missing}"
        for user, indices in seen[observer].items():
            assert indices == sorted(indices), f"{observer} saw {user}'s receipt go back"
    # One more full sync of a local member: the server's own view agrees.
    body = await a.ok("GET", "/sync", alice, timeout="0")
    assert {u: e for u, e in _receipts(body, room_id)["m.read"].items() if u in final} == final
