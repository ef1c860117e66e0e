"""The operator's profile rules (Synapse's keys), through the client API:
max_avatar_size and allowed_avatar_mimetypes (for the global avatar and a per-room
one), allow_per_room_profiles and include_profile_data_on_invite."""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import quote

from homeserver.app import create_app
from tests.client.helpers import auth, register_user
from tests.media.test_media_api import upload
from tests.media.test_thumbnails import image_bytes

C = "/_matrix/client/v3"


async def _set_avatar(client: Any, user: dict[str, Any], url: str) -> tuple[int, Any]:
    resp = await client.put(
        f"{C}/profile/{quote(user['user_id'])}/avatar_url",
        json={"avatar_url": url},
        headers=auth(user["access_token"]),
    )
    return resp.status, await resp.json()


async def test_avatars_must_be_held_small_and_of_an_allowed_type(
    aiohttp_client: Any, tmp_config: Any
) -> None:
    config = tmp_config(max_avatar_size="20K", allowed_avatar_mimetypes=["image/png"])
    client = await aiohttp_client(create_app(config))
    alice = await register_user(client, "alice")
    token = alice["access_token"]
    small_png = await upload(client, token, image_bytes((32, 32), "PNG"), "image/png")
    jpeg = await upload(client, token, image_bytes((32, 32), "JPEG"), "image/jpeg")
    big_png = await upload(client, token, os.urandom(40_000), "image/png")
    assert await _set_avatar(client, alice, f"mxc://{small_png}") == (200, {})
    for refused in (f"mxc://{jpeg}", f"mxc://{big_png}", "mxc://elsewhere.org/notheld"):
        status, body = await _set_avatar(client, alice, refused)
        assert (status, body["errcode"]) == (403, "M_FORBIDDEN"), refused
    resp = await client.get(f"{C}/profile/{quote(alice['user_id'])}")
    assert (await resp.json())["avatar_url"] == f"mxc://{small_png}"
    # A per-room avatar in the user's own member event is held to the same rules.
    resp = await client.post(f"{C}/createRoom", json={}, headers=auth(token))
    room = (await resp.json())["room_id"]
    member = f"{C}/rooms/{room}/state/m.room.member/{quote(alice['user_id'])}"
    resp = await client.put(
        member, json={"membership": "join", "avatar_url": f"mxc://{jpeg}"}, headers=auth(token)
    )
    assert resp.status == 403, await resp.text()


async def test_without_per_room_profiles_rooms_show_the_global_profile(
    aiohttp_client: Any, tmp_config: Any
) -> None:
    client = await aiohttp_client(create_app(tmp_config(allow_per_room_profiles=False)))
    alice = await register_user(client, "alice")
    token = alice["access_token"]
    await client.put(
        f"{C}/profile/{quote(alice['user_id'])}/displayname",
        json={"displayname": "Alice"},
        headers=auth(token),
    )
    resp = await client.post(f"{C}/createRoom", json={}, headers=auth(token))
    room = (await resp.json())["room_id"]
    member = f"{C}/rooms/{room}/state/m.room.member/{quote(alice['user_id'])}"
    resp = await client.put(
        member, json={"membership": "join", "displayname": "Queen of the room"}, headers=auth(token)
    )
    assert resp.status == 200, await resp.text()
    resp = await client.get(member, headers=auth(token))
    assert (await resp.json())["displayname"] == "Alice"


async def test_invites_carry_the_invitee_profile_unless_told_not_to(
    aiohttp_client: Any, tmp_config: Any
) -> None:
    for include, expected in ((True, "Bob"), (False, None)):
        client = await aiohttp_client(
            create_app(tmp_config(include_profile_data_on_invite=include))
        )
        alice = await register_user(client, f"alice{int(include)}")
        bob = await register_user(client, f"bob{int(include)}")
        await client.put(
            f"{C}/profile/{quote(bob['user_id'])}/displayname",
            json={"displayname": "Bob"},
            headers=auth(bob["access_token"]),
        )
        resp = await client.post(
            f"{C}/createRoom",
            json={"invite": [bob["user_id"]]},
            headers=auth(alice["access_token"]),
        )
        room = (await resp.json())["room_id"]
        resp = await client.get(
            f"{C}/rooms/{room}/state/m.room.member/{quote(bob['user_id'])}",
            headers=auth(alice["access_token"]),
        )
        invite = await resp.json()
        assert invite["membership"] == "invite"
        assert invite.get("displayname") == expected
        await client.close()
