"""Rejecting a remote invite when no resident server will sign the leave: the
rejection happens on our side alone (an out-of-band leave, as Synapse's fallback), so
the invite never stays stuck in /sync and the client gets 200, not 502."""

from __future__ import annotations

import time

from homeserver.appstate import STORES
from homeserver.events import get_room_version
from homeserver.events.builder import build_event
from tests.client.helpers import auth, eventually, make_user
from tests.federation.inbound_helpers import REMOTE_KEY, RITA, fed, seed_remote_key

# The inviter's server, remote.test, does not exist: make_leave cannot reach it.
ROOM = "!gone:remote.test"
FAKE_ID = "$" + "A" * 43


async def test_reject_invite_from_unreachable_server_succeeds_locally(app_client) -> None:
    client = app_client
    await seed_remote_key(client)
    bob, token, _ = await make_user(client, "bob")
    version = get_room_version("10")
    invite = build_event(
        version,
        room_id=ROOM,
        sender=RITA,
        type="m.room.member",
        content={"membership": "invite"},
        state_key=bob,
        prev_event_ids=[FAKE_ID],
        auth_event_ids=[FAKE_ID],
        depth=7,
        origin_server_ts=int(time.time() * 1000),
        server_name="remote.test",
        signing_key=REMOTE_KEY,
    )
    status, body = await fed(
        client,
        "PUT",
        f"/_matrix/federation/v2/invite/{ROOM}/{invite.event_id}",
        {"room_version": "10", "event": invite.pdu, "invite_room_state": []},
    )
    assert status == 200, body

    async def initial_sync() -> dict:
        return await (await client.get("/_matrix/client/v3/sync", headers=auth(token))).json()

    # In a deployment the invite is written by the main and bob syncs on a client
    # reader, which may not have read it yet (eventually: at once in one process).
    first = await eventually(client, initial_sync, lambda s: ROOM in s["rooms"]["invite"])
    assert ROOM in first["rooms"]["invite"]

    resp = await client.post(f"/_matrix/client/v3/rooms/{ROOM}/leave", headers=auth(token))
    assert resp.status == 200, await resp.text()
    assert await resp.json() == {}

    stores = client.app[STORES]
    info = await stores.current_state.get_membership_info(ROOM, bob)
    assert info is not None and info.membership == "leave"
    leave = await stores.events.get_event(info.event_id)
    assert leave.sender == bob and leave.prev_event_ids == [invite.event_id]
    resp = await client.get(
        "/_matrix/client/v3/sync",
        params={"since": first["next_batch"], "timeout": "0"},
        headers=auth(token),
    )
    later = await resp.json()
    assert ROOM not in later["rooms"]["invite"]
    assert ROOM in later["rooms"]["leave"]
    again = await (await client.get("/_matrix/client/v3/sync", headers=auth(token))).json()
    assert ROOM not in again["rooms"]["invite"]
