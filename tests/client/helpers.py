"""Shared helpers for client-server API tests (append only; several areas use them)."""

from __future__ import annotations

import secrets
from typing import Any

from aiohttp.test_utils import TestClient

from homeserver.appstate import MEMBERSHIP, ROOM_CREATOR, STORES

SERVER_NAME = "test.local"


async def make_user(
    client: TestClient, localpart: str, device_id: str = "DEVICE1"
) -> tuple[str, str, str]:
    """Create a user, a device and an access token straight in storage (no /register).

    Returns (user_id, access_token, device_id). Calling again with another device_id
    adds a device (and token) to an existing user.
    """
    app = client.server.app
    stores = app[STORES]
    user_id = f"@{localpart}:{SERVER_NAME}"
    await stores.accounts.create_user(user_id, None)
    await stores.accounts.upsert_device(user_id, device_id, f"{localpart}'s {device_id}")
    token = "syt_" + secrets.token_urlsafe(18)
    await stores.accounts.add_access_token(token, user_id, device_id)
    return user_id, token, device_id


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def make_room(client: TestClient, creator: str, *, preset: str = "public_chat") -> str:
    """Create a room through the room service (no /createRoom needed)."""
    from homeserver.rooms.creation import RoomSpec

    app = client.server.app
    spec = RoomSpec(room_version="10", preset=preset)
    return await app[ROOM_CREATOR].create_room(creator, spec, {})


async def join_room(client: TestClient, room_id: str, user_id: str) -> Any:
    return await client.server.app[MEMBERSHIP].join(room_id, user_id)


async def leave_room(client: TestClient, room_id: str, user_id: str) -> Any:
    return await client.server.app[MEMBERSHIP].set_membership(room_id, user_id, user_id, "leave")


async def register_user(
    client: TestClient, localpart: str, password: str = "correct horse", **extra: Any
) -> dict[str, Any]:
    """Register through POST /register (UIA dummy stage); returns the 200 body
    (user_id, access_token, device_id, home_server, ...). `extra` goes into the body."""
    body: dict[str, Any] = {"username": localpart, "password": password, **extra}
    first = await client.post("/_matrix/client/v3/register", json=body)
    assert first.status == 401, await first.text()
    session = (await first.json())["session"]
    body["auth"] = {"type": "m.login.dummy", "session": session}
    response = await client.post("/_matrix/client/v3/register", json=body)
    assert response.status == 200, await response.text()
    return await response.json()
