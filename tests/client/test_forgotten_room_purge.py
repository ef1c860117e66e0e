"""forgotten_room_retention_period (Synapse's): a room every local user forgot is
deleted from the database after the period, on both backends; a room someone still
remembers (or is still in) is kept."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest

from homeserver.app import create_app
from homeserver.appstate import STORES
from homeserver.rooms import forgotten_purge
from homeserver.rooms.forgotten_purge import ForgottenRoomPurge
from tests import deployment_mode
from tests.client.helpers import auth, register_user

C = "/_matrix/client/v3"
DAY_MS = 24 * 3600 * 1000


async def _room(client: Any, owner: str, *members: str) -> str:
    resp = await client.post(f"{C}/createRoom", json={"preset": "public_chat"}, headers=auth(owner))
    room = (await resp.json())["room_id"]
    for m in members:
        await client.post(f"{C}/join/{room}", json={}, headers=auth(m))
    await client.put(
        f"{C}/rooms/{room}/send/m.room.message/{uuid.uuid4().hex}",
        json={"msgtype": "m.text", "body": "something said"},
        headers=auth(owner),
    )
    return room


async def _leave_and_forget(client: Any, token: str, room: str) -> None:
    await client.post(f"{C}/rooms/{room}/leave", json={}, headers=auth(token))
    resp = await client.post(f"{C}/rooms/{room}/forget", json={}, headers=auth(token))
    assert resp.status == 200


@pytest.mark.skipif(
    bool(deployment_mode.MODE),
    reason="shortens the purge job's interval in this process; a deployment's is its own",
)
async def test_rooms_everyone_forgot_are_purged_after_the_period(
    database_settings: dict[str, Any],
    aiohttp_client: Any,
    tmp_config: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client = await aiohttp_client(create_app(tmp_config(**database_settings)))
    alice = (await register_user(client, "alice"))["access_token"]
    bob = (await register_user(client, "bob"))["access_token"]
    gone = await _room(client, alice, bob)
    remembered = await _room(client, alice, bob)
    still_in = await _room(client, alice, bob)
    for token in (alice, bob):
        await _leave_and_forget(client, token, gone)
    await _leave_and_forget(client, alice, remembered)
    await client.post(f"{C}/rooms/{remembered}/leave", json={}, headers=auth(bob))  # no forget
    await _leave_and_forget(client, bob, still_in)  # alice is still joined

    db = client.app[STORES].events.db
    due = ForgottenRoomPurge(db, None, "test.local", 28 * DAY_MS)  # type: ignore[arg-type]
    now = int(time.time() * 1000)
    assert await due.due_rooms(now) == []  # not yet
    assert await due.due_rooms(now + 29 * DAY_MS) == [gone]
    count = "SELECT COUNT(*) FROM events WHERE room_id = $1"
    assert await db.fetchval(count, gone) > 0
    await client.close()

    # The server with the setting (a millisecond, checked every 0.2 s) purges it.
    monkeypatch.setattr(forgotten_purge, "RUN_INTERVAL_S", 0.2)
    client = await aiohttp_client(
        create_app(tmp_config(**database_settings, forgotten_room_retention_period=1))
    )
    db = client.app[STORES].events.db
    for _ in range(50):
        if await db.fetchval(count, gone) == 0:
            break
        await asyncio.sleep(0.1)
    assert await db.fetchval(count, gone) == 0
    assert await db.fetchval(count, remembered) > 0
    assert await db.fetchval(count, still_in) > 0
    resp = await client.get(f"{C}/joined_rooms", headers=auth(alice))
    assert (await resp.json())["joined_rooms"] == [still_in]
