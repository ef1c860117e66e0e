"""Admin list latency: /_synapse/admin/v2/users and /v1/rooms with 10,000 users and
2,000 rooms, pages of 100, on SQLite and (with HS_TEST_POSTGRES_DSN) PostgreSQL.

The data is seeded straight through the stores (fast); every measured request goes
through HTTP to the real app on a loopback socket. Prints the median and p95 of each
query, after one warm-up request (the very first room listing also fills room_stats
for every room; its time is printed separately).

    PYTHONPATH=. python bench/admin_bench.py [--users 10000] [--rooms 2000] [--runs 30]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from homeserver.app import create_app  # noqa: E402
from homeserver.appstate import STORES  # noqa: E402
from homeserver.events import Event, get_room_version  # noqa: E402
from homeserver.storage import PersistItem, Stores  # noqa: E402
from tests.conftest import make_config  # noqa: E402

SERVER = "test.local"
USER_QUERIES = [
    "/v2/users?limit=100",
    "/v2/users?limit=100&from=5000",
    "/v2/users?limit=100&from=9900",
    "/v2/users?limit=100&order_by=displayname",
    "/v2/users?limit=100&order_by=creation_ts&dir=b",
    "/v2/users?limit=100&order_by=last_seen_ts&dir=b",
    "/v2/users?limit=100&name=user12",
    "/v2/users?limit=100&guests=false&deactivated=true",
]
ROOM_QUERIES = [
    "/v1/rooms?limit=100",
    "/v1/rooms?limit=100&from=1900",
    "/v1/rooms?limit=100&order_by=joined_members",
    "/v1/rooms?limit=100&order_by=state_events&dir=b",
    "/v1/rooms?limit=100&search_term=room%2015",
    "/v1/rooms?limit=100&order_by=creator&public_rooms=false",
]


def event(event_id: str, room_id: str, event_type: str, sender: str, **kw: Any) -> Event:
    pdu = {
        "room_id": room_id,
        "type": event_type,
        "sender": sender,
        "content": kw.pop("content", {}),
        "prev_events": [],
        "auth_events": [],
        "depth": 1,
        "origin_server_ts": 1_700_000_000_000,
        "hashes": {"sha256": "aGFzaA"},
        "signatures": {},
    }
    if "state_key" in kw:
        pdu["state_key"] = kw.pop("state_key")
    return Event(pdu, get_room_version("10"), event_id=event_id)


async def seed(stores: Stores, users: int, rooms: int) -> None:
    db = stores.db
    user_ids = [f"@user{i}:{SERVER}" for i in range(users)]
    async with db.transaction() as conn:
        await conn.executemany(
            "INSERT INTO users (user_id, password_hash, created_ts, is_admin, deactivated,"
            " is_guest) VALUES ($1, NULL, $2, FALSE, $3, FALSE)",
            [(u, 1_600_000_000_000 + i * 1000, i % 50 == 0) for i, u in enumerate(user_ids)],
        )
        await conn.executemany(
            "INSERT INTO profiles (user_id, displayname) VALUES ($1, $2)",
            [(u, f"User {users - i}") for i, u in enumerate(user_ids)],
        )
        await conn.executemany(
            "INSERT INTO devices (user_id, device_id, created_ts, last_seen_ts) VALUES"
            " ($1, 'D', 0, $2)",
            [(u, i * 7 % 100_000) for i, u in enumerate(user_ids)],
        )
    for r in range(rooms):
        room_id = f"!room{r}:{SERVER}"
        creator = user_ids[r % users]
        await stores.rooms.store_room(room_id, "10", creator, is_public=r % 3 == 0)
        members = [user_ids[(r * 7 + k) % users] for k in range(2 + r % 20)]
        events = [event(f"$c{r}", room_id, "m.room.create", creator, state_key="")]
        events += [
            event(
                f"$m{r}_{k}",
                room_id,
                "m.room.member",
                u,
                state_key=u,
                content={"membership": "join"},
            )
            for k, u in enumerate(members)
        ]
        events.append(
            event(
                f"$n{r}",
                room_id,
                "m.room.name",
                creator,
                state_key="",
                content={"name": f"Room {r}"},
            )
        )
        delta = {(e.type, e.state_key): e.event_id for e in events}
        group = await stores.state.store_state_group(room_id, None, {}, delta)
        await stores.events.persist_events(
            room_id,
            [PersistItem(e, state_group=group) for e in events],
            new_extremities=[events[-1].event_id],
            current_state_delta=([], delta),
        )


async def timed(session: aiohttp.ClientSession, url: str, token: str) -> float:
    started = time.perf_counter()
    async with session.get(url, headers={"Authorization": f"Bearer {token}"}) as resp:
        body = await resp.json()
        assert resp.status == 200, body
    return (time.perf_counter() - started) * 1000


async def run(label: str, database: dict[str, Any] | None, args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp())
    overrides: dict[str, Any] = {"log_level": "WARNING"}
    if database is not None:
        overrides["database"] = database
    app = create_app(make_config(tmp, **overrides))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    base = f"http://127.0.0.1:{port}/_synapse/admin"
    try:
        stores = app[STORES]
        started = time.perf_counter()
        await seed(stores, args.users, args.rooms)
        await stores.accounts.create_user("@admin:test.local", None, is_admin=True)
        token = "bench_" + uuid.uuid4().hex
        await stores.accounts.add_access_token(token, "@admin:test.local", None)
        print(
            f"\n{label}: seeded {args.users} users, {args.rooms} rooms in "
            f"{time.perf_counter() - started:.1f}s"
        )
        async with aiohttp.ClientSession() as session:
            first = await timed(session, f"{base}/v1/rooms?limit=100", token)
            print(f"  first /v1/rooms (fills room_stats for {args.rooms} rooms): {first:.0f} ms")
            for query in USER_QUERIES + ROOM_QUERIES:
                await timed(session, base + query, token)
                times = sorted(
                    [await timed(session, base + query, token) for _ in range(args.runs)]
                )
                p95 = times[min(len(times) - 1, int(len(times) * 0.95))]
                print(f"  {query:55s} median {statistics.median(times):6.1f} ms  p95 {p95:6.1f} ms")
    finally:
        await runner.cleanup()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--rooms", type=int, default=2_000)
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    await run("SQLite", None, args)
    dsn = os.environ.get("HS_TEST_POSTGRES_DSN")
    if dsn:
        schema = f"bench_{uuid.uuid4().hex[:12]}"
        try:
            await run(
                "PostgreSQL", {"name": "psycopg2", "args": {"dsn": dsn, "schema": schema}}, args
            )
        finally:
            import asyncpg

            conn = await asyncpg.connect(dsn)
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            await conn.close()


if __name__ == "__main__":
    asyncio.run(main())
