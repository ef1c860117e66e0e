"""To-device messages written by the client readers (`stream_writers: {to_device: [...]}`).

Server A is the README's seven-process deployment behind nginx (tests/deployment.py
FULL_LAYOUT) whose two client readers are named to-device writers; server B is one
process on loopback, federating with A. What must hold:
- with A's main SIGKILLed, /sendToDevice still works (a reader serves it; before, it
  forwarded it to the main and answered 502): the local recipient's /sync delivers the
  message, and the remote one's server receives it (the reader queues the EDU in the
  durable outbox and wakes A's federation sender over the bus);
- the main and both readers sending at once: each local and each remote recipient
  gets every message exactly once, and each sender's messages in the order it sent
  them (positions are allocated under the deployment's write lock, so a sync token
  never skips a message another process committed late).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.client.test_workers import port_url
from tests.federation.multiserver import READERS, LoopbackServer, eventually, writers_and_peer

CHAINS_PER_PROCESS = 4  # concurrent senders on each process
MESSAGES_PER_CHAIN = 8  # each chain sends one after the other
TYPE = "org.example.ping"


@pytest.fixture
async def servers(tmp_path: Path) -> AsyncIterator[tuple[LoopbackServer, LoopbackServer]]:
    async with writers_and_peer(tmp_path, {"to_device": READERS}) as pair:
        yield pair


async def _send(
    http: aiohttp.ClientSession, base: str, token: str, messages: dict[str, Any]
) -> tuple[int, Any]:
    url = f"{base}/_matrix/client/v3/sendToDevice/{TYPE}/{uuid.uuid4().hex}"
    headers = {"Authorization": f"Bearer {token}"}
    async with http.put(url, json={"messages": messages}, headers=headers) as resp:
        return resp.status, await resp.json(content_type=None)


async def _to_device(server: LoopbackServer, user: str, since: str | None) -> tuple[list, str]:
    params = {"timeout": "0", **({"since": since} if since else {})}
    body = await server.ok("GET", "/sync", user, **params)
    events = [e for e in body.get("to_device", {}).get("events", []) if e["type"] == TYPE]
    return events, body["next_batch"]


async def test_readers_send_to_device_while_the_main_is_down(servers: Any) -> None:
    a, b = servers
    alice, carol, bob = (
        await a.register("alice"),
        await a.register("carol"),
        await b.register("bob"),
    )
    _, carol_since = await _to_device(a, carol, None)
    _, bob_since = await _to_device(b, bob, None)
    a.deployment.kill("main")
    try:
        for i, base in enumerate(
            [f"http://{a.name}", *(port_url(a.deployment, r) for r in READERS)]
        ):
            content = {"n": i}
            status, body = await _send(
                a.http, base, a.tokens[alice], {carol: {"*": content}, bob: {"*": content}}
            )
            assert (status, body) == (200, {}), base

        async def carol_has() -> list | None:
            events, _ = await _to_device(a, carol, carol_since)
            return events if len(events) >= 3 else None

        events = await eventually(carol_has, timeout=15)
        assert [(e["sender"], e["content"]) for e in events] == [
            (alice, {"n": i}) for i in range(3)
        ]

        async def bob_has() -> list | None:
            events, _ = await _to_device(b, bob, bob_since)
            return events if len(events) >= 3 else None

        # Delivered by A's federation sender, woken by the readers (the main is down).
        events = await eventually(bob_has, timeout=30)
        assert sorted(e["content"]["n"] for e in events) == [0, 1, 2]
        assert {e["sender"] for e in events} == {alice}
    finally:
        await asyncio.to_thread(a.deployment.start_process, "main")


async def test_every_writer_at_once_each_message_once_and_in_order(servers: Any) -> None:
    a, b = servers
    alice, carol, bob = (
        await a.register("alice"),
        await a.register("carol"),
        await b.register("bob"),
    )
    writers = [port_url(a.deployment, "main"), *(port_url(a.deployment, r) for r in READERS)]
    chains = [(p, c) for p in range(len(writers)) for c in range(CHAINS_PER_PROCESS)]
    expected = {(p, c, i) for p, c in chains for i in range(MESSAGES_PER_CHAIN)}
    seen: dict[str, list[tuple[int, int, int]]] = {carol: [], bob: []}
    done = asyncio.Event()

    async def send_from(p: int, c: int) -> None:
        for i in range(MESSAGES_PER_CHAIN):
            content = {"p": p, "c": c, "i": i}
            status, body = await _send(
                a.http, writers[p], a.tokens[alice], {carol: {"*": content}, bob: {"*": content}}
            )
            assert status == 200, body

    async def follow(server: LoopbackServer, user: str, since: str) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            body = await server.ok("GET", "/sync", user, since=since, timeout="1000")
            since = body["next_batch"]
            seen[user] += [
                (e["content"]["p"], e["content"]["c"], e["content"]["i"])
                for e in body.get("to_device", {}).get("events", [])
                if e["type"] == TYPE
            ]
            if done.is_set() and set(seen[user]) >= expected:
                break
        events, _ = await _to_device(server, user, since)  # nothing more afterwards
        seen[user] += [(e["content"]["p"], e["content"]["c"], e["content"]["i"]) for e in events]

    followers = [
        asyncio.create_task(follow(a, carol, (await _to_device(a, carol, None))[1])),
        asyncio.create_task(follow(b, bob, (await _to_device(b, bob, None))[1])),
    ]
    await asyncio.gather(*(send_from(p, c) for p, c in chains))
    done.set()
    await asyncio.gather(*followers)
    for user in (carol, bob):
        got = seen[user]
        assert len(got) == len(set(got)), f"{user} got a message twice"
        assert set(got) == expected, sorted(expected - set(got))
        if user == carol:  # one server's stream: each chain's messages in order
            for p, c in chains:
                in_chain = [i for q, d, i in got if (q, d) == (p, c)]
                assert in_chain == list(range(MESSAGES_PER_CHAIN)), (p, c)
