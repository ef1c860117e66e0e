"""Retention purge jobs (Synapse's retention.purge_jobs): the messages a room's policy
expired leave the database, state events and the room's latest event stay, and the room
goes on working. Runs are driven with a `now_ms` (the cut is by when this server
received events); what users see afterwards is read through the client API. Both
backends."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from homeserver import retention_purge
from homeserver.app import create_app
from homeserver.appstate import STORES
from homeserver.config.retention import PurgeJob
from homeserver.retention_purge import RETENTION_PURGE
from tests import deployment_mode
from tests.client.helpers import auth, register_user
from tests.client.test_retention_policies import DAY_MS, HOUR_MS, new_room, send, set_policy

C = "/_matrix/client/v3"
EVERY_ROOM = PurgeJob(DAY_MS)


def now_ms() -> int:
    return int(time.time() * 1000)


async def stored(client: TestClient, room: str) -> dict[str, str]:
    """event ID -> type of what the database holds of the room."""
    db = client.app[STORES].events.db
    rows = await db.fetch("SELECT event_id, type FROM events WHERE room_id = $1", room)
    return {r[0]: r[1] for r in rows}


async def test_a_purge_deletes_expired_messages_and_keeps_state_and_the_latest(
    database_settings: dict[str, Any], aiohttp_client: Any, tmp_config: Any
) -> None:
    client = await aiohttp_client(
        create_app(tmp_config(retention={"enabled": True}, **database_settings))
    )
    token = (await register_user(client, "alice"))["access_token"]
    room = await new_room(client, token, name="Short-lived")
    assert (await set_policy(client, token, room, {"max_lifetime": DAY_MS})).status == 200
    first = [await send(client, token, room, f"old {i}") for i in range(3)]
    latest = await send(client, token, room, "the latest")
    untouched = await new_room(client, token)  # no policy, no default: kept forever
    kept = await send(client, token, untouched, "forever")
    jobs = client.app[RETENTION_PURGE]

    run = await jobs.run(EVERY_ROOM, now_ms=now_ms())  # nothing is a day old yet
    assert run.events_deleted == 0 and set(first) <= set(await stored(client, room))

    run = await jobs.run(EVERY_ROOM, now_ms=now_ms() + 2 * DAY_MS)
    assert run.events_deleted == 3 and run.rooms_purged == 1
    left = await stored(client, room)
    assert not set(first) & set(left)
    assert left[latest] == "m.room.message"  # the room's forward extremity stays
    assert {"m.room.create", "m.room.name", "m.room.retention", "m.room.member"} <= set(
        left.values()
    )
    assert kept in await stored(client, untouched)

    # The room goes on: new messages are sent and read as before.
    fresh = await send(client, token, room, "after the purge")
    resp = await client.get(f"{C}/rooms/{room}/messages?dir=b&limit=50", headers=auth(token))
    chunk = (await resp.json())["chunk"]
    assert [e["content"]["body"] for e in chunk if e["type"] == "m.room.message"] == [
        "after the purge",
        "the latest",
    ]
    resp = await client.get(f"{C}/rooms/{room}/event/{first[0]}", headers=auth(token))
    assert resp.status == 404
    resp = await client.get(f"{C}/sync?timeout=0", headers=auth(token))
    timeline = (await resp.json())["rooms"]["join"][room]["timeline"]["events"]
    assert fresh in [e["event_id"] for e in timeline]


async def test_jobs_pick_rooms_by_max_lifetime_and_the_default_policy(
    aiohttp_client: Any, tmp_config: Any
) -> None:
    client = await aiohttp_client(
        create_app(
            tmp_config(
                retention={
                    "enabled": True,
                    "default_policy": {"max_lifetime": "2d"},
                    "purge_jobs": [
                        {"longest_max_lifetime": "3d", "interval": "12h"},
                        {"shortest_max_lifetime": "3d", "interval": "1d"},
                    ],
                }
            )
        )
    )
    token = (await register_user(client, "alice"))["access_token"]
    rooms = [await new_room(client, token) for _ in range(3)]
    short, plain, long = rooms
    assert (await set_policy(client, token, short, {"max_lifetime": HOUR_MS})).status == 200
    assert (await set_policy(client, token, long, {"max_lifetime": 7 * DAY_MS})).status == 200
    said = {room: [await send(client, token, room, "x") for _ in range(2)] for room in rooms}
    jobs = client.app[RETENTION_PURGE]
    short_job, long_job = jobs.settings.purge_jobs

    # A month on: the short job handles the 1h room and the rooms under the 2d default;
    # the long job only the 1w room.
    month = now_ms() + 30 * DAY_MS
    run = await jobs.run(short_job, now_ms=month)
    assert run.rooms_purged == 2 and run.events_deleted == 2
    assert said[short][0] not in await stored(client, short)
    assert said[plain][0] not in await stored(client, plain)
    assert said[long][0] in await stored(client, long)
    run = await jobs.run(long_job, now_ms=month)
    assert run.rooms_purged == 1 and said[long][0] not in await stored(client, long)


async def test_allowed_lifetime_min_holds_back_the_purge(
    aiohttp_client: Any, tmp_config: Any
) -> None:
    """A room asking for an hour on a server that must keep a day: the purge waits for
    the day (users stopped seeing the messages after the hour)."""
    client = await aiohttp_client(
        create_app(tmp_config(retention={"enabled": True, "allowed_lifetime_min": "1d"}))
    )
    token = (await register_user(client, "alice"))["access_token"]
    room = await new_room(client, token)
    assert (await set_policy(client, token, room, {"max_lifetime": HOUR_MS})).status == 200
    old = await send(client, token, room, "old")
    await send(client, token, room, "latest")
    jobs = client.app[RETENTION_PURGE]
    assert (await jobs.run(EVERY_ROOM, now_ms=now_ms() + 2 * HOUR_MS)).events_deleted == 0
    assert old in await stored(client, room)
    assert (await jobs.run(EVERY_ROOM, now_ms=now_ms() + 2 * DAY_MS)).events_deleted == 1
    assert old not in await stored(client, room)


async def test_a_run_stops_at_its_bound_and_the_next_carries_on(
    aiohttp_client: Any, tmp_config: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(retention_purge, "BATCH_EVENTS", 2)
    monkeypatch.setattr(retention_purge, "MAX_EVENTS_PER_RUN", 3)
    client = await aiohttp_client(
        create_app(
            tmp_config(retention={"enabled": True, "default_policy": {"max_lifetime": "1d"}})
        )
    )
    token = (await register_user(client, "alice"))["access_token"]
    room = await new_room(client, token)
    messages = [await send(client, token, room, f"m{i}") for i in range(6)]
    jobs = client.app[RETENTION_PURGE]
    later = now_ms() + 2 * DAY_MS
    first = await jobs.run(EVERY_ROOM, now_ms=later)
    assert first.events_deleted == 3 and first.stopped_at_bound
    assert len(set(messages) & set(await stored(client, room))) == 3
    second = await jobs.run(EVERY_ROOM, now_ms=later)
    assert second.events_deleted == 2 and not second.stopped_at_bound
    assert set(messages) & set(await stored(client, room)) == {messages[-1]}
    assert (await jobs.run(EVERY_ROOM, now_ms=later)).events_deleted == 0


@pytest.mark.skipif(bool(deployment_mode.MODE), reason="counts the tasks of an in-process server")
@pytest.mark.parametrize(("enabled", "expected"), [(True, 2), (False, 0)])
async def test_the_main_process_runs_one_task_per_job_when_enabled(
    aiohttp_client: Any, tmp_config: Any, enabled: bool, expected: int
) -> None:
    jobs = [{"interval": "1h", "longest_max_lifetime": "1d"}, {"interval": "1d"}]
    await aiohttp_client(create_app(tmp_config(retention={"enabled": enabled, "purge_jobs": jobs})))
    names = [t.get_name() for t in asyncio.all_tasks()]
    assert names.count("retention purge") == expected
