"""EDUs from a server that has no say: a signed fake peer with no user in a room
cannot put read receipts into it (issue 8.10), and presence for users who share no
room with ours is not kept (issue 8.8), nor more than a bounded number per EDU."""

from __future__ import annotations

from homeserver.appstate import PRESENCE, STORES
from tests.federation.inbound_helpers import (
    RITA,
    create_room,
    fed,
    join_remote,
    seed_remote_key,
)

OTHER_REMOTE = "@rex:remote.test"


async def _send(client, txn: str, edus: list[dict]) -> None:
    status, body = await fed(
        client,
        "PUT",
        f"/_matrix/federation/v1/send/{txn}",
        {"origin": "remote.test", "origin_server_ts": 1, "pdus": [], "edus": edus},
    )
    assert status == 200, body


def _receipt(room_id: str, user_id: str, event_id: str) -> dict:
    return {
        "edu_type": "m.receipt",
        "content": {room_id: {"m.read": {user_id: {"event_ids": [event_id], "data": {"ts": 1}}}}},
    }


async def _receipt_users(client, room_id: str) -> set[str]:
    rows = await client.app[STORES].db.fetch(
        "SELECT user_id FROM receipts WHERE room_id = $1", room_id
    )
    return {r[0] for r in rows}


async def test_server_without_a_member_cannot_inject_receipts(app_client) -> None:
    client = app_client
    await seed_remote_key(client)
    room_id = await create_room(client)
    last = (await client.app[STORES].events.get_forward_extremities(room_id))[0]
    await _send(client, "r1", [_receipt(room_id, RITA, last)])
    assert RITA not in await _receipt_users(client, room_id)
    # Once Rita has joined, her server may mark the room read for her, not for Rex.
    await join_remote(client, room_id)
    await _send(
        client, "r2", [_receipt(room_id, RITA, last), _receipt(room_id, OTHER_REMOTE, last)]
    )
    users = await _receipt_users(client, room_id)
    assert RITA in users and OTHER_REMOTE not in users


async def test_presence_of_strangers_is_not_kept(app_client) -> None:
    client = app_client
    await seed_remote_key(client)
    room_id = await create_room(client)
    await join_remote(client, room_id)
    strangers = [f"@s{i}:remote.test" for i in range(300)]
    push = [{"user_id": u, "presence": "online", "last_active_ago": 5} for u in strangers]
    push.append({"user_id": RITA, "presence": "online", "last_active_ago": 5})
    await _send(client, "p1", [{"edu_type": "m.presence", "content": {"push": push}}])
    presence = client.app[PRESENCE]
    assert all(presence.get(u) is None for u in strangers)
    # Rita shares a room with Alice, but came after the per-EDU bound: not looked at.
    assert presence.get(RITA) is None
    small = [{"user_id": RITA, "presence": "unavailable", "last_active_ago": 5}]
    await _send(client, "p2", [{"edu_type": "m.presence", "content": {"push": small}}])
    row = presence.get(RITA)
    assert row is not None and row.state == "unavailable"
