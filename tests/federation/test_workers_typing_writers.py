"""Typing notifications served by the client readers (`stream_writers: {typing: [...]}`).

Server A is the README's seven-process deployment behind nginx (tests/deployment.py
FULL_LAYOUT) whose two client readers write typing; server B is one process on
loopback, federating with A. With A's main SIGKILLed (before, typing was kept only in
the main's memory and the readers forwarded it there, answering 502):
- a user types through one reader: a local member syncing on the other reader sees it
  (each process applies every announced change with a timer of its own), and the
  remote member's server receives the m.typing EDU (queued in the durable outbox by the
  reader, delivered by A's federation sender woken over the bus);
- the typing ends on the other reader when its timeout is up, though nobody said so;
- typing started through nginx and stopped through the other reader ends everywhere.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.client.test_workers import port_url
from tests.federation.multiserver import (
    READERS,
    LoopbackServer,
    eventually,
    room_of_three,
    writers_and_peer,
)


@pytest.fixture
async def servers(tmp_path: Path) -> AsyncIterator[tuple[LoopbackServer, LoopbackServer]]:
    async with writers_and_peer(tmp_path, {"typing": READERS}) as pair:
        yield pair


async def _put_typing(
    server: LoopbackServer, base: str, user: str, room_id: str, body: dict[str, Any]
) -> None:
    url = f"{base}/_matrix/client/v3/rooms/{room_id}/typing/{user}"
    headers = {"Authorization": f"Bearer {server.tokens[user]}"}
    async with server.http.put(url, json=body, headers=headers) as resp:
        assert resp.status == 200, await resp.text()
        assert await resp.json() == {}


async def _typers(
    server: LoopbackServer, base: str, user: str, room_id: str, since: str
) -> tuple[list[str] | None, str]:
    """The room's m.typing user IDs in `user`'s incremental /sync on the process at
    `base` (None: no m.typing in it), and the next_batch."""
    url = f"{base}/_matrix/client/v3/sync"
    headers = {"Authorization": f"Bearer {server.tokens[user]}"}
    params = {"since": since, "timeout": "500"}
    async with server.http.get(url, headers=headers, params=params) as resp:
        assert resp.status == 200, await resp.text()
        body = await resp.json()
    room = body.get("rooms", {}).get("join", {}).get(room_id, {})
    typing = [e for e in room.get("ephemeral", {}).get("events", []) if e["type"] == "m.typing"]
    return (typing[-1]["content"]["user_ids"] if typing else None), body["next_batch"]


async def _until(
    server: LoopbackServer, base: str, user: str, room_id: str, since: str, want: list[str]
) -> str:
    """Incremental syncs until the room's typing list is `want`; the next_batch."""
    state = {"since": since}

    async def check() -> str | None:
        typers, state["since"] = await _typers(server, base, user, room_id, state["since"])
        return state["since"] if typers == want else None

    return await eventually(check, timeout=20)


async def test_readers_keep_typing_while_the_main_is_down(servers: Any) -> None:
    a, b = servers
    alice, carol, bob, room_id = await room_of_three(a, b)
    reader1, reader2 = (port_url(a.deployment, r) for r in READERS)
    carol_since = (await a.sync(carol))["next_batch"]
    bob_since = (await b.sync(bob))["next_batch"]
    a.deployment.kill("main")
    try:
        await _put_typing(a, reader1, alice, room_id, {"typing": True, "timeout": 4000})
        carol_since = await _until(a, reader2, carol, room_id, carol_since, [alice])
        # Delivered by A's federation sender, woken by the reader (the main is down).
        bob_since = await _until(b, f"http://{b.name}", bob, room_id, bob_since, [alice])
        # Nobody stops it: reader2's own timer ends it.
        carol_since = await _until(a, reader2, carol, room_id, carol_since, [])

        await _put_typing(
            a, f"http://{a.name}", alice, room_id, {"typing": True, "timeout": 30_000}
        )
        carol_since = await _until(a, reader1, carol, room_id, carol_since, [alice])
        await _put_typing(a, reader2, alice, room_id, {"typing": False})
        await _until(a, reader1, carol, room_id, carol_since, [])
        await _until(b, f"http://{b.name}", bob, room_id, bob_since, [])
    finally:
        await asyncio.to_thread(a.deployment.start_process, "main")
