"""Message retention policies (MSC1763, Synapse's `retention:` section), as users see
them through the client API: what m.room.retention may say, and that a room's expired
messages are no longer served (/messages, /sync, /event, /context) even before a purge
job deletes them. Time moves by patching the clock the expiry reads. Both backends.
The purge jobs themselves: test_retention_purge_jobs.py."""

from __future__ import annotations

import time
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from homeserver.app import create_app
from homeserver.appstate import LOCAL_EVENTS
from homeserver.storage import room_retention
from tests import deployment_mode
from tests.client.helpers import auth, register_user
from tests.client.helpers import create_room as new_room
from tests.client.helpers import send_text as send

C = "/_matrix/client/v3"
SLIDING = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync"
HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS


async def set_policy(client: TestClient, token: str, room: str, content: dict) -> Any:
    return await client.put(
        f"{C}/rooms/{room}/state/m.room.retention/", json=content, headers=auth(token)
    )


async def message_bodies(client: TestClient, token: str, room: str) -> list[str]:
    resp = await client.get(f"{C}/rooms/{room}/messages?dir=b&limit=50", headers=auth(token))
    assert resp.status == 200, await resp.text()
    chunk = (await resp.json())["chunk"]
    return [e["content"]["body"] for e in chunk if e["type"] == "m.room.message"]


async def sync_timeline(client: TestClient, token: str, room: str) -> list[dict]:
    resp = await client.get(f"{C}/sync?timeout=0", headers=auth(token))
    assert resp.status == 200, await resp.text()
    return (await resp.json())["rooms"]["join"][room]["timeline"]["events"]


async def send_at(client: TestClient, token: str, room: str, body: str, shift_ms: int) -> str:
    """Send with the server's clock shifted by `shift_ms` (the event's origin_server_ts)."""
    _in_process_clock()
    local_events = client.app[LOCAL_EVENTS]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(local_events, "now_ms", lambda: int(time.time() * 1000) + shift_ms)
        return await send(client, token, room, body)


def _in_process_clock() -> None:
    if deployment_mode.MODE:
        pytest.skip("moves the server's clock, which a deployment's processes keep their own")


def later(monkeypatch: pytest.MonkeyPatch, ms: int) -> None:
    """Every expiry check from now on happens `ms` later than the real clock."""
    _in_process_clock()
    real = room_retention.clock_ms
    monkeypatch.setattr(room_retention, "clock_ms", lambda: real() + ms)


async def alice_client(aiohttp_client: Any, tmp_config: Any, **settings: Any) -> Any:
    client = await aiohttp_client(create_app(tmp_config(**settings)))
    alice = await register_user(client, "alice")
    return client, alice["access_token"]


# -- the m.room.retention event -----------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "errcode", "says"),
    [
        ({"max_lifetime": "1d"}, "M_BAD_JSON", "'max_lifetime' must be an integer"),
        ({"min_lifetime": [1]}, "M_BAD_JSON", "'min_lifetime' must be an integer"),
        ({"max_lifetime": True}, "M_BAD_JSON", "'max_lifetime' must be an integer"),
        ({"min_lifetime": 2 * DAY_MS, "max_lifetime": DAY_MS}, "M_BAD_JSON", "greater"),
    ],
)
async def test_a_malformed_policy_is_refused(
    aiohttp_client: Any, tmp_config: Any, content: dict, errcode: str, says: str
) -> None:
    # Checked whether or not the server enables retention (as Synapse: other servers
    # in the room may).
    client, token = await alice_client(aiohttp_client, tmp_config)
    room = await new_room(client, token)
    resp = await set_policy(client, token, room, content)
    assert resp.status == 400
    body = await resp.json()
    assert body["errcode"] == errcode and says in body["error"]
    resp = await client.get(f"{C}/rooms/{room}/state/m.room.retention/", headers=auth(token))
    assert resp.status == 404  # nothing was stored

    # The same content in createRoom's initial_state: refused before any room is made.
    resp = await client.post(
        f"{C}/createRoom",
        json={"initial_state": [{"type": "m.room.retention", "content": content}]},
        headers=auth(token),
    )
    assert resp.status == 400 and (await resp.json())["errcode"] == errcode
    resp = await client.get(f"{C}/joined_rooms", headers=auth(token))
    assert (await resp.json())["joined_rooms"] == [room]


async def test_a_policy_must_be_state(aiohttp_client: Any, tmp_config: Any) -> None:
    client, token = await alice_client(aiohttp_client, tmp_config)
    room = await new_room(client, token)
    resp = await client.put(
        f"{C}/rooms/{room}/send/m.room.retention/t1",
        json={"max_lifetime": DAY_MS},
        headers=auth(token),
    )
    assert resp.status == 400
    assert "state event" in (await resp.json())["error"]


async def test_a_policy_outside_the_allowed_range_is_accepted(
    aiohttp_client: Any, tmp_config: Any
) -> None:
    """As Synapse: the server brings it within the range when it applies it."""
    client, token = await alice_client(
        aiohttp_client,
        tmp_config,
        retention={"enabled": True, "allowed_lifetime_min": "1d", "allowed_lifetime_max": "1w"},
    )
    room = await new_room(
        client,
        token,
        initial_state=[{"type": "m.room.retention", "content": {"max_lifetime": HOUR_MS}}],
    )
    resp = await set_policy(client, token, room, {"min_lifetime": 0, "max_lifetime": 30 * DAY_MS})
    assert resp.status == 200, await resp.text()
    resp = await client.get(f"{C}/rooms/{room}/state/m.room.retention/", headers=auth(token))
    assert await resp.json() == {"min_lifetime": 0, "max_lifetime": 30 * DAY_MS}


# -- expired messages are not served ------------------------------------------------------


async def test_expired_messages_are_hidden_everywhere(
    database_settings: dict[str, Any],
    aiohttp_client: Any,
    tmp_config: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client, token = await alice_client(
        aiohttp_client, tmp_config, retention={"enabled": True}, **database_settings
    )
    room = await new_room(client, token, name="Ephemeral")
    resp = await set_policy(client, token, room, {"max_lifetime": HOUR_MS})
    assert resp.status == 200
    old = await send_at(client, token, room, "said two hours ago", -2 * HOUR_MS)
    fresh = await send(client, token, room, "said just now")

    assert await message_bodies(client, token, room) == ["said just now"]
    timeline = await sync_timeline(client, token, room)
    ids = [e["event_id"] for e in timeline]
    assert fresh in ids and old not in ids
    # State events never expire: the room keeps its name and policy.
    resp = await client.get(f"{C}/rooms/{room}/state/m.room.name/", headers=auth(token))
    assert await resp.json() == {"name": "Ephemeral"}
    resp = await client.get(f"{C}/rooms/{room}/messages?dir=b&limit=50", headers=auth(token))
    types = {e["type"] for e in (await resp.json())["chunk"]}
    assert {"m.room.name", "m.room.retention", "m.room.create"} <= types
    assert {"m.room.name", "m.room.retention"} <= {e["type"] for e in timeline}

    resp = await client.get(f"{C}/rooms/{room}/event/{old}", headers=auth(token))
    assert resp.status == 404 and (await resp.json())["errcode"] == "M_NOT_FOUND"
    resp = await client.get(f"{C}/rooms/{room}/context/{old}", headers=auth(token))
    assert resp.status == 404
    resp = await client.get(f"{C}/rooms/{room}/event/{fresh}", headers=auth(token))
    assert (await resp.json())["content"]["body"] == "said just now"

    later(monkeypatch, HOUR_MS + 60_000)  # an hour on, the fresh one has expired too
    assert await message_bodies(client, token, room) == []
    resp = await client.get(f"{C}/rooms/{room}/event/{fresh}", headers=auth(token))
    assert resp.status == 404


async def test_without_retention_enabled_nothing_expires(
    aiohttp_client: Any, tmp_config: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, token = await alice_client(
        aiohttp_client, tmp_config, retention={"default_policy": {"max_lifetime": "1h"}}
    )
    room = await new_room(client, token)
    assert (await set_policy(client, token, room, {"max_lifetime": 1000})).status == 200
    await send(client, token, room, "kept")
    later(monkeypatch, 10 * DAY_MS)
    assert await message_bodies(client, token, room) == ["kept"]


async def test_the_default_policy_applies_to_rooms_without_one(
    aiohttp_client: Any, tmp_config: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, token = await alice_client(
        aiohttp_client,
        tmp_config,
        retention={"enabled": True, "default_policy": {"max_lifetime": "1d"}},
    )
    plain = await new_room(client, token)
    own = await new_room(client, token)
    # A policy event stating only min_lifetime leaves max_lifetime to the default; a
    # longer max_lifetime of the room's own wins over the default.
    keeps = await new_room(client, token)
    assert (await set_policy(client, token, own, {"min_lifetime": 1000})).status == 200
    assert (await set_policy(client, token, keeps, {"max_lifetime": 7 * DAY_MS})).status == 200
    for room in (plain, own, keeps):
        await send(client, token, room, "hello")
    later(monkeypatch, 2 * DAY_MS)
    assert await message_bodies(client, token, plain) == []
    assert await message_bodies(client, token, own) == []
    assert await message_bodies(client, token, keeps) == ["hello"]


async def test_allowed_lifetime_max_caps_what_is_served(
    aiohttp_client: Any, tmp_config: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A room asking for a year on a server that purges after a week: the message is
    not served past the week (the next purge deletes it anyway); allowed_lifetime_min
    does not bring back what the room itself expired."""
    client, token = await alice_client(
        aiohttp_client,
        tmp_config,
        retention={"enabled": True, "allowed_lifetime_min": "1d", "allowed_lifetime_max": "1w"},
    )
    long_room = await new_room(client, token)
    short_room = await new_room(client, token)
    assert (
        await set_policy(client, token, long_room, {"max_lifetime": 365 * DAY_MS})
    ).status == 200
    assert (await set_policy(client, token, short_room, {"max_lifetime": HOUR_MS})).status == 200
    await send(client, token, long_room, "long")
    await send(client, token, short_room, "short")
    later(monkeypatch, 2 * HOUR_MS)
    assert await message_bodies(client, token, long_room) == ["long"]
    assert await message_bodies(client, token, short_room) == []
    monkeypatch.undo()
    later(monkeypatch, 8 * DAY_MS)
    assert await message_bodies(client, token, long_room) == []


async def test_incremental_and_sliding_sync_leave_out_expired_messages(
    aiohttp_client: Any, tmp_config: Any
) -> None:
    """The live paths skip history-visibility work for members; expiry still applies
    (an event arriving already expired, e.g. from a server with a slow clock)."""
    client, token = await alice_client(aiohttp_client, tmp_config, retention={"enabled": True})
    room = await new_room(client, token)
    assert (await set_policy(client, token, room, {"max_lifetime": HOUR_MS})).status == 200
    resp = await client.get(f"{C}/sync?timeout=0", headers=auth(token))
    since = (await resp.json())["next_batch"]
    old = await send_at(client, token, room, "stamped two hours ago", -2 * HOUR_MS)
    fresh = await send(client, token, room, "fresh")

    resp = await client.get(f"{C}/sync?timeout=0&since={since}", headers=auth(token))
    timeline = (await resp.json())["rooms"]["join"][room]["timeline"]["events"]
    assert [e["event_id"] for e in timeline] == [fresh]

    resp = await client.post(
        SLIDING,
        json={"lists": {"all": {"ranges": [[0, 9]], "timeline_limit": 10}}},
        headers=auth(token),
    )
    assert resp.status == 200, await resp.text()
    events = (await resp.json())["rooms"][room]["timeline"]
    ids = [e["event_id"] for e in events]
    assert fresh in ids and old not in ids
    assert "m.room.retention" in {e["type"] for e in events}
