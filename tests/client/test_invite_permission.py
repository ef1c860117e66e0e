"""Invite permission (spec v1.18, MSC4380): a user whose `m.invite_permission_config`
says `default_action: block` gets no invites. /invite, the invite list of /createRoom
(the room is still created), a member state event with `membership: invite` and an
invite over federation all answer 403 M_INVITE_BLOCKED; invites already received are
kept out of /sync and sliding sync while blocking lasts; unblocking lets invites in
again; another value, or none, changes nothing."""

from __future__ import annotations

import time

from aiohttp.test_utils import TestClient

from homeserver.app import create_app
from homeserver.events import get_room_version
from homeserver.events.builder import build_event
from tests.client.helpers import auth, make_user
from tests.federation.inbound_helpers import REMOTE_KEY, RITA, fed, seed_remote_key

FAKE_ID = "$" + "B" * 43
SLIDING = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync"


async def _set(client: TestClient, user: str, token: str, content: dict) -> None:
    resp = await client.put(
        f"/_matrix/client/v3/user/{user}/account_data/m.invite_permission_config",
        json=content,
        headers=auth(token),
    )
    assert resp.status == 200


async def _room(client: TestClient, token: str, **body) -> str:
    resp = await client.post("/_matrix/client/v3/createRoom", json=body, headers=auth(token))
    assert resp.status == 200, await resp.text()
    return (await resp.json())["room_id"]


async def _invites(client: TestClient, token: str) -> list[str]:
    sync = await (await client.get("/_matrix/client/v3/sync", headers=auth(token))).json()
    return sorted(sync.get("rooms", {}).get("invite", {}))


def _remote_invite(room_id: str, target: str) -> dict:
    invite = build_event(
        get_room_version("10"),
        room_id=room_id,
        sender=RITA,
        type="m.room.member",
        content={"membership": "invite"},
        state_key=target,
        prev_event_ids=[FAKE_ID],
        auth_event_ids=[FAKE_ID],
        depth=3,
        origin_server_ts=int(time.time() * 1000),
        server_name="remote.test",
        signing_key=REMOTE_KEY,
    )
    return {"event_id": invite.event_id, "pdu": invite.pdu}


async def test_a_user_who_blocks_invites_gets_none(aiohttp_client, tmp_config) -> None:
    client = await aiohttp_client(create_app(tmp_config()))
    await seed_remote_key(client)
    alice, atok, _ = await make_user(client, "alice")
    bob, btok, _ = await make_user(client, "bob")
    earlier = await _room(client, atok, preset="private_chat", invite=[bob])
    assert await _invites(client, btok) == [earlier]

    await _set(client, bob, btok, {"default_action": "block"})
    # Invites already received disappear from both syncs.
    assert await _invites(client, btok) == []
    resp = await client.post(
        SLIDING,
        json={"lists": {"all": {"ranges": [[0, 10]], "timeline_limit": 1}}},
        headers=auth(btok),
    )
    assert resp.status == 200
    assert earlier not in (await resp.json()).get("rooms", {})

    room = await _room(client, atok, preset="private_chat")
    resp = await client.post(
        f"/_matrix/client/v3/rooms/{room}/invite", json={"user_id": bob}, headers=auth(atok)
    )
    assert resp.status == 403 and (await resp.json())["errcode"] == "M_INVITE_BLOCKED"
    resp = await client.put(
        f"/_matrix/client/v3/rooms/{room}/state/m.room.member/{bob}",
        json={"membership": "invite"},
        headers=auth(atok),
    )
    assert resp.status == 403 and (await resp.json())["errcode"] == "M_INVITE_BLOCKED"
    # /createRoom still creates the room; only the blocked invitee is left out.
    carol, _, _ = await make_user(client, "carol")
    created = await _room(client, atok, preset="private_chat", invite=[bob, carol])
    members = await (
        await client.get(f"/_matrix/client/v3/rooms/{created}/members", headers=auth(atok))
    ).json()
    invited = {e["state_key"] for e in members["chunk"] if e["content"]["membership"] == "invite"}
    assert invited == {carol}
    # Over federation: the same answer to the inviting server.
    remote = _remote_invite("!blocked:remote.test", bob)
    status, body = await fed(
        client,
        "PUT",
        f"/_matrix/federation/v2/invite/!blocked:remote.test/{remote['event_id']}",
        {"room_version": "10", "event": remote["pdu"], "invite_room_state": []},
    )
    assert status == 403 and body["errcode"] == "M_INVITE_BLOCKED"
    assert await _invites(client, btok) == []

    # Unblocking (the same event without default_action) lets invites in again.
    await _set(client, bob, btok, {})
    resp = await client.post(
        f"/_matrix/client/v3/rooms/{room}/invite", json={"user_id": bob}, headers=auth(atok)
    )
    assert resp.status == 200
    assert room in await _invites(client, btok)
    assert alice != bob


async def test_other_values_do_not_block(aiohttp_client, tmp_config) -> None:
    client = await aiohttp_client(create_app(tmp_config()))
    _, atok, _ = await make_user(client, "alice")
    bob, btok, _ = await make_user(client, "bob")
    for content in ({"default_action": "allow"}, {"default_action": 1}, {"other": "block"}):
        await _set(client, bob, btok, content)
        room = await _room(client, atok, preset="private_chat")
        resp = await client.post(
            f"/_matrix/client/v3/rooms/{room}/invite", json={"user_id": bob}, headers=auth(atok)
        )
        assert resp.status == 200, content
