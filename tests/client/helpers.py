"""Shared helpers for client-server API tests (append only; several areas use them)."""

from __future__ import annotations

import asyncio
import secrets
import time
import uuid
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aiohttp.test_utils import TestClient

from homeserver.appstate import MEMBERSHIP, ROOM_CREATOR, STORES

SERVER_NAME = "test.local"

T = TypeVar("T")

# How long another process of a deployment may take to hear of a write (Redis, then a
# read from PostgreSQL): milliseconds when idle, a second or two on a loaded CI machine.
REPLICATION_WINDOW_S = 5.0


async def eventually(
    client: TestClient, read: Callable[[], Awaitable[T]], done: Callable[[T], bool]
) -> T:
    """`read()` again until `done(result)`, then that result; the last result when the
    deployment's replication window has passed (the caller's assert then fails on it).

    For a read that may land on another process than the write before it (HS_TEST_DEPLOYMENT:
    a client reader learns of the main's writes over Redis). One process is consistent at
    once: there the first read must do, so the check keeps its full strength."""
    result = await read()
    if not deployed(client):
        return result
    deadline = time.monotonic() + REPLICATION_WINDOW_S
    while not done(result) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        result = await read()
    return result


async def make_user(
    client: TestClient, localpart: str, device_id: str = "DEVICE1"
) -> tuple[str, str, str]:
    """Create a user, a device and an access token straight in storage (no /register).

    Returns (user_id, access_token, device_id). Calling again with another device_id
    adds a device (and token) to an existing user.
    """
    if deployed(client):
        made = await _make_user_over_http(client, localpart, device_id)
    else:
        made = await _make_user_in_storage(client, localpart, device_id)
    _DEVICE_TOKENS.setdefault(client, {})[(made[0], device_id)] = made[1]
    return made


# The access token make_user gave each (user, device), per test client.
_DEVICE_TOKENS: weakref.WeakKeyDictionary[Any, dict[tuple[str, str], str]] = (
    weakref.WeakKeyDictionary()
)


def device_token(client: TestClient, user_id: str, device_id: str) -> str:
    """The access token make_user gave `user_id`'s `device_id` (a test that syncs as
    a device over HTTP instead of running the sync code in process)."""
    return _DEVICE_TOKENS[client][(user_id, device_id)]


async def _make_user_in_storage(
    client: TestClient, localpart: str, device_id: str
) -> tuple[str, str, str]:
    stores = client.server.app[STORES]
    user_id = f"@{localpart}:{SERVER_NAME}"
    await stores.accounts.create_user(user_id, None)
    await stores.accounts.upsert_device(user_id, device_id, f"{localpart}'s {device_id}")
    token = "syt_" + secrets.token_urlsafe(18)
    await stores.accounts.add_access_token(token, user_id, device_id)
    return user_id, token, device_id


async def quiet_since(client: TestClient, token: str) -> str:
    """A /sync token after which nothing is pending for the user, for tests of what
    wakes a long-poll. One process: the first sync's. A worker deployment: the sync
    tells the main the user is online, and that presence change comes back to the
    reader a moment later, waking the next long-poll at once; so poll until quiet."""
    headers = auth(token)
    response = await client.get("/_matrix/client/v3/sync", headers=headers)
    assert response.status == 200, await response.text()
    since = str((await response.json())["next_batch"])
    if not deployed(client):
        return since
    for _ in range(10):
        params = {"since": since, "timeout": "1000"}
        response = await client.get("/_matrix/client/v3/sync", params=params, headers=headers)
        body = await response.json()
        since = str(body["next_batch"])
        if not body.get("presence", {}).get("events") and not body["rooms"]["join"]:
            break
    return since


def deployed(client: TestClient) -> bool:
    """Whether the client talks to a worker deployment (HS_TEST_DEPLOYMENT), whose
    memory the helpers cannot reach: they use the client API instead."""
    return hasattr(client.server, "deployment")


async def _make_user_over_http(
    client: TestClient, localpart: str, device_id: str
) -> tuple[str, str, str]:
    """make_user through /register (or /login for another device of the same user)."""
    tokens: dict[str, str] = client.server.tokens  # type: ignore[attr-defined]
    user_id = f"@{localpart}:{SERVER_NAME}"
    if user_id in tokens:
        body = {
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": localpart},
            "password": "helper pw",
            "device_id": device_id,
            "initial_device_display_name": f"{localpart}'s {device_id}",  # as make_user
        }
        response = await client.post("/_matrix/client/v3/login", json=body)
    else:
        data = {
            "username": localpart,
            "password": "helper pw",
            "device_id": device_id,
            "initial_device_display_name": f"{localpart}'s {device_id}",
        }
        response = await client.post(
            "/_matrix/client/v3/register", json={**data, "auth": {"type": "m.login.dummy"}}
        )
    if response.status != 200 and user_id not in tokens:
        # Made in the deployment's database by the test (or its view of the server,
        # tests/deployment_view.py), with no password, or a server whose /register is
        # closed or needs a token: as make_user does in process, straight in storage
        # (the deployment's database).
        return await _make_user_in_storage(client, localpart, device_id)
    assert response.status == 200, await response.text()
    token = (await response.json())["access_token"]
    if user_id not in tokens:
        # /register gives a new user a display name; make_user's users have no profile.
        response = await client.put(
            f"/_matrix/client/v3/profile/{user_id}/displayname",
            json={"displayname": ""},
            headers=auth(token),
        )
        assert response.status == 200, await response.text()
    tokens.setdefault(user_id, token)
    return user_id, token, device_id


def _token_of(client: TestClient, user_id: str) -> dict[str, str]:
    return auth(client.server.tokens[user_id])  # type: ignore[attr-defined]


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def create_room(client: TestClient, token: str, **body: Any) -> str:
    """POST /createRoom as the token's user; the room ID."""
    resp = await client.post("/_matrix/client/v3/createRoom", json=body, headers=auth(token))
    assert resp.status == 200, await resp.text()
    return str((await resp.json())["room_id"])


async def send_text(client: TestClient, token: str, room_id: str, body: str) -> str:
    """PUT an m.text message as the token's user (a fresh transaction ID); its event ID."""
    resp = await client.put(
        f"/_matrix/client/v3/rooms/{room_id}/send/m.room.message/{uuid.uuid4().hex}",
        json={"msgtype": "m.text", "body": body},
        headers=auth(token),
    )
    assert resp.status == 200, await resp.text()
    return str((await resp.json())["event_id"])


async def make_room(client: TestClient, creator: str, *, preset: str = "public_chat") -> str:
    """Create a room through the room service (no /createRoom needed)."""
    from homeserver.rooms.creation import RoomSpec

    if deployed(client):
        body = {"room_version": "10", "preset": preset}
        response = await client.post(
            "/_matrix/client/v3/createRoom", json=body, headers=_token_of(client, creator)
        )
        assert response.status == 200, await response.text()
        return str((await response.json())["room_id"])
    app = client.server.app
    spec = RoomSpec(room_version="10", preset=preset)
    return await app[ROOM_CREATOR].create_room(creator, spec, {})


async def join_room(client: TestClient, room_id: str, user_id: str) -> Any:
    if deployed(client):
        return await _membership_over_http(client, room_id, user_id, "join")
    return await client.server.app[MEMBERSHIP].join(room_id, user_id)


async def leave_room(client: TestClient, room_id: str, user_id: str) -> Any:
    if deployed(client):
        return await _membership_over_http(client, room_id, user_id, "leave")
    return await client.server.app[MEMBERSHIP].set_membership(room_id, user_id, user_id, "leave")


async def _membership_over_http(client: TestClient, room_id: str, user_id: str, verb: str) -> Any:
    response = await client.post(
        f"/_matrix/client/v3/rooms/{room_id}/{verb}", json={}, headers=_token_of(client, user_id)
    )
    assert response.status == 200, await response.text()
    return await response.json()


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
    data: dict[str, Any] = await response.json()
    if deployed(client) and "access_token" in data:  # join_room & co. act as them
        client.server.tokens.setdefault(data["user_id"], data["access_token"])  # type: ignore[attr-defined]
    return data
