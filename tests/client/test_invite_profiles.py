"""Invites carry names: what Element shows for a DM invite and in the timeline.

The invitee's /sync stripped state holds the inviter's member event (their display name
and avatar), and the invite event itself carries the invitee's display name and avatar,
as with Synapse; otherwise Element shows "Empty room" and bare user IDs until the
invitee joins. Remote invites: tests/federation/test_remote_invites.py.
"""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from tests.client.helpers import auth, make_user

C = "/_matrix/client/v3"


async def ok(response: Any) -> Any:
    body = await response.json()
    assert response.status == 200, body
    return body


async def set_profile(c: TestClient, user: str, token: str, name: str, avatar: str) -> None:
    await ok(
        await c.put(
            f"{C}/profile/{user}/displayname", json={"displayname": name}, headers=auth(token)
        )
    )
    await ok(
        await c.put(
            f"{C}/profile/{user}/avatar_url", json={"avatar_url": avatar}, headers=auth(token)
        )
    )


def member_of(events: list[dict[str, Any]], user: str) -> dict[str, Any]:
    return next(e for e in events if e["type"] == "m.room.member" and e["state_key"] == user)


async def test_dm_invite_carries_both_profiles(app_client: TestClient) -> None:
    c = app_client
    alice, alice_token, _ = await make_user(c, "alice")
    bob, bob_token, _ = await make_user(c, "bob")
    await set_profile(c, alice, alice_token, "Alice Liddell", "mxc://test.local/alice")
    await set_profile(c, bob, bob_token, "Bob Builder", "mxc://test.local/bob")
    since = (await ok(await c.get(f"{C}/sync", headers=auth(bob_token))))["next_batch"]

    room = await ok(
        await c.post(
            f"{C}/createRoom",
            json={"preset": "trusted_private_chat", "is_direct": True, "invite": [bob]},
            headers=auth(alice_token),
        )
    )
    room_id = room["room_id"]

    body = await ok(await c.get(f"{C}/sync", params={"since": since}, headers=auth(bob_token)))
    stripped = body["rooms"]["invite"][room_id]["invite_state"]["events"]
    inviter = member_of(stripped, alice)
    assert inviter["content"]["displayname"] == "Alice Liddell"
    assert inviter["content"]["avatar_url"] == "mxc://test.local/alice"
    assert inviter["content"]["membership"] == "join"
    invite = member_of(stripped, bob)
    assert invite["sender"] == alice
    assert invite["content"] == {
        "membership": "invite",
        "is_direct": True,
        "displayname": "Bob Builder",
        "avatar_url": "mxc://test.local/bob",
    }

    # The inviter's timeline names the invitee too ("Alice invited Bob Builder").
    page = await ok(
        await c.get(f"{C}/rooms/{room_id}/messages", params={"dir": "b"}, headers=auth(alice_token))
    )
    event = member_of(page["chunk"], bob)
    assert event["content"]["displayname"] == "Bob Builder"


async def test_invite_endpoint_and_client_supplied_names(app_client: TestClient) -> None:
    c = app_client
    alice, alice_token, _ = await make_user(c, "alice")
    bob, bob_token, _ = await make_user(c, "bob")
    carol, carol_token, _ = await make_user(c, "carol")
    await set_profile(c, bob, bob_token, "Bob Builder", "mxc://test.local/bob")
    room_id = (await ok(await c.post(f"{C}/createRoom", json={}, headers=auth(alice_token))))[
        "room_id"
    ]
    await ok(
        await c.post(
            f"{C}/rooms/{room_id}/invite", json={"user_id": bob}, headers=auth(alice_token)
        )
    )
    state = await ok(
        await c.get(f"{C}/rooms/{room_id}/state/m.room.member/{bob}", headers=auth(alice_token))
    )
    assert state == {
        "membership": "invite",
        "displayname": "Bob Builder",
        "avatar_url": "mxc://test.local/bob",
    }
    # A user with no profile gets none; nothing invented.
    await ok(
        await c.post(
            f"{C}/rooms/{room_id}/invite", json={"user_id": carol}, headers=auth(alice_token)
        )
    )
    state = await ok(
        await c.get(f"{C}/rooms/{room_id}/state/m.room.member/{carol}", headers=auth(alice_token))
    )
    assert state == {"membership": "invite"}
    del carol_token
