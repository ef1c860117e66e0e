"""Forgotten rooms leave every sync (as in Synapse), and forget_rooms_on_leave
(Synapse's key) forgets a room for a user who leaves it, is kicked or banned from it."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any
from urllib.parse import quote

from homeserver.app import create_app
from homeserver.appstate import ROOM_READ_STORE
from tests.client.helpers import auth, register_user

C = "/_matrix/client/v3"
SS = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync"
WITH_LEAVE = quote(json.dumps({"room": {"include_leave": True}}))


async def _room_with(client: Any, owner: str, member: str) -> str:
    resp = await client.post(f"{C}/createRoom", json={"preset": "public_chat"}, headers=auth(owner))
    room = (await resp.json())["room_id"]
    resp = await client.post(f"{C}/join/{room}", json={}, headers=auth(member))
    assert resp.status == 200
    await client.put(
        f"{C}/rooms/{room}/send/m.room.message/{uuid.uuid4().hex}",
        json={"msgtype": "m.text", "body": "before"},
        headers=auth(owner),
    )
    return room


async def _left_rooms(client: Any, token: str, since: str | None = None) -> set[str]:
    url = f"{C}/sync?timeout=0&filter={WITH_LEAVE}" + (f"&since={since}" if since else "")
    body = await (await client.get(url, headers=auth(token))).json()
    return set(body.get("rooms", {}).get("leave", {}))


async def _sliding(client: Any, token: str, pos: str | None = None) -> dict[str, Any]:
    body = {"lists": {"all": {"ranges": [[0, 20]], "timeline_limit": 1}}}
    url = SS + (f"?pos={pos}" if pos else "")
    resp = await client.post(url, json=body, headers=auth(token))
    return await resp.json()


async def test_a_forgotten_room_leaves_sliding_sync(aiohttp_client: Any, tmp_config: Any) -> None:
    """A room left since the last position is listed once; not when forgotten."""
    client = await aiohttp_client(create_app(tmp_config()))
    owner = (await register_user(client, "owner"))["access_token"]
    bob = (await register_user(client, "bob"))["access_token"]
    kept, forgotten = await _room_with(client, owner, bob), await _room_with(client, owner, bob)
    pos = (await _sliding(client, bob))["pos"]
    for room in (kept, forgotten):
        await client.post(f"{C}/rooms/{room}/leave", json={}, headers=auth(bob))
    await client.post(f"{C}/rooms/{forgotten}/forget", json={}, headers=auth(bob))
    rooms = set((await _sliding(client, bob, pos))["rooms"])
    assert kept in rooms and forgotten not in rooms


async def test_a_forgotten_room_is_in_no_sync(aiohttp_client: Any, tmp_config: Any) -> None:
    client = await aiohttp_client(create_app(tmp_config()))
    owner = (await register_user(client, "owner"))["access_token"]
    bob = (await register_user(client, "bob"))["access_token"]
    room = await _room_with(client, owner, bob)
    since = (await (await client.get(f"{C}/sync?timeout=0", headers=auth(bob))).json())[
        "next_batch"
    ]
    await client.post(f"{C}/rooms/{room}/leave", json={}, headers=auth(bob))
    assert await _left_rooms(client, bob) == {room}
    await client.post(f"{C}/rooms/{room}/forget", json={}, headers=auth(bob))
    assert await _left_rooms(client, bob) == set()
    assert await _left_rooms(client, bob, since) == set()  # the leave, forgotten since


async def _forgotten(client: Any, token: str, room: str) -> bool:
    resp = await client.get(f"{C}/rooms/{room}/messages?dir=b", headers=auth(token))
    return resp.status == 403


async def test_rooms_left_kicked_or_banned_from_are_forgotten(
    aiohttp_client: Any, tmp_config: Any
) -> None:
    client = await aiohttp_client(create_app(tmp_config(forget_rooms_on_leave=True)))
    owner = (await register_user(client, "owner"))["access_token"]
    bob = await register_user(client, "bob")
    token = bob["access_token"]
    left, kicked, banned = [await _room_with(client, owner, token) for _ in range(3)]
    await client.post(f"{C}/rooms/{left}/leave", json={}, headers=auth(token))
    for room, action in ((kicked, "kick"), (banned, "ban")):
        resp = await client.post(
            f"{C}/rooms/{room}/{action}", json={"user_id": bob["user_id"]}, headers=auth(owner)
        )
        assert resp.status == 200, await resp.text()
    read_store = client.app[ROOM_READ_STORE]
    for _ in range(50):  # the kick and the ban are forgotten in the background
        if await read_store.get_forgotten_rooms(bob["user_id"]) == {left, kicked, banned}:
            break
        await asyncio.sleep(0.05)
    assert await read_store.get_forgotten_rooms(bob["user_id"]) == {left, kicked, banned}
    assert await _forgotten(client, token, left) and await _forgotten(client, token, kicked)
    assert await _left_rooms(client, token) == set()
    # Rejoining remembers the room again.
    resp = await client.post(f"{C}/join/{kicked}", json={}, headers=auth(token))
    assert resp.status == 200
    assert not await _forgotten(client, token, kicked)


async def test_without_the_setting_a_left_room_stays(aiohttp_client: Any, tmp_config: Any) -> None:
    client = await aiohttp_client(create_app(tmp_config()))
    owner = (await register_user(client, "owner"))["access_token"]
    bob = (await register_user(client, "bob"))["access_token"]
    room = await _room_with(client, owner, bob)
    await client.post(f"{C}/rooms/{room}/leave", json={}, headers=auth(bob))
    await asyncio.sleep(0.2)
    assert not await _forgotten(client, bob, room)
    assert await _left_rooms(client, bob) == {room}
