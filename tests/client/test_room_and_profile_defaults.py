"""Synapse's keys for what a server decides about rooms and profiles:
`encryption_enabled_by_default_for_room_type` (new rooms start encrypted: all of them,
or the private presets) and `enable_set_displayname` / `enable_set_avatar_url` (users
may not change what a directory owns; the capabilities say so)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from homeserver.app import create_app
from homeserver.config import Config
from tests.client.helpers import auth, register_user

V3 = "/_matrix/client/v3"


async def encryption_of(client: Any, token: str, body: dict[str, Any]) -> Any:
    resp = await client.post(f"{V3}/createRoom", json=body, headers=auth(token))
    assert resp.status == 200, await resp.text()
    room_id = (await resp.json())["room_id"]
    resp = await client.get(f"{V3}/rooms/{room_id}/state/m.room.encryption", headers=auth(token))
    return (await resp.json()) if resp.status == 200 else None


async def test_new_rooms_encrypted_by_default(
    aiohttp_client: Any, tmp_config: Callable[..., Config]
) -> None:
    megolm = {"algorithm": "m.megolm.v1.aes-sha2"}
    for setting, public, private in (
        ("all", megolm, megolm),
        ("invite", None, megolm),
        ("off", None, None),
    ):
        client = await aiohttp_client(
            create_app(tmp_config(encryption_enabled_by_default_for_room_type=setting))
        )
        alice = await register_user(client, f"alice{setting}")
        token = alice["access_token"]
        assert await encryption_of(client, token, {"preset": "public_chat"}) == public, setting
        assert await encryption_of(client, token, {"preset": "private_chat"}) == private, setting
    # What the request sets itself is kept.
    client = await aiohttp_client(
        create_app(tmp_config(encryption_enabled_by_default_for_room_type="all"))
    )
    bob = await register_user(client, "bob")
    own = {
        "type": "m.room.encryption",
        "state_key": "",
        "content": {"algorithm": "m.megolm.v1.aes-sha2", "rotation_period_ms": 1000},
    }
    found = await encryption_of(client, bob["access_token"], {"initial_state": [own]})
    assert found["rotation_period_ms"] == 1000


async def test_profile_changes_switched_off(
    aiohttp_client: Any, tmp_config: Callable[..., Config]
) -> None:
    settings = {"enable_set_displayname": False, "enable_set_avatar_url": False}
    client = await aiohttp_client(create_app(tmp_config(**settings)))
    alice = await register_user(client, "alice")
    token = alice["access_token"]
    caps = (await (await client.get(f"{V3}/capabilities", headers=auth(token))).json())[
        "capabilities"
    ]
    assert caps["m.set_displayname"] == {"enabled": False}
    assert caps["m.set_avatar_url"] == {"enabled": False}
    for key, value in (("displayname", "New"), ("avatar_url", "mxc://test.local/a")):
        path = f"{V3}/profile/{alice['user_id']}/{key}"
        resp = await client.put(path, json={key: value}, headers=auth(token))
        assert (resp.status, (await resp.json())["errcode"]) == (400, "M_FORBIDDEN"), key
        resp = await client.delete(path, headers=auth(token))
        assert resp.status == 400, key
    # Other fields stay the user's.
    resp = await client.put(
        f"{V3}/profile/{alice['user_id']}/m.tz", json={"m.tz": "Europe/Paris"}, headers=auth(token)
    )
    assert resp.status == 200


async def test_user_directory_settings(
    aiohttp_client: Any, tmp_config: Callable[..., Config]
) -> None:
    """search_all_users: colleagues find each other without sharing a room; enabled:
    false: nobody is found."""
    for i, (settings, found) in enumerate(
        (
            ({}, False),
            ({"user_directory": {"search_all_users": True}}, True),
            ({"user_directory": {"enabled": False, "search_all_users": True}}, False),
        )
    ):
        client = await aiohttp_client(create_app(tmp_config(**settings)))
        alice = await register_user(client, f"alice{i}")
        bob = await register_user(client, f"bob{i}")
        resp = await client.post(
            f"{V3}/user_directory/search",
            json={"search_term": f"bob{i}"},
            headers=auth(alice["access_token"]),
        )
        expected = [bob["user_id"]] if found else []
        assert [r["user_id"] for r in (await resp.json())["results"]] == expected, settings
        await client.close()


async def test_who_may_read_a_profile(
    aiohttp_client: Any, tmp_config: Callable[..., Config]
) -> None:
    settings = {
        "require_auth_for_profile_requests": True,
        "limit_profile_requests_to_users_who_share_rooms": True,
    }
    client = await aiohttp_client(create_app(tmp_config(**settings)))
    alice = await register_user(client, "alice")
    bob = await register_user(client, "bob")
    path = f"{V3}/profile/{bob['user_id']}"
    resp = await client.get(path)
    assert (resp.status, (await resp.json())["errcode"]) == (401, "M_MISSING_TOKEN")
    for url in (path, f"{path}/displayname"):
        resp = await client.get(url, headers=auth(alice["access_token"]))
        assert (resp.status, (await resp.json())["errcode"]) == (403, "M_FORBIDDEN"), url
    resp = await client.get(path, headers=auth(bob["access_token"]))  # their own
    assert resp.status == 200
    resp = await client.post(
        f"{V3}/createRoom", json={"invite": [alice["user_id"]]}, headers=auth(bob["access_token"])
    )
    room_id = (await resp.json())["room_id"]
    await client.post(f"{V3}/join/{room_id}", headers=auth(alice["access_token"]))
    resp = await client.get(path, headers=auth(alice["access_token"]))
    assert resp.status == 200 and (await resp.json())["displayname"] == "bob"


async def test_invites_by_admins_only_and_preset_power_levels(
    aiohttp_client: Any, tmp_config: Callable[..., Config]
) -> None:
    """block_non_admin_invites: only server admins invite (in /invite and in
    /createRoom); default_power_level_content_override: a preset's power levels,
    under the request's own override."""
    from homeserver.appstate import STORES

    settings = {
        "block_non_admin_invites": True,
        "default_power_level_content_override": {
            "private_chat": {"invite": 50, "events_default": 10}
        },
    }
    client = await aiohttp_client(create_app(tmp_config(**settings)))
    alice = await register_user(client, "alice")
    bob = await register_user(client, "bob")
    token = alice["access_token"]
    resp = await client.post(
        f"{V3}/createRoom",
        json={"preset": "private_chat", "invite": [bob["user_id"]]},
        headers=auth(token),
    )
    assert (resp.status, (await resp.json())["errcode"]) == (403, "M_FORBIDDEN")
    resp = await client.post(
        f"{V3}/createRoom",
        json={"preset": "private_chat", "power_level_content_override": {"events_default": 5}},
        headers=auth(token),
    )
    room_id = (await resp.json())["room_id"]
    resp = await client.get(f"{V3}/rooms/{room_id}/state/m.room.power_levels", headers=auth(token))
    levels = await resp.json()
    assert (levels["invite"], levels["events_default"]) == (50, 5)
    resp = await client.post(
        f"{V3}/rooms/{room_id}/invite", json={"user_id": bob["user_id"]}, headers=auth(token)
    )
    assert (resp.status, (await resp.json())["errcode"]) == (403, "M_FORBIDDEN")
    await client.server.app[STORES].accounts.set_admin(alice["user_id"], True)
    resp = await client.post(
        f"{V3}/rooms/{room_id}/invite", json={"user_id": bob["user_id"]}, headers=auth(token)
    )
    assert resp.status == 200
