"""Presence written by a client reader (`stream_writers: {presence: [client_reader1]}`),
so presence works while the main process is down (issue 16).

Server A is the README's seven-process deployment behind nginx (tests/deployment.py
FULL_LAYOUT) with its first client reader writing presence; server B is one process
on loopback, federating with it. Presence has one writer (its idle and offline timers
and its positions live in that process's memory): every other process hands it what
it sees (syncs, messages sent, a user's own change, other servers' updates) over its
replication listener.

With A's main SIGKILLed (before: presence changes answered 502 and other servers'
presence was dropped):
- a user sets their presence through nginx, on either reader: it is read back at
  once, the other local member of the room sees it in /sync and with GET, and the
  remote member on B gets it (the writer queues the EDU in the durable outbox; A's
  federation sender delivers it);
- B's user sets theirs: A's federation inbound worker hands the EDU to the writer,
  and A's user sees it;
- a sync with `set_presence=unavailable` on the reader that does not write presence
  changes the syncing user's presence (reported to the writer).
A stranger who reaches a process's listeners cannot forge presence: the writer's
replication listener wants the deployment's secret, and a reader's public listener
never hands a `/_replication/` request on (before: it forwarded it to the main with
the secret, so anyone reaching a reader could set any user's presence, or hand the
main PDUs as if a federation inbound worker had checked them).
Twelve users changing their presence at once through both readers are all seen by
an incremental /sync and by each reader. With the presence writer SIGKILLed instead: a presence change answers 502 M_UNKNOWN
(nothing is half done), syncs and messages go on; restarted, it writes again.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest

from tests.client.test_workers import port_url
from tests.federation.multiserver import (
    LoopbackServer,
    eventually,
    room_of_three,
    writers_and_peer,
)

WRITER, OTHER_READER = "client_reader1", "client_reader2"


@pytest.fixture
async def servers(tmp_path: Path) -> AsyncIterator[tuple[LoopbackServer, LoopbackServer]]:
    async with writers_and_peer(tmp_path, {"presence": [WRITER]}) as pair:
        yield pair


def _presence(body: dict[str, Any], user: str) -> dict[str, Any] | None:
    """The newest presence content of `user` in a /sync answer."""
    found = None
    for event in body.get("presence", {}).get("events", []):
        if event.get("sender") == user:
            found = event["content"]
    return found


async def _seen(server: LoopbackServer, viewer: str, user: str, **expected: Any) -> bool:
    body = await server.ok("GET", "/sync", viewer, timeout="0")
    content = _presence(body, user) or {}
    return all(content.get(k) == v for k, v in expected.items())


async def _call_on(
    http: aiohttp.ClientSession, base: str, token: str, method: str, path: str, body: Any = None
) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"}
    url = f"{base}/_matrix/client/v3{path}"
    async with http.request(method, url, json=body, headers=headers) as resp:
        return resp.status, await resp.json(content_type=None)


async def test_a_reader_writes_presence_while_the_main_is_down(servers: Any) -> None:
    a, b = servers
    alice, carol, bob, _room = await room_of_three(a, b)
    readers = {name: port_url(a.deployment, name) for name in (WRITER, OTHER_READER)}
    a.deployment.kill("main")
    try:
        status = f"/presence/{quote(alice)}/status"
        await a.ok("PUT", status, alice, {"presence": "unavailable", "status_msg": "lunch"})
        mine = await a.ok("GET", status, alice)
        assert (mine["presence"], mine["status_msg"]) == ("unavailable", "lunch")
        for base in readers.values():  # set through either reader: read back at once
            update = {"presence": "online", "status_msg": f"via {base[-5:]}"}
            code, _ = await _call_on(a.http, base, a.tokens[alice], "PUT", status, update)
            assert code == 200
            code, read = await _call_on(a.http, base, a.tokens[alice], "GET", status)
            assert (code, read["status_msg"]) == (200, f"via {base[-5:]}")
        last = f"via {readers[OTHER_READER][-5:]}"
        assert await eventually(lambda: _seen(a, carol, alice, status_msg=last))
        seen = await a.ok("GET", status, carol)
        assert (seen["presence"], seen["status_msg"]) == ("online", last)
        assert await eventually(lambda: _seen(b, bob, alice, status_msg=last), timeout=30)

        # B's user: the inbound worker hands the EDU to the presence writer.
        bob_status = f"/presence/{quote(bob)}/status"
        await b.ok("PUT", bob_status, bob, {"presence": "online", "status_msg": "from B"})
        assert await eventually(
            lambda: _seen(a, carol, bob, status_msg="from B", presence="online"), timeout=30
        )

        # A sync on the reader that does not write presence moves carol's.
        code, _ = await _call_on(
            a.http,
            readers[OTHER_READER],
            a.tokens[carol],
            "GET",
            "/sync?timeout=0&set_presence=unavailable",
        )
        assert code == 200
        assert await eventually(lambda: _seen(a, alice, carol, presence="unavailable"))
        await a.ok("PUT", f"/presence/{quote(carol)}/status", carol, {"presence": "online"})
        assert await eventually(lambda: _seen(a, alice, carol, presence="online"))
    finally:
        await asyncio.to_thread(a.deployment.start_process, "main")

    # A stranger at a reader's public listener or the writer's replication listener.
    forged = {"user_id": alice, "set": "offline", "status_msg": "forged"}
    for url, expected in (
        (readers[OTHER_READER], (404, "M_UNRECOGNIZED")),
        (readers[WRITER], (404, "M_UNRECOGNIZED")),
        (a.deployment.instance_url(WRITER), (403, "M_FORBIDDEN")),
    ):
        for path, body in (
            ("/_replication/presence", forged),
            ("/_replication/federation/events", {"origin": b.name, "pdus": []}),
        ):
            async with a.http.post(url + path, json=body) as resp:
                answer = await resp.json(content_type=None)
                assert (resp.status, answer.get("errcode")) == expected, (url, path, answer)
    assert (await a.ok("GET", status, carol)).get("status_msg") != "forged"

    # The presence writer down: a change is refused cleanly, the rest goes on.
    a.deployment.kill(WRITER)
    try:
        token = a.tokens[alice]
        code, body = await _call_on(
            a.http, readers[OTHER_READER], token, "PUT", status, {"presence": "online"}
        )
        assert (code, body["errcode"]) == (502, "M_UNKNOWN")
        code, _ = await _call_on(a.http, readers[OTHER_READER], token, "GET", "/sync?timeout=0")
        assert code == 200
    finally:
        await asyncio.to_thread(a.deployment.start_process, WRITER)
    await a.ok("PUT", status, alice, {"presence": "online", "status_msg": "writer back"})
    assert await eventually(lambda: _seen(a, carol, alice, status_msg="writer back"))


async def test_concurrent_presence_changes_through_both_readers_are_all_seen(
    servers: Any,
) -> None:
    """Twelve users change their presence at once, half through each reader, with the
    main down: the writer numbers every change, so an incremental /sync from a token
    taken before the burst shows each user's final status (none skipped), and every
    reader answers GET /presence with it."""
    a, _ = servers
    alice = await a.register("alice")
    room_id = await a.create_room(alice)
    users = [await a.register(f"user{i}") for i in range(12)]
    for user in users:
        await a.join(user, room_id, [a.name])
    since = (await a.ok("GET", "/sync", alice, timeout="0"))["next_batch"]
    readers = [port_url(a.deployment, name) for name in (WRITER, OTHER_READER)]
    a.deployment.kill("main")
    try:

        async def change(i: int, user: str) -> None:
            path = f"/presence/{quote(user)}/status"
            update = {"presence": "unavailable", "status_msg": f"busy {i}"}
            code, body = await _call_on(a.http, readers[i % 2], a.tokens[user], "PUT", path, update)
            assert code == 200, body

        await asyncio.gather(*(change(i, u) for i, u in enumerate(users)))
        wanted = {u: f"busy {i}" for i, u in enumerate(users)}

        async def all_seen() -> bool:
            body = await a.ok("GET", "/sync", alice, since=since, timeout="0")
            return all(
                (_presence(body, u) or {}).get("status_msg") == msg for u, msg in wanted.items()
            )

        assert await eventually(all_seen)

        async def reader_shows_all(base: str) -> bool:
            for user, msg in wanted.items():
                path = f"/presence/{quote(user)}/status"
                code, body = await _call_on(a.http, base, a.tokens[alice], "GET", path)
                if (code, body.get("status_msg")) != (200, msg):
                    return False
            return True

        for base in readers:  # the bus reaches the other reader a moment later
            assert await eventually(lambda base=base: reader_shows_all(base)), base
    finally:
        await asyncio.to_thread(a.deployment.start_process, "main")
