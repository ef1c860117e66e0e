"""Account data written by the client readers (`stream_writers: {account_data: [...]}`).

A deployment (tests/deployment.py: PostgreSQL, Redis, the main, two client readers,
a federation inbound worker, nginx) whose two readers are named account data
writers. What must hold:
- account data, room account data and tags are written with the main SIGKILLed (a
  reader serves them; before, it forwarded them to the main and answered 502), and
  read back, in GET and in /sync, on either reader;
- the readers and the main writing account data of the same users at once: positions
  stay unique, and each user's incremental /sync delivers every write exactly once
  (none skipped because another process committed it late), on any reader;
- tags of one room changed on the three processes at once: none is lost (each
  change reads and rewrites the room's tags inside the deployment's write lock);
- what a reader writes reaches the other processes' caches: the main refuses an
  invite once the invitee's reader-written setting blocks invites.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import aiohttp
import asyncpg
import pytest

from tests.client.test_workers import Client, port_url, register
from tests.deployment import Deployment, running

READERS = ("client_reader1", "client_reader2")
USERS = 4
WRITES_PER_PROCESS = 12  # per user, on each of the three writing processes


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    with running(
        Path(tmp_path_factory.mktemp("account-data")),
        overrides={"stream_writers": {"account_data": list(READERS)}},
    ) as d:
        yield d


def _account_data_path(user_id: str, data_type: str, room_id: str | None = None) -> str:
    user = quote(user_id, safe="")
    if room_id is None:
        return f"/_matrix/client/v3/user/{user}/account_data/{data_type}"
    return (
        f"/_matrix/client/v3/user/{user}/rooms/{quote(room_id, safe='')}/account_data/{data_type}"
    )


async def test_readers_write_account_data_while_the_main_is_down(
    deployment: Deployment, session: aiohttp.ClientSession
) -> None:
    alice = await register(session, deployment.url)
    room = (await alice.ok("POST", "/_matrix/client/v3/createRoom", {}))["room_id"]
    since = (await alice.ok("GET", "/_matrix/client/v3/sync"))["next_batch"]
    deployment.kill("main")
    try:
        user = quote(alice.user_id, safe="")
        tag = f"/_matrix/client/v3/user/{user}/rooms/{quote(room, safe='')}/tags/u.work"
        for base in [deployment.url, *(port_url(deployment, r) for r in READERS)]:
            await alice.ok(
                "PUT", _account_data_path(alice.user_id, "org.example.a"), {"v": base}, base=base
            )
            await alice.ok(
                "PUT",
                _account_data_path(alice.user_id, "org.example.r", room),
                {"v": base},
                base=base,
            )
            await alice.ok("PUT", tag, {"order": 0.5}, base=base)
            for reader in READERS:  # read back on both readers (from PostgreSQL)
                got = await alice.ok(
                    "GET",
                    _account_data_path(alice.user_id, "org.example.a"),
                    base=port_url(deployment, reader),
                )
                assert got == {"v": base}
        await alice.ok("DELETE", tag)
        # The sync that follows shows the newest of each (the main is still down).
        body = await alice.ok("GET", f"/_matrix/client/v3/sync?since={since}&timeout=0")
        last = port_url(deployment, READERS[-1])
        top = {e["type"]: e["content"] for e in body["account_data"]["events"]}
        assert top["org.example.a"] == {"v": last}
        in_room = {
            e["type"]: e["content"] for e in body["rooms"]["join"][room]["account_data"]["events"]
        }
        assert in_room["org.example.r"] == {"v": last}
        assert in_room["m.tag"] == {"tags": {}}
    finally:
        await asyncio.to_thread(deployment.start_process, "main")
    # The restarted main reads the readers' writes and writes after them.
    main = port_url(deployment, "main")
    await alice.ok(
        "PUT", _account_data_path(alice.user_id, "org.example.a"), {"v": "main"}, base=main
    )
    got = await alice.ok("GET", _account_data_path(alice.user_id, "org.example.a"))
    assert got == {"v": "main"}


async def test_writes_on_every_writer_at_once_are_each_synced_once(
    deployment: Deployment, session: aiohttp.ClientSession
) -> None:
    writers = [port_url(deployment, "main"), *(port_url(deployment, r) for r in READERS)]
    users = [await register(session, deployment.url) for _ in range(USERS)]
    tokens = {
        u.user_id: (await u.ok("GET", "/_matrix/client/v3/sync"))["next_batch"] for u in users
    }
    expected = {
        u.user_id: {
            f"org.example.p{p}.w{i}" for p in range(len(writers)) for i in range(WRITES_PER_PROCESS)
        }
        for u in users
    }
    seen: dict[str, list[str]] = {u.user_id: [] for u in users}
    done = asyncio.Event()

    async def write(user: Client, p: int) -> None:
        for i in range(WRITES_PER_PROCESS):
            path = _account_data_path(user.user_id, f"org.example.p{p}.w{i}")
            await user.ok("PUT", path, {"i": i}, base=writers[p])

    async def follow(user: Client) -> None:
        since = tokens[user.user_id]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            body = await user.ok("GET", f"/_matrix/client/v3/sync?since={since}&timeout=1000")
            since = body["next_batch"]
            seen[user.user_id] += [
                e["type"] for e in body.get("account_data", {}).get("events", [])
            ]
            if done.is_set() and set(seen[user.user_id]) >= expected[user.user_id]:
                break
        # Nothing more arrives afterwards.
        body = await user.ok("GET", f"/_matrix/client/v3/sync?since={since}&timeout=0")
        seen[user.user_id] += [e["type"] for e in body.get("account_data", {}).get("events", [])]

    async def writes() -> None:
        await asyncio.gather(*(write(u, p) for u in users for p in range(len(writers))))
        done.set()

    await asyncio.gather(writes(), *(follow(u) for u in users))
    for user in users:
        mine = seen[user.user_id]
        assert len(mine) == len(set(mine)), f"{user.user_id} got a write twice"
        assert set(mine) == expected[user.user_id], sorted(expected[user.user_id] - set(mine))
    conn = await asyncpg.connect(
        deployment.app_dsn, server_settings={"search_path": deployment.schema}
    )
    try:
        rows, distinct = await conn.fetchrow(
            "SELECT count(*), count(DISTINCT stream_id) FROM account_data"
        )
    finally:
        await conn.close()
    assert rows == distinct and rows >= USERS * len(writers) * WRITES_PER_PROCESS


async def test_tags_of_one_room_from_every_writer_at_once_all_land(
    deployment: Deployment, session: aiohttp.ClientSession
) -> None:
    """A tag change rewrites the room's whole `m.tag` entry: three processes changing
    one room's tags at once must each read what the others committed."""
    writers = [port_url(deployment, "main"), *(port_url(deployment, r) for r in READERS)]
    alice = await register(session, deployment.url)
    room = (await alice.ok("POST", "/_matrix/client/v3/createRoom", {}))["room_id"]
    base = (
        f"/_matrix/client/v3/user/{quote(alice.user_id, safe='')}/rooms/{quote(room, safe='')}/tags"
    )

    async def tag(p: int, i: int) -> None:
        await alice.ok("PUT", f"{base}/u.p{p}.t{i}", {}, base=writers[p])

    await asyncio.gather(*(tag(p, i) for p in range(len(writers)) for i in range(8)))
    got = await alice.ok("GET", base)
    assert set(got["tags"]) == {f"u.p{p}.t{i}" for p in range(len(writers)) for i in range(8)}


async def test_a_readers_write_reaches_what_the_main_cached(
    deployment: Deployment, session: aiohttp.ClientSession
) -> None:
    """The main caches whether a user blocks invites (v1.18); the reader that writes
    the setting tells it (the cache invalidation travels over Redis), so an invite
    sent after the write is refused."""
    alice = await register(session, deployment.url)
    bob = await register(session, deployment.url)
    main = port_url(deployment, "main")
    first = (await bob.ok("POST", "/_matrix/client/v3/createRoom", {}))["room_id"]
    invite = {"user_id": alice.user_id}
    await bob.ok("POST", f"/_matrix/client/v3/rooms/{first}/invite", invite, base=main)
    reader = port_url(deployment, READERS[1])
    setting = _account_data_path(alice.user_id, "m.invite_permission_config")
    await alice.ok("PUT", setting, {"default_action": "block"}, base=reader)
    second = (await bob.ok("POST", "/_matrix/client/v3/createRoom", {}))["room_id"]
    deadline = time.monotonic() + 5
    while True:
        status, body = await bob.call(
            "POST", f"/_matrix/client/v3/rooms/{second}/invite", invite, base=main
        )
        if status != 200 or time.monotonic() > deadline:
            break
        # Allowed while the main had not yet heard (milliseconds): leave, try again.
        await bob.ok("POST", f"/_matrix/client/v3/rooms/{second}/kick", invite, base=main)
        await asyncio.sleep(0.05)
    assert (status, body.get("errcode")) == (403, "M_INVITE_BLOCKED"), (status, body)
