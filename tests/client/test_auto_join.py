"""The rooms every new user joins (homeserver/accounts/auto_join.py, Synapse's
`auto_join_rooms` keys), seen through the client API: the room exists after the first
registration (created, aliased, in the public directory), every later user is in it,
six users registering at once make one room, a private preset has its creator invite,
an unjoinable room does not fail registration, guests only when allowed. Both backends
where storage matters."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from homeserver.app import create_app
from homeserver.config import Config
from tests.client.helpers import auth, register_user

V3 = "/_matrix/client/v3"
WELCOME = "#welcome:test.local"


async def joined_rooms(client: Any, token: str) -> list[str]:
    resp = await client.get(f"{V3}/joined_rooms", headers=auth(token))
    assert resp.status == 200
    return (await resp.json())["joined_rooms"]


async def room_of(client: Any, alias: str) -> str:
    resp = await client.get(f"{V3}/directory/room/{alias.replace('#', '%23')}")
    assert resp.status == 200, await resp.text()
    return (await resp.json())["room_id"]


async def test_new_users_join_the_welcome_room(
    database_settings: dict[str, Any], aiohttp_client: Any, tmp_config: Callable[..., Config]
) -> None:
    settings = {"auto_join_rooms": [WELCOME, "#missing:elsewhere.example"]}
    client = await aiohttp_client(create_app(tmp_config(**database_settings, **settings)))
    # Six at once while the room does not exist yet: one room, everyone in it.
    users = await asyncio.gather(*(register_user(client, f"user{i}") for i in range(6)))
    room_id = await room_of(client, WELCOME)
    for user in users:
        assert await joined_rooms(client, user["access_token"]) == [room_id]
    first = await register_user(client, "first")
    assert await joined_rooms(client, first["access_token"]) == [room_id]
    resp = await client.get(f"{V3}/publicRooms", headers=auth(first["access_token"]))
    public = await resp.json()
    assert [r["room_id"] for r in public["chunk"]] == [room_id]
    assert public["chunk"][0]["canonical_alias"] == WELCOME

    resp = await client.get(
        f"{V3}/rooms/{room_id}/joined_members", headers=auth(first["access_token"])
    )
    assert len((await resp.json())["joined"]) == 7


async def test_a_private_welcome_room_made_by_a_system_user(
    aiohttp_client: Any, tmp_config: Callable[..., Config]
) -> None:
    settings = {
        "auto_join_rooms": [WELCOME],
        "auto_join_mxid_localpart": "system",
        "autocreate_auto_join_room_preset": "private_chat",
    }
    client = await aiohttp_client(create_app(tmp_config(**settings)))
    alice = await register_user(client, "alice")
    room_id = await room_of(client, WELCOME)
    assert await joined_rooms(client, alice["access_token"]) == [room_id]
    resp = await client.get(
        f"{V3}/rooms/{room_id}/state/m.room.join_rules", headers=auth(alice["access_token"])
    )
    assert (await resp.json())["join_rule"] == "invite"
    resp = await client.get(
        f"{V3}/rooms/{room_id}/state/m.room.create", headers=auth(alice["access_token"])
    )
    create = await resp.json()
    assert create.get("creator", "@system:test.local") == "@system:test.local"
    resp = await client.get(f"{V3}/publicRooms", headers=auth(alice["access_token"]))
    assert (await resp.json())["chunk"] == []


async def test_registration_never_fails_for_a_room(
    aiohttp_client: Any, tmp_config: Callable[..., Config]
) -> None:
    """No autocreate and no such room, and guests kept out: the accounts are made."""
    settings = {
        "auto_join_rooms": [WELCOME, "!nowhere:test.local"],
        "autocreate_auto_join_rooms": False,
        "allow_guest_access": True,
        "auto_join_rooms_for_guests": False,
    }
    client = await aiohttp_client(create_app(tmp_config(**settings)))
    alice = await register_user(client, "alice")
    assert await joined_rooms(client, alice["access_token"]) == []
    resp = await client.post(f"{V3}/register?kind=guest", json={})
    assert resp.status == 200
    assert await joined_rooms(client, (await resp.json())["access_token"]) == []


async def test_a_first_single_sign_on_joins_too(
    aiohttp_client: Any, tmp_config: Callable[..., Config]
) -> None:
    from tests.client.test_sso_oidc import login_token_in, login_with, sign_in, sso_settings
    from tests.oidc_provider import FakeProvider

    idp = await FakeProvider().start()
    try:
        settings = {**sso_settings(idp), "auto_join_rooms": [WELCOME]}
        client = await aiohttp_client(create_app(tmp_config(**settings)))
        await register_user(client, "first")
        _, page = await sign_in(client)
        session = await login_with(client, login_token_in(page))
        assert await joined_rooms(client, session["access_token"]) == [
            await room_of(client, WELCOME)
        ]
    finally:
        await idp.close()
