"""auto_accept_invites (Synapse's key) for invites between users of this server: the
invitee is joined by the server, a direct-message invite also lands in their m.direct,
and each restriction (only DMs, disabled) leaves the other invites for the user."""

from __future__ import annotations

import asyncio
from typing import Any

from homeserver.app import create_app
from tests.client.helpers import auth, register_user

C = "/_matrix/client/v3"


async def _users(client: Any, *names: str) -> list[tuple[str, str]]:
    """(user ID, access token) of each new user."""
    made = [await register_user(client, name) for name in names]
    return [(u["user_id"], u["access_token"]) for u in made]


async def _room(client: Any, token: str, **body: Any) -> str:
    resp = await client.post(f"{C}/createRoom", json=body, headers=auth(token))
    assert resp.status == 200, await resp.text()
    return (await resp.json())["room_id"]


async def _invite(client: Any, token: str, room: str, user_id: str) -> None:
    resp = await client.post(
        f"{C}/rooms/{room}/invite", json={"user_id": user_id}, headers=auth(token)
    )
    assert resp.status == 200, await resp.text()


async def _membership(client: Any, owner: str, room: str, user_id: str) -> str | None:
    resp = await client.get(f"{C}/rooms/{room}/state/m.room.member/{user_id}", headers=auth(owner))
    return (await resp.json())["membership"] if resp.status == 200 else None


async def _joined_rooms(client: Any, token: str) -> set[str]:
    body = await (await client.get(f"{C}/joined_rooms", headers=auth(token))).json()
    return set(body["joined_rooms"])


async def _wait_joined(client: Any, token: str, room: str) -> set[str]:
    """The user's joined rooms once `room` is among them (or after 10 s: a worker
    deployment hears the invite over replication first)."""
    for _ in range(200):
        rooms = await _joined_rooms(client, token)
        if room in rooms:
            return rooms
        await asyncio.sleep(0.05)
    return await _joined_rooms(client, token)


async def test_a_local_invite_is_accepted(aiohttp_client: Any, tmp_config: Any) -> None:
    client = await aiohttp_client(create_app(tmp_config(auto_accept_invites={"enabled": True})))
    (alice, a_token), (bob, b_token) = await _users(client, "alice", "bob")
    room = await _room(client, a_token, preset="private_chat", name="Team")
    await _invite(client, a_token, room, bob)
    assert room in await _wait_joined(client, b_token, room)
    assert await _membership(client, a_token, room, bob) == "join"
    member = await (
        await client.get(f"{C}/rooms/{room}/state/m.room.member/{bob}", headers=auth(a_token))
    ).json()
    assert member["membership"] == "join"
    # Not a DM: m.direct is not touched.
    resp = await client.get(f"{C}/user/{bob}/account_data/m.direct", headers=auth(b_token))
    assert resp.status == 404, await resp.text()
    # The sync shows the room joined, no invite left behind.
    sync = await (await client.get(f"{C}/sync?timeout=0", headers=auth(b_token))).json()
    assert room in sync["rooms"]["join"] and room not in sync["rooms"].get("invite", {})


async def test_a_direct_invite_is_accepted_and_marked_direct(
    aiohttp_client: Any, tmp_config: Any
) -> None:
    settings = {"enabled": True, "only_for_direct_messages": True}
    client = await aiohttp_client(create_app(tmp_config(auto_accept_invites=settings)))
    (alice, a_token), (bob, b_token), (carol, _) = await _users(client, "alice", "bob", "carol")
    # Bob's m.direct already names another chat: it is kept, the new room added.
    resp = await client.put(
        f"{C}/user/{bob}/account_data/m.direct",
        json={carol: ["!older:test.local"]},
        headers=auth(b_token),
    )
    assert resp.status == 200
    plain = await _room(client, a_token, preset="private_chat", invite=[bob])
    direct = await _room(
        client, a_token, preset="trusted_private_chat", invite=[bob], is_direct=True
    )
    assert direct in await _wait_joined(client, b_token, direct)
    resp = await client.get(f"{C}/user/{bob}/account_data/m.direct", headers=auth(b_token))
    assert await resp.json() == {carol: ["!older:test.local"], alice: [direct]}
    # only_for_direct_messages: the plain invite (made first) still waits for bob.
    await asyncio.sleep(0.2)
    assert plain not in await _joined_rooms(client, b_token)
    assert await _membership(client, a_token, plain, bob) == "invite"


async def test_disabled_leaves_invites_to_the_user(aiohttp_client: Any, tmp_config: Any) -> None:
    client = await aiohttp_client(create_app(tmp_config(auto_accept_invites={"enabled": False})))
    (_, a_token), (bob, b_token) = await _users(client, "alice", "bob")
    room = await _room(client, a_token, preset="private_chat", invite=[bob], is_direct=True)
    await asyncio.sleep(0.5)
    assert await _membership(client, a_token, room, bob) == "invite"
    assert room not in await _joined_rooms(client, b_token)
    sync = await (await client.get(f"{C}/sync?timeout=0", headers=auth(b_token))).json()
    assert room in sync["rooms"]["invite"]
    resp = await client.get(f"{C}/user/{bob}/account_data/m.direct", headers=auth(b_token))
    assert resp.status == 404


async def test_deactivated_users_are_not_joined(aiohttp_client: Any, tmp_config: Any) -> None:
    """A deactivated invitee is never joined (as in Synapse), while an active user
    invited after them is."""
    client = await aiohttp_client(create_app(tmp_config(auto_accept_invites={"enabled": True})))
    (_, a_token), (bob, b_token), (dan, d_token) = await _users(client, "alice", "bob", "dan")
    resp = await client.post(
        f"{C}/account/deactivate",
        json={"auth": {"type": "m.login.password", "user": dan, "password": "correct horse"}},
        headers=auth(d_token),
    )
    assert resp.status == 200, await resp.text()
    room = await _room(client, a_token, preset="private_chat")
    await _invite(client, a_token, room, dan)  # first: bob's acceptance comes after
    await _invite(client, a_token, room, bob)
    assert room in await _wait_joined(client, b_token, room)
    await asyncio.sleep(0.2)
    assert await _membership(client, a_token, room, dan) == "invite"
