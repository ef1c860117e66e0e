"""Guest accounts (the spec's Guest Access module, Synapse's `allow_guest_access`):
registration, what guests may and may not call, guest_access rooms, eviction when a
room revokes guest access, and the upgrade to a full account."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from homeserver.app import create_app
from homeserver.client.guests import guest_may_call
from tests.client.helpers import auth, register_user

V3 = "/_matrix/client/v3"


@pytest.fixture
async def client(aiohttp_client: Any, tmp_config: Any) -> TestClient:
    return await aiohttp_client(create_app(tmp_config(allow_guest_access=True)))


async def register_guest(client: TestClient, **body: Any) -> dict[str, Any]:
    response = await client.post(f"{V3}/register", params={"kind": "guest"}, json=body)
    assert response.status == 200, await response.text()
    return await response.json()


async def create_room(client: TestClient, token: str, **body: Any) -> str:
    response = await client.post(f"{V3}/createRoom", json=body, headers=auth(token))
    assert response.status == 200, await response.text()
    return (await response.json())["room_id"]


async def set_guest_access(client: TestClient, token: str, room_id: str, value: str) -> None:
    response = await client.put(
        f"{V3}/rooms/{room_id}/state/m.room.guest_access/",
        json={"guest_access": value},
        headers=auth(token),
    )
    assert response.status == 200, await response.text()


async def members(client: TestClient, token: str, room_id: str) -> dict[str, str]:
    response = await client.get(f"{V3}/rooms/{room_id}/members", headers=auth(token))
    assert response.status == 200, await response.text()
    return {e["state_key"]: e["content"]["membership"] for e in (await response.json())["chunk"]}


async def test_guest_registration_is_off_by_default(app_client: TestClient) -> None:
    response = await app_client.post(f"{V3}/register", params={"kind": "guest"}, json={})
    assert response.status == 403
    assert (await response.json())["errcode"] == "M_GUEST_ACCESS_FORBIDDEN"


async def test_guest_gets_a_numeric_account_and_limited_api(client: TestClient) -> None:
    guest = await register_guest(client, initial_device_display_name="Guest phone")
    user_id, token = guest["user_id"], guest["access_token"]
    assert user_id.startswith("@") and user_id[1:].split(":")[0].isdigit()
    assert guest["device_id"] and guest["home_server"] == "test.local"
    assert "refresh_token" not in guest

    whoami = await client.get(f"{V3}/account/whoami", headers=auth(token))
    assert (await whoami.json())["user_id"] == user_id
    assert (await whoami.json())["is_guest"] is True

    # Calls outside the guest list are refused, with the guest errcode.
    refused = [
        client.post(f"{V3}/createRoom", json={}, headers=auth(token)),
        client.put(
            f"{V3}/profile/{user_id}/avatar_url",
            json={"avatar_url": "mxc://x/y"},
            headers=auth(token),
        ),
        client.get(f"{V3}/pushrules/", headers=auth(token)),
        client.post(f"{V3}/user_directory/search", json={"search_term": "a"}, headers=auth(token)),
        client.put(f"{V3}/user/{user_id}/account_data/x.y", json={}, headers=auth(token)),
    ]
    for call in refused:
        response = await call
        assert response.status == 403, response.url
        assert (await response.json())["errcode"] == "M_GUEST_ACCESS_FORBIDDEN"

    # ... while the spec's list works: display name, devices, sync, keys.
    name = await client.put(
        f"{V3}/profile/{user_id}/displayname", json={"displayname": "Visitor"}, headers=auth(token)
    )
    assert name.status == 200
    devices = await client.get(f"{V3}/devices", headers=auth(token))
    assert [d["display_name"] for d in (await devices.json())["devices"]] == ["Guest phone"]
    sync = await client.get(f"{V3}/sync", headers=auth(token))
    assert sync.status == 200 and "next_batch" in await sync.json()
    keys = await client.post(f"{V3}/keys/upload", json={}, headers=auth(token))
    assert keys.status == 200
    # The global event stream needs a room for guests (Synapse's answer).
    events = await client.get(f"{V3}/events", params={"timeout": "0"}, headers=auth(token))
    assert events.status == 400


async def test_guests_join_only_rooms_that_allow_them_and_leave_on_revocation(
    client: TestClient,
) -> None:
    alice = await register_user(client, "alice")
    guest = await register_guest(client)
    open_room = await create_room(client, alice["access_token"], preset="public_chat")
    closed_room = await create_room(client, alice["access_token"], preset="public_chat")
    await set_guest_access(client, alice["access_token"], open_room, "can_join")

    refused = await client.post(
        f"{V3}/join/{closed_room}", json={}, headers=auth(guest["access_token"])
    )
    assert refused.status == 403
    assert (await refused.json())["errcode"] == "M_FORBIDDEN"
    assert guest["user_id"] not in await members(client, alice["access_token"], closed_room)

    joined = await client.post(
        f"{V3}/join/{open_room}", json={}, headers=auth(guest["access_token"])
    )
    assert joined.status == 200, await joined.text()
    member = await client.get(
        f"{V3}/rooms/{open_room}/state/m.room.member/{guest['user_id']}",
        headers=auth(alice["access_token"]),
    )
    assert await member.json() == {"membership": "join", "kind": "guest"}

    # A guest talks in the room, but may not invite, kick or create rooms.
    sent = await client.put(
        f"{V3}/rooms/{open_room}/send/m.room.message/t1",
        json={"msgtype": "m.text", "body": "hello as guest"},
        headers=auth(guest["access_token"]),
    )
    assert sent.status == 200
    invite = await client.post(
        f"{V3}/rooms/{open_room}/invite",
        json={"user_id": alice["user_id"]},
        headers=auth(guest["access_token"]),
    )
    assert (await invite.json())["errcode"] == "M_GUEST_ACCESS_FORBIDDEN"
    messages = await client.get(
        f"{V3}/rooms/{open_room}/messages",
        params={"dir": "b", "limit": "5"},
        headers=auth(guest["access_token"]),
    )
    bodies = [e["content"].get("body") for e in (await messages.json())["chunk"]]
    assert "hello as guest" in bodies

    # Revoking guest access takes the guest out: it leaves by itself (its own event).
    await set_guest_access(client, alice["access_token"], open_room, "forbidden")
    for _ in range(100):
        if (await members(client, alice["access_token"], open_room))[guest["user_id"]] == "leave":
            break
        await asyncio.sleep(0.05)
    leave = await client.get(
        f"{V3}/rooms/{open_room}/state/m.room.member/{guest['user_id']}",
        params={"format": "event"},
        headers=auth(alice["access_token"]),
    )
    event = await leave.json()
    assert event["content"]["membership"] == "leave"
    assert event["sender"] == guest["user_id"]
    assert (await members(client, alice["access_token"], open_room))[alice["user_id"]] == "join"
    again = await client.post(
        f"{V3}/join/{open_room}", json={}, headers=auth(guest["access_token"])
    )
    assert again.status == 403


async def test_guest_upgrades_to_a_full_account_with_the_same_id(client: TestClient) -> None:
    guest = await register_guest(client)
    other_guest = await register_guest(client)
    localpart = guest["user_id"][1:].split(":")[0]
    body: dict[str, Any] = {
        "username": localpart,
        "password": "a long guest password",
        "guest_access_token": guest["access_token"],
    }
    first = await client.post(f"{V3}/register", json=body)
    assert first.status == 401
    body["auth"] = {"type": "m.login.dummy", "session": (await first.json())["session"]}

    # Another guest's token cannot take this account.
    stolen = dict(body, guest_access_token=other_guest["access_token"])
    response = await client.post(f"{V3}/register", json=stolen)
    assert response.status == 403
    assert (await response.json())["errcode"] == "M_FORBIDDEN"

    upgraded = await client.post(f"{V3}/register", json=body)
    assert upgraded.status == 200, await upgraded.text()
    full = await upgraded.json()
    assert full["user_id"] == guest["user_id"]
    assert full["access_token"] != guest["access_token"]
    for token in (full["access_token"], guest["access_token"]):
        whoami = await client.get(f"{V3}/account/whoami", headers=auth(token))
        assert (await whoami.json())["is_guest"] is False
        created = await client.post(f"{V3}/createRoom", json={}, headers=auth(token))
        assert created.status == 200, await created.text()
    login = await client.post(
        f"{V3}/login",
        json={
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": localpart},
            "password": "a long guest password",
        },
    )
    assert login.status == 200
    # Not a guest any more: a second upgrade is refused.
    again = await client.post(f"{V3}/register", json=dict(body, auth=None))
    assert again.status == 403


def test_guest_route_table() -> None:
    assert guest_may_call("GET", "/_matrix/client/v3/sync")
    assert guest_may_call("GET", "/_matrix/client/r0/rooms/!a:b/messages")
    assert guest_may_call("PUT", "/_matrix/client/v3/rooms/!a:b/send/m.room.message/1")
    assert guest_may_call("GET", "/_matrix/client/v1/media/download/s/m")
    assert not guest_may_call("POST", "/_matrix/client/v3/createRoom")
    assert not guest_may_call("POST", "/_matrix/client/v3/rooms/!a:b/ban")
    assert not guest_may_call("PUT", "/_matrix/client/v3/profile/@a:b/avatar_url")
    assert not guest_may_call("GET", "/_matrix/client/v3/rooms/!a:b/messages/extra")
    assert not guest_may_call("GET", "/_synapse/admin/v1/users")
