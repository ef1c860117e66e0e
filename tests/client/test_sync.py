"""/sync end to end: initial and incremental syncs, long-polling, limited timelines,
lazy-loaded members, invites, leaves, filters and token errors."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp.test_utils import TestClient

from homeserver.appstate import LOCAL_EVENTS, MEMBERSHIP
from homeserver.sync.tokens import StreamToken
from tests.client.helpers import auth, join_room, leave_room, make_room, make_user, quiet_since

SYNC = "/_matrix/client/v3/sync"


async def send(client: TestClient, room_id: str, sender: str, body: str, txn: Any = None) -> str:
    event = await client.server.app[LOCAL_EVENTS].send(
        room_id, sender, "m.room.message", {"msgtype": "m.text", "body": body}, txn=txn
    )
    return event.event_id


async def sync(client: TestClient, token: str, **params: Any) -> dict[str, Any]:
    query = {k: (json.dumps(v) if isinstance(v, dict) else str(v)) for k, v in params.items()}
    response = await client.get(SYNC, params=query, headers=auth(token))
    body = await response.json()
    assert response.status == 200, body
    return body


def bodies(room: dict[str, Any]) -> list[str]:
    return [
        e["content"]["body"] for e in room["timeline"]["events"] if e["type"] == "m.room.message"
    ]


async def test_initial_sync_shows_room_state_timeline_and_summary(app_client: TestClient) -> None:
    alice, token, _ = await make_user(app_client, "alice")
    bob, _, _ = await make_user(app_client, "bob")
    room_id = await make_room(app_client, alice)
    await join_room(app_client, room_id, bob)
    await send(app_client, room_id, alice, "hello")

    body = await sync(app_client, token)
    StreamToken.decode(body["next_batch"])
    room = body["rooms"]["join"][room_id]
    timeline = room["timeline"]["events"]
    assert len(timeline) <= 10
    assert timeline[-1]["content"] == {"msgtype": "m.text", "body": "hello"}
    assert timeline[-1]["sender"] == alice
    assert "hashes" not in timeline[-1] and "signatures" not in timeline[-1]
    # state + timeline together describe the room: create and both members are there
    seen = {(e["type"], e.get("state_key")) for e in room["state"]["events"] + timeline}
    assert ("m.room.create", "") in seen
    assert ("m.room.member", alice) in seen and ("m.room.member", bob) in seen
    # state events are never repeated in the timeline
    state_ids = {e["event_id"] for e in room["state"]["events"]}
    assert state_ids.isdisjoint({e["event_id"] for e in timeline})
    assert room["summary"] == {
        "m.heroes": [bob],
        "m.joined_member_count": 2,
        "m.invited_member_count": 0,
    }
    assert room["unread_notifications"] == {"highlight_count": 0, "notification_count": 0}
    assert room["ephemeral"] == {"events": []}
    assert body["rooms"]["invite"] == {} and body["rooms"]["leave"] == {}


async def test_incremental_sync_returns_only_new_events(app_client: TestClient) -> None:
    alice, token, _ = await make_user(app_client, "alice")
    room_id = await make_room(app_client, alice)
    other_room = await make_room(app_client, alice)
    first = await sync(app_client, token)

    await send(app_client, room_id, alice, "one")
    await send(app_client, room_id, alice, "two")
    body = await sync(app_client, token, since=first["next_batch"])
    assert list(body["rooms"]["join"]) == [room_id]  # the quiet room is left out
    room = body["rooms"]["join"][room_id]
    assert bodies(room) == ["one", "two"]
    assert room["timeline"]["limited"] is False
    assert room["state"] == {"events": []}
    assert other_room not in body["rooms"]["join"]

    again = await sync(app_client, token, since=body["next_batch"])
    assert again["rooms"]["join"] == {}
    assert StreamToken.decode(again["next_batch"]) == StreamToken.decode(body["next_batch"])


async def test_transaction_id_only_for_sending_device(app_client: TestClient) -> None:
    alice, token, device = await make_user(app_client, "alice")
    _, other_token, _ = await make_user(app_client, "alice", device_id="OTHER")
    room_id = await make_room(app_client, alice)
    await send(app_client, room_id, alice, "tx", txn=(alice, device, "txn123"))
    mine = (await sync(app_client, token))["rooms"]["join"][room_id]["timeline"]["events"][-1]
    theirs = (await sync(app_client, other_token))["rooms"]["join"][room_id]["timeline"]["events"]
    assert mine["unsigned"]["transaction_id"] == "txn123"
    assert "transaction_id" not in theirs[-1]["unsigned"]


async def test_long_poll_wakes_on_send_from_another_user(app_client: TestClient) -> None:
    alice, token, _ = await make_user(app_client, "alice")
    bob, _, _ = await make_user(app_client, "bob")
    room_id = await make_room(app_client, alice)
    await join_room(app_client, room_id, bob)
    since = await quiet_since(app_client, token)

    task = asyncio.create_task(sync(app_client, token, since=since, timeout=600_000))
    await asyncio.sleep(0.2)
    assert not task.done()  # nothing new: the long-poll waits
    await send(app_client, room_id, bob, "wake up")
    # Woken by the send, not by its (10-minute) timeout; the bound only guards a hang.
    body = await asyncio.wait_for(task, 30)
    assert bodies(body["rooms"]["join"][room_id]) == ["wake up"]


async def test_long_poll_timeout_returns_empty_with_same_token(app_client: TestClient) -> None:
    _, token, _ = await make_user(app_client, "alice")
    since = (await sync(app_client, token))["next_batch"]
    body = await sync(app_client, token, since=since, timeout=300)
    assert body["rooms"]["join"] == {} and body["account_data"] == {"events": []}
    before, after = StreamToken.decode(since), StreamToken.decode(body["next_batch"])
    assert not before.is_after(after)


async def test_limited_timeline_and_prev_batch(app_client: TestClient) -> None:
    alice, token, _ = await make_user(app_client, "alice")
    room_id = await make_room(app_client, alice)
    since = (await sync(app_client, token))["next_batch"]
    await app_client.server.app[LOCAL_EVENTS].send(
        room_id, alice, "m.room.topic", {"topic": "gap topic"}, ""
    )
    for i in range(8):
        await send(app_client, room_id, alice, f"m{i}")
    flt = {"room": {"timeline": {"limit": 3}}}
    body = await sync(app_client, token, since=since, filter=flt)
    room = body["rooms"]["join"][room_id]
    assert bodies(room) == ["m5", "m6", "m7"]
    assert room["timeline"]["limited"] is True
    assert room["timeline"]["prev_batch"]
    # the topic changed in the gap, so it is in the state section
    assert [e["content"] for e in room["state"]["events"]] == [{"topic": "gap topic"}]

    response = await app_client.get(
        f"/_matrix/client/v3/rooms/{room_id}/messages",
        params={"from": room["timeline"]["prev_batch"], "dir": "b", "limit": "2"},
        headers=auth(token),
    )
    if response.status != 404:  # the /messages endpoint belongs to the rooms area
        page = await response.json()
        assert [e["content"].get("body") for e in page["chunk"]] == ["m4", "m3"]


async def test_lazy_loading_members(app_client: TestClient) -> None:
    alice, token, _ = await make_user(app_client, "alice")
    room_id = await make_room(app_client, alice)
    users = []
    for name in ("bob", "carol", "dave"):
        user, _, _ = await make_user(app_client, name)
        await join_room(app_client, room_id, user)
        users.append(user)
    for i in range(12):
        await send(app_client, room_id, users[0] if i < 10 else users[1], f"x{i}")
    flt = {"room": {"state": {"lazy_load_members": True}, "timeline": {"limit": 2}}}
    room = (await sync(app_client, token, filter=flt))["rooms"]["join"][room_id]
    members = {e["state_key"] for e in room["state"]["events"] if e["type"] == "m.room.member"}
    assert members == {alice, users[1]}  # the syncing user and the timeline's sender
    assert room["summary"]["m.joined_member_count"] == 4

    full = (await sync(app_client, token))["rooms"]["join"][room_id]
    members = {e["state_key"] for e in full["state"]["events"] if e["type"] == "m.room.member"}
    assert members == {alice, *users}


async def test_lazy_loading_incremental_sends_new_senders_once(app_client: TestClient) -> None:
    alice, token, _ = await make_user(app_client, "alice")
    bob, _, _ = await make_user(app_client, "bob")
    room_id = await make_room(app_client, alice)
    await join_room(app_client, room_id, bob)
    for i in range(12):
        await send(app_client, room_id, alice, f"a{i}")
    flt = {"room": {"state": {"lazy_load_members": True}, "timeline": {"limit": 5}}}
    first = await sync(app_client, token, filter=flt)
    await send(app_client, room_id, bob, "from bob")
    body = await sync(app_client, token, filter=flt, since=first["next_batch"])
    room = body["rooms"]["join"][room_id]
    assert [e["state_key"] for e in room["state"]["events"]] == [bob]
    await send(app_client, room_id, bob, "again")
    body = await sync(app_client, token, filter=flt, since=body["next_batch"])
    assert body["rooms"]["join"][room_id]["state"]["events"] == []


async def test_invite_with_stripped_state_then_join(app_client: TestClient) -> None:
    alice, _, _ = await make_user(app_client, "alice")
    bob, token, _ = await make_user(app_client, "bob")
    room_id = await make_room(app_client, alice, preset="private_chat")
    since = (await sync(app_client, token))["next_batch"]
    await app_client.server.app[MEMBERSHIP].set_membership(room_id, alice, bob, "invite")

    body = await sync(app_client, token, since=since)
    invite = body["rooms"]["invite"][room_id]["invite_state"]["events"]
    by_type = {(e["type"], e["state_key"]): e for e in invite}
    create = by_type[("m.room.create", "")]
    assert create["sender"] == alice and "event_id" in create
    assert by_type[("m.room.join_rules", "")]["content"] == {"join_rule": "invite"}
    assert by_type[("m.room.member", bob)]["content"]["membership"] == "invite"
    assert by_type[("m.room.member", bob)]["sender"] == alice
    assert body["rooms"]["join"] == {}

    await join_room(app_client, room_id, bob)
    body = await sync(app_client, token, since=body["next_batch"])
    assert body["rooms"]["invite"] == {}
    room = body["rooms"]["join"][room_id]
    seen = {(e["type"], e.get("state_key")) for e in room["state"]["events"]}
    seen |= {(e["type"], e.get("state_key")) for e in room["timeline"]["events"]}
    assert ("m.room.create", "") in seen and ("m.room.power_levels", "") in seen


async def test_leave_shows_timeline_up_to_the_leave(app_client: TestClient) -> None:
    alice, _, _ = await make_user(app_client, "alice")
    bob, token, _ = await make_user(app_client, "bob")
    room_id = await make_room(app_client, alice)
    await join_room(app_client, room_id, bob)
    since = (await sync(app_client, token))["next_batch"]
    await send(app_client, room_id, alice, "before")
    await leave_room(app_client, room_id, bob)
    await send(app_client, room_id, alice, "after")

    body = await sync(app_client, token, since=since)
    assert room_id not in body["rooms"]["join"]
    left = body["rooms"]["leave"][room_id]
    events = left["timeline"]["events"]
    assert bodies(left) == ["before"]
    assert events[-1]["type"] == "m.room.member"
    assert events[-1]["content"]["membership"] == "leave"
    # an initial sync only shows left rooms with include_leave
    assert room_id not in (await sync(app_client, token))["rooms"]["leave"]
    flt = {"room": {"include_leave": True}}
    assert room_id in (await sync(app_client, token, filter=flt))["rooms"]["leave"]


async def test_filters_saved_and_inline(app_client: TestClient) -> None:
    alice, token, _ = await make_user(app_client, "alice")
    room_id = await make_room(app_client, alice)
    await send(app_client, room_id, alice, "msg")
    definition = {
        "room": {"timeline": {"types": ["m.room.message"], "limit": 5}, "state": {"types": []}},
        "event_fields": ["type", "content.body"],
        "presence": {"types": []},
    }
    response = await app_client.post(
        f"/_matrix/client/v3/user/{alice}/filter", json=definition, headers=auth(token)
    )
    assert response.status == 200
    filter_id = (await response.json())["filter_id"]
    assert isinstance(filter_id, str)
    response = await app_client.get(
        f"/_matrix/client/v3/user/{alice}/filter/{filter_id}", headers=auth(token)
    )
    assert await response.json() == definition

    for flt in (filter_id, definition):
        room = (await sync(app_client, token, filter=flt))["rooms"]["join"][room_id]
        assert room["timeline"]["events"] == [
            {"type": "m.room.message", "content": {"body": "msg"}}
        ]
        assert room["state"]["events"] == []

    rooms_filter = {"room": {"not_rooms": [room_id]}}
    assert (await sync(app_client, token, filter=rooms_filter))["rooms"]["join"] == {}


async def test_filter_errors(app_client: TestClient) -> None:
    alice, token, _ = await make_user(app_client, "alice")
    bob, _, _ = await make_user(app_client, "bob")
    bad = await app_client.post(
        f"/_matrix/client/v3/user/{bob}/filter", json={}, headers=auth(token)
    )
    assert bad.status == 403 and (await bad.json())["errcode"] == "M_FORBIDDEN"
    bad = await app_client.post(
        f"/_matrix/client/v3/user/{alice}/filter",
        json={"room": {"timeline": {"limit": "ten"}}},
        headers=auth(token),
    )
    assert bad.status == 400 and (await bad.json())["errcode"] == "M_BAD_JSON"
    missing = await app_client.get(
        f"/_matrix/client/v3/user/{alice}/filter/999", headers=auth(token)
    )
    assert missing.status == 404 and (await missing.json())["errcode"] == "M_NOT_FOUND"
    for value, errcode in (
        ("{not json", "M_BAD_JSON"),
        ('{"room": []}', "M_BAD_JSON"),
        ("12345", "M_INVALID_PARAM"),
        ("abc", "M_INVALID_PARAM"),
    ):
        response = await app_client.get(SYNC, params={"filter": value}, headers=auth(token))
        assert response.status == 400, value
        assert (await response.json())["errcode"] == errcode, value


async def test_bad_since_tokens_are_400(app_client: TestClient) -> None:
    _, token, _ = await make_user(app_client, "alice")
    for since in ("garbage", "s1_x", "s" + "9" * 30, "s99999999_0_0_0_0_0_0"):
        response = await app_client.get(SYNC, params={"since": since}, headers=auth(token))
        assert response.status == 400, since
        assert (await response.json())["errcode"] == "M_INVALID_PARAM"
    response = await app_client.get(SYNC, params={"timeout": "-5"}, headers=auth(token))
    assert response.status == 400
    response = await app_client.get(SYNC)
    assert response.status == 401


async def test_ignored_users_events_are_hidden(app_client: TestClient) -> None:
    alice, token, _ = await make_user(app_client, "alice")
    bob, _, _ = await make_user(app_client, "bob")
    room_id = await make_room(app_client, alice)
    await join_room(app_client, room_id, bob)
    response = await app_client.put(
        f"/_matrix/client/v3/user/{alice}/account_data/m.ignored_user_list",
        json={"ignored_users": {bob: {}}},
        headers=auth(token),
    )
    assert response.status == 200
    since = (await sync(app_client, token))["next_batch"]
    await send(app_client, room_id, bob, "spam")
    await send(app_client, room_id, alice, "mine")
    body = await sync(app_client, token, since=since)
    assert bodies(body["rooms"]["join"][room_id]) == ["mine"]


async def test_full_state_resends_state(app_client: TestClient) -> None:
    alice, token, _ = await make_user(app_client, "alice")
    room_id = await make_room(app_client, alice)
    since = (await sync(app_client, token))["next_batch"]
    body = await sync(app_client, token, since=since, full_state="true")
    room = body["rooms"]["join"][room_id]
    seen = {(e["type"], e.get("state_key")) for e in room["state"]["events"]}
    seen |= {(e["type"], e.get("state_key")) for e in room["timeline"]["events"]}
    assert ("m.room.create", "") in seen


async def test_state_events_in_timeline_carry_prev_content(app_client: TestClient) -> None:
    alice, token, _ = await make_user(app_client, "alice")
    room_id = await make_room(app_client, alice)
    send_state = app_client.server.app[LOCAL_EVENTS].send
    first = await send_state(room_id, alice, "m.room.topic", {"topic": "old"}, "")
    since = (await sync(app_client, token))["next_batch"]
    await send_state(room_id, alice, "m.room.topic", {"topic": "new"}, "")
    body = await sync(app_client, token, since=since)
    (event,) = body["rooms"]["join"][room_id]["timeline"]["events"]
    assert event["content"] == {"topic": "new"}
    assert event["unsigned"]["prev_content"] == {"topic": "old"}
    assert event["unsigned"]["replaces_state"] == first.event_id


async def test_a_token_from_the_future_is_refused(app_client: TestClient) -> None:
    """A since token ahead of every persisted stream position was never given out (one
    process answers at once; a worker first waits, bounded, to catch up with the
    deployment, since another process may have given it out)."""
    _, token, _ = await make_user(app_client, "alice")
    current = StreamToken.decode((await sync(app_client, token))["next_batch"])
    ahead = StreamToken.decode(current.encode().replace("s", "s1000000", 1))
    assert ahead.events > current.events
    response = await app_client.get(
        "/_matrix/client/v3/sync", params={"since": ahead.encode()}, headers=auth(token)
    )
    assert response.status == 400
    assert (await response.json())["errcode"] == "M_INVALID_PARAM"
