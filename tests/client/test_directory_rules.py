"""The operator's room directory rules (Synapse's keys), through the client and
federation APIs: alias_creation_rules, room_list_publication_rules,
enable_room_list_search and require_membership_for_aliases."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from homeserver.app import create_app
from homeserver.appstate import STORES
from homeserver.config import parse_config
from homeserver.config.directory import DirectoryPolicy
from tests.client.helpers import auth, eventually, register_user
from tests.federation.inbound_helpers import fed, seed_remote_key

C = "/_matrix/client/v3"


async def _server(aiohttp_client: Any, tmp_config: Any, **settings: Any) -> Any:
    return await aiohttp_client(create_app(tmp_config(**settings)))


async def _create(client: Any, token: str, **body: Any) -> tuple[int, dict[str, Any]]:
    resp = await client.post(f"{C}/createRoom", json=body, headers=auth(token))
    return resp.status, await resp.json()


async def _alias(client: Any, token: str, alias: str, room: str) -> tuple[int, dict[str, Any]]:
    resp = await client.put(
        f"{C}/directory/room/{quote(alias)}", json={"room_id": room}, headers=auth(token)
    )
    return resp.status, await resp.json()


async def _listed(client: Any, token: str, expected: list[str]) -> list[str]:
    """The directory's rooms, once they are `expected` (in a deployment a client reader
    answers, a moment after the main's change); the last answer after the window."""

    async def read() -> list[str]:
        resp = await client.get(f"{C}/publicRooms", headers=auth(token))
        return [r["room_id"] for r in (await resp.json())["chunk"]]

    return await eventually(client, read, lambda rooms: set(rooms) == set(expected))


async def test_alias_creation_rules(aiohttp_client: Any, tmp_config: Any) -> None:
    rules = [
        {"user_id": "*", "alias": "#official-*", "action": "deny"},
        {"user_id": "@spammer:*", "action": "deny"},
        {"action": "allow"},
    ]
    client = await _server(aiohttp_client, tmp_config, alias_creation_rules=rules)
    alice = (await register_user(client, "alice"))["access_token"]
    spammer = (await register_user(client, "spammer"))["access_token"]
    status, room = await _create(client, alice)
    room_id = room["room_id"]
    status, body = await _alias(client, alice, "#official-news:test.local", room_id)
    assert (status, body["errcode"]) == (403, "M_UNKNOWN")
    assert (await _alias(client, alice, "#news:test.local", room_id))[0] == 200
    await client.post(f"{C}/join/{room_id}", json={}, headers=auth(spammer))
    assert (await _alias(client, spammer, "#spam:test.local", room_id))[0] == 403
    # createRoom with a denied alias makes no room.
    status, body = await _create(client, alice, room_alias_name="official-chat")
    assert (status, body["errcode"]) == (403, "M_UNKNOWN")
    resp = await client.get(f"{C}/joined_rooms", headers=auth(alice))
    assert (await resp.json())["joined_rooms"] == [room_id]


async def test_publication_rules(aiohttp_client: Any, tmp_config: Any) -> None:
    rules = [
        {"user_id": "@mod:*", "action": "allow"},
        {"alias": "#public-*", "action": "allow"},
        {"action": "deny"},
    ]
    client = await _server(aiohttp_client, tmp_config, room_list_publication_rules=rules)
    alice = (await register_user(client, "alice"))["access_token"]
    mod = (await register_user(client, "mod"))["access_token"]
    # A room alice makes public is created but not published.
    status, room = await _create(client, alice, visibility="public", preset="public_chat")
    assert status == 200, room
    room_id = room["room_id"]
    assert await _listed(client, alice, []) == []
    resp = await client.put(
        f"{C}/directory/list/room/{room_id}", json={"visibility": "public"}, headers=auth(alice)
    )
    assert (resp.status, (await resp.json())["errcode"]) == (403, "M_UNKNOWN")
    # With an alias the rules allow, she may.
    assert (await _alias(client, alice, "#public-tea:test.local", room_id))[0] == 200
    resp = await client.put(
        f"{C}/directory/list/room/{room_id}", json={"visibility": "public"}, headers=auth(alice)
    )
    assert resp.status == 200, await resp.text()
    assert await _listed(client, alice, [room_id]) == [room_id]
    # The moderator may publish anything.
    status, other = await _create(client, mod, visibility="public", preset="public_chat")
    both = [room_id, other["room_id"]]
    assert set(await _listed(client, mod, both)) == set(both)


async def test_by_default_only_server_admins_publish(aiohttp_client: Any, tmp_config: Any) -> None:
    """Synapse's default since 1.126 (an open directory is where spam advertises)."""
    client = await _server(aiohttp_client, tmp_config, room_list_publication_rules=None)
    alice = (await register_user(client, "alice"))["access_token"]
    admin = await register_user(client, "admin")
    await client.app[STORES].accounts.set_admin(admin["user_id"], True)
    status, room = await _create(client, alice, visibility="public", preset="public_chat")
    assert status == 200 and await _listed(client, alice, []) == []
    resp = await client.put(
        f"{C}/directory/list/room/{room['room_id']}",
        json={"visibility": "public"},
        headers=auth(alice),
    )
    assert (resp.status, (await resp.json())["error"]) == (403, "Not allowed to publish room")
    status, admins = await _create(
        client, admin["access_token"], visibility="public", preset="public_chat"
    )
    assert await _listed(client, alice, [admins["room_id"]]) == [admins["room_id"]]


async def test_room_list_search_off_lists_nothing(aiohttp_client: Any, tmp_config: Any) -> None:
    client = await _server(aiohttp_client, tmp_config, enable_room_list_search=False)
    await seed_remote_key(client)
    alice = (await register_user(client, "alice"))["access_token"]
    status, room = await _create(client, alice, visibility="public", preset="public_chat")
    assert status == 200
    assert await client.app[STORES].rooms.get_public_room_ids(limit=10) == [room["room_id"]]
    assert await _listed(client, alice, []) == []
    resp = await client.post(
        f"{C}/publicRooms", json={"filter": {"generic_search_term": ""}}, headers=auth(alice)
    )
    assert (await resp.json())["chunk"] == []
    status, body = await fed(client, "GET", "/_matrix/federation/v1/publicRooms")
    assert (status, body["chunk"]) == (200, [])


@pytest.mark.parametrize("required", [True, False], ids=["membership_required", "not_required"])
async def test_aliases_and_membership(aiohttp_client: Any, tmp_config: Any, required: bool) -> None:
    client = await _server(aiohttp_client, tmp_config, require_membership_for_aliases=required)
    alice = (await register_user(client, "alice"))["access_token"]
    bob = await register_user(client, "bob")
    admin = await register_user(client, "admin")
    await client.app[STORES].accounts.set_admin(admin["user_id"], True)
    _, room = await _create(client, alice)
    status, _ = await _alias(client, bob["access_token"], "#bobs:test.local", room["room_id"])
    assert status == (403 if required else 200)
    # A server admin need not be in the room (Synapse).
    status, body = await _alias(
        client, admin["access_token"], "#admins:test.local", room["room_id"]
    )
    assert status == 200, body


def test_rules_read_in_order_first_match_decides(tmp_path: Path) -> None:
    config = parse_config(
        {
            "server_name": "example.org",
            "room_list_publication_rules": [
                {"room_id": "!ABC*", "action": "deny"},
                {"alias": "#ok-*", "action": "allow"},
            ],
            "alias_creation_rules": [],
        },
        base_dir=tmp_path,
    )
    policy: DirectoryPolicy = config.directory
    assert not policy.may_publish("@a:example.org", "!abcdef", ["#ok-1:example.org"])
    assert policy.may_publish("@a:example.org", "!xyz", ["#nope:x", "#OK-2:example.org"])
    assert not policy.may_publish("@a:example.org", "!xyz", [])  # no alias: only "*" rules
    assert not policy.may_create_alias("@a:example.org", "!xyz", "#any:example.org")  # []
    assert not DirectoryPolicy().may_publish("@a:b", "!c", [])  # unset: admins only
    assert DirectoryPolicy().may_create_alias("@a:b", "!c", "#d:b")  # unset: everyone
