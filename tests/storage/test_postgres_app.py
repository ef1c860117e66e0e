"""The whole app on PostgreSQL: the client flows a user hits first, end to end.

The store contract tests cover each store; this catches what only the app's real call
patterns reach (argument types, booleans, SUMs, RETURNING) on the asyncpg backend.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from homeserver.app import create_app
from tests.client.helpers import auth, register_user
from tests.conftest import make_config

from .conftest import POSTGRES_SKIP_REASON, drop_postgres_schema, postgres_test_config

C = "/_matrix/client/v3"


@pytest.fixture
async def pg_client(aiohttp_client: Any, tmp_path: Path) -> AsyncIterator[TestClient]:
    db = postgres_test_config()
    if db is None:
        pytest.skip(POSTGRES_SKIP_REASON)
    config = make_config(tmp_path, database=db)
    assert config.database.name == "psycopg2"
    try:
        yield await aiohttp_client(create_app(config))
    finally:
        await drop_postgres_schema(db)


async def _ok(response: Any) -> Any:
    assert response.status == 200, await response.text()
    return await response.json()


async def test_register_create_send_sync_messages(pg_client: TestClient) -> None:
    c = pg_client
    alice = await register_user(c, "alice")
    bob = await register_user(c, "bob")
    assert alice["user_id"] == "@alice:test.local"
    a, b = auth(alice["access_token"]), auth(bob["access_token"])

    await _ok(
        await c.put(
            f"{C}/profile/@alice:test.local/displayname", json={"displayname": "Al"}, headers=a
        )
    )
    room = await _ok(
        await c.post(
            f"{C}/createRoom",
            json={"preset": "public_chat", "name": "pg", "room_alias_name": "pg"},
            headers=a,
        )
    )
    room_id = room["room_id"]
    resolved = await _ok(await c.get(f"{C}/directory/room/%23pg:test.local"))
    assert resolved["room_id"] == room_id
    await _ok(await c.post(f"{C}/join/{room_id}", json={}, headers=b))

    initial = await _ok(await c.get(f"{C}/sync", headers=b))
    since = initial["next_batch"]
    assert room_id in initial["rooms"]["join"]

    event_ids = []
    for i in range(3):
        sent = await _ok(
            await c.put(
                f"{C}/rooms/{room_id}/send/m.room.message/txn{i}",
                json={"msgtype": "m.text", "body": f"hello {i}"},
                headers=a,
            )
        )
        event_ids.append(sent["event_id"])
    # The same transaction ID is idempotent.
    again = await _ok(
        await c.put(
            f"{C}/rooms/{room_id}/send/m.room.message/txn0",
            json={"msgtype": "m.text", "body": "hello 0"},
            headers=a,
        )
    )
    assert again["event_id"] == event_ids[0]

    synced = await _ok(await c.get(f"{C}/sync", params={"since": since}, headers=b))
    timeline = synced["rooms"]["join"][room_id]["timeline"]["events"]
    bodies = [e["content"].get("body") for e in timeline if e["type"] == "m.room.message"]
    assert bodies == ["hello 0", "hello 1", "hello 2"]
    assert synced["rooms"]["join"][room_id]["unread_notifications"]["notification_count"] == 3

    receipt = f"{C}/rooms/{room_id}/receipt/m.read/{event_ids[-1]}"
    await _ok(await c.post(receipt, json={}, headers=b))
    after = await _ok(await c.get(f"{C}/sync", params={"since": synced["next_batch"]}, headers=b))
    joined = after["rooms"]["join"][room_id]
    assert joined["unread_notifications"]["notification_count"] == 0

    page = await _ok(
        await c.get(f"{C}/rooms/{room_id}/messages", params={"dir": "b", "limit": "2"}, headers=b)
    )
    assert [e["event_id"] for e in page["chunk"]] == [event_ids[2], event_ids[1]]
    rest = await _ok(
        await c.get(
            f"{C}/rooms/{room_id}/messages",
            params={"dir": "b", "limit": "50", "from": page["end"]},
            headers=b,
        )
    )
    types = [e["type"] for e in rest["chunk"]]
    assert rest["chunk"][0]["event_id"] == event_ids[0]
    assert types[-1] == "m.room.create"

    members = await _ok(await c.get(f"{C}/rooms/{room_id}/joined_members", headers=a))
    assert members["joined"]["@alice:test.local"]["display_name"] == "Al"
    assert set(members["joined"]) == {"@alice:test.local", "@bob:test.local"}
