"""Inbound federated invites are rate-limited with rc_invites (issue 8.11): a peer
sending invite after invite to one of our users gets 429 once the per-user budget is
spent, and the user's /sync holds only the invites that were let through. Local
invites are limited the same way (per room, per invitee, per inviter)."""

from __future__ import annotations

import time

from aiohttp.test_utils import TestClient

from homeserver.app import create_app
from homeserver.events import get_room_version
from homeserver.events.builder import build_event
from tests.client.helpers import auth, make_user
from tests.federation.inbound_helpers import REMOTE_KEY, RITA, fed, seed_remote_key

FAKE_ID = "$" + "A" * 43
LIMITS = {"per_user": {"per_second": 0.001, "burst_count": 3}}


async def _client(aiohttp_client, tmp_config) -> TestClient:
    config = tmp_config(rc_enabled=True, rc_invites=LIMITS)
    return await aiohttp_client(create_app(config))


async def test_remote_invite_flood_is_limited(aiohttp_client, tmp_config) -> None:
    client = await _client(aiohttp_client, tmp_config)
    await seed_remote_key(client)
    bob, token, _ = await make_user(client, "bob")
    statuses = []
    for i in range(8):
        room_id = f"!flood{i}:remote.test"
        invite = build_event(
            get_room_version("10"),
            room_id=room_id,
            sender=RITA,
            type="m.room.member",
            content={"membership": "invite"},
            state_key=bob,
            prev_event_ids=[FAKE_ID],
            auth_event_ids=[FAKE_ID],
            depth=3,
            origin_server_ts=int(time.time() * 1000),
            server_name="remote.test",
            signing_key=REMOTE_KEY,
        )
        status, body = await fed(
            client,
            "PUT",
            f"/_matrix/federation/v2/invite/{room_id}/{invite.event_id}",
            {"room_version": "10", "event": invite.pdu, "invite_room_state": []},
        )
        statuses.append(status)
        if status == 429:
            assert body["errcode"] == "M_LIMIT_EXCEEDED"
    assert statuses == [200] * 3 + [429] * 5
    sync = await (await client.get("/_matrix/client/v3/sync", headers=auth(token))).json()
    assert sorted(sync["rooms"]["invite"]) == [f"!flood{i}:remote.test" for i in range(3)]


async def test_local_invites_are_limited_per_invitee(aiohttp_client, tmp_config) -> None:
    client = await _client(aiohttp_client, tmp_config)
    _, atok, _ = await make_user(client, "alice")
    bob, _, _ = await make_user(client, "bob")
    statuses = []
    for _ in range(5):
        resp = await client.post(
            "/_matrix/client/v3/createRoom", json={"preset": "private_chat"}, headers=auth(atok)
        )
        room_id = (await resp.json())["room_id"]
        resp = await client.post(
            f"/_matrix/client/v3/rooms/{room_id}/invite", json={"user_id": bob}, headers=auth(atok)
        )
        statuses.append(resp.status)
    assert statuses == [200, 200, 200, 429, 429]
