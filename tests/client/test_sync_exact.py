"""/sync answers that clients and test suites compare with Synapse's: gapped syncs
with lazy loading carry the gap's membership changes (old leaves too), a filtered
timeline still holds `limit` matching events, and `event_format: federation`."""

from __future__ import annotations

import json
from typing import Any

from aiohttp.test_utils import TestClient

from tests.client.helpers import auth, register_user

V3 = "/_matrix/client/v3"


async def sync(client: TestClient, token: str, **params: Any) -> dict[str, Any]:
    response = await client.get(
        f"{V3}/sync", params={"timeout": "0", **params}, headers=auth(token)
    )
    assert response.status == 200, await response.text()
    return await response.json()


async def send(client: TestClient, token: str, room: str, body: str) -> str:
    response = await client.put(
        f"{V3}/rooms/{room}/send/m.room.message/{body}",
        json={"msgtype": "m.text", "body": body},
        headers=auth(token),
    )
    assert response.status == 200
    return (await response.json())["event_id"]


async def put_state(client: TestClient, token: str, room: str, kind: str, content: dict) -> None:
    response = await client.put(
        f"{V3}/rooms/{room}/state/{kind}/", json=content, headers=auth(token)
    )
    assert response.status == 200, await response.text()


async def setup_room(client: TestClient) -> tuple[dict, dict, dict, str]:
    alice, bob, carol = [await register_user(client, n) for n in ("alice", "bob", "carol")]
    response = await client.post(
        f"{V3}/createRoom", json={"preset": "public_chat"}, headers=auth(alice["access_token"])
    )
    room = (await response.json())["room_id"]
    await client.post(f"{V3}/join/{room}", json={}, headers=auth(bob["access_token"]))
    return alice, bob, carol, room


async def test_gapped_lazy_loading_sync_carries_the_gaps_memberships(
    app_client: TestClient,
) -> None:
    alice, bob, carol, room = await setup_room(app_client)
    first = await sync(app_client, bob["access_token"])
    # In the gap: carol joins and leaves, the topic changes; then alice talks a lot.
    await app_client.post(f"{V3}/join/{room}", json={}, headers=auth(carol["access_token"]))
    await app_client.post(f"{V3}/rooms/{room}/leave", json={}, headers=auth(carol["access_token"]))
    await put_state(app_client, alice["access_token"], room, "m.room.topic", {"topic": "gap"})
    for i in range(10):
        await send(app_client, alice["access_token"], room, f"m{i}")
    lazy = json.dumps({"room": {"timeline": {"limit": 3}, "state": {"lazy_load_members": True}}})
    gapped = await sync(app_client, bob["access_token"], since=first["next_batch"], filter=lazy)
    section = gapped["rooms"]["join"][room]
    assert section["timeline"]["limited"] is True
    state = {(e["type"], e["state_key"]): e["content"] for e in section["state"]["events"]}
    assert state[("m.room.member", carol["user_id"])]["membership"] == "leave"  # old leave
    assert state[("m.room.member", alice["user_id"])]["membership"] == "join"  # a sender
    assert state[("m.room.topic", "")] == {"topic": "gap"}

    # Not gapped: the timeline carries the changes, the state names only new senders.
    await send(app_client, alice["access_token"], room, "after")
    calm = await sync(app_client, bob["access_token"], since=gapped["next_batch"], filter=lazy)
    section = calm["rooms"]["join"][room]
    assert section["timeline"]["limited"] is False
    assert [e["content"]["body"] for e in section["timeline"]["events"]] == ["after"]
    assert section["state"]["events"] == []  # alice's membership was sent already


async def test_filtered_timeline_holds_limit_matching_events(app_client: TestClient) -> None:
    alice, bob, _, room = await setup_room(app_client)
    for i in range(6):
        await send(app_client, alice["access_token"], room, f"m{i}")
    for i in range(30):  # newer events the filter leaves out
        await put_state(app_client, alice["access_token"], room, "m.room.topic", {"topic": str(i)})
    only_messages = json.dumps({"room": {"timeline": {"limit": 2, "types": ["m.room.message"]}}})
    body = await sync(app_client, bob["access_token"], filter=only_messages)
    timeline = body["rooms"]["join"][room]["timeline"]
    assert [e["content"]["body"] for e in timeline["events"]] == ["m4", "m5"]
    assert timeline["limited"] is True
    # Paginating from prev_batch goes on with the older events.
    page = await app_client.get(
        f"{V3}/rooms/{room}/messages",
        params={
            "from": timeline["prev_batch"],
            "dir": "b",
            "limit": "2",
            "filter": json.dumps({"types": ["m.room.message"]}),
        },
        headers=auth(bob["access_token"]),
    )
    assert [e["content"]["body"] for e in (await page.json())["chunk"]] == ["m3", "m2"]


async def test_federation_event_format(app_client: TestClient) -> None:
    alice, bob, _, room = await setup_room(app_client)
    event_id = await send(app_client, alice["access_token"], room, "hello")
    body = await sync(
        app_client, bob["access_token"], filter=json.dumps({"event_format": "federation"})
    )
    event = body["rooms"]["join"][room]["timeline"]["events"][-1]
    assert event["event_id"] == event_id
    assert event["room_id"] == room
    for key in ("auth_events", "prev_events", "depth", "hashes", "signatures"):
        assert key in event, key
    assert isinstance(event["unsigned"]["age"], int)
