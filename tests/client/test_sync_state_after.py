"""/sync: `use_state_after` (v1.16 state_after section), per-thread unread counts when
the filter asks, history visibility on the timelines of rooms new to the client, and
profile changes reaching other members as m.room.member updates."""

from __future__ import annotations

import json
from typing import Any

from aiohttp.test_utils import TestClient

from homeserver.appstate import LOCAL_EVENTS
from tests.client.helpers import auth, join_room, make_room, make_user, quiet_since

SYNC = "/_matrix/client/v3/sync"


async def sync(client: TestClient, token: str, **params: Any) -> dict[str, Any]:
    query = {
        k: (json.dumps(v) if isinstance(v, dict) else str(v).lower() if isinstance(v, bool) else v)
        for k, v in params.items()
    }
    response = await client.get(SYNC, params=query, headers=auth(token))
    body = await response.json()
    assert response.status == 200, body
    return body


async def send(client: TestClient, room_id: str, sender: str, body: str, **extra: Any) -> str:
    content = {"msgtype": "m.text", "body": body, **extra}
    event = await client.server.app[LOCAL_EVENTS].send(room_id, sender, "m.room.message", content)
    return event.event_id


async def state(client: TestClient, room_id: str, sender: str, type_: str, content: Any) -> str:
    event = await client.server.app[LOCAL_EVENTS].send(room_id, sender, type_, content, "")
    return event.event_id


def keyed(events: list[dict[str, Any]]) -> dict[tuple[str, str], str]:
    return {(e["type"], e["state_key"]): e["event_id"] for e in events}


async def test_initial_state_after_includes_timeline_state(app_client: TestClient) -> None:
    alice, token, _ = await make_user(app_client, "alice")
    room_id = await make_room(app_client, alice)
    topic = await state(app_client, room_id, alice, "m.room.topic", {"topic": "t1"})
    flt = {"room": {"timeline": {"limit": 2}}}

    classic = (await sync(app_client, token, filter=flt))["rooms"]["join"][room_id]
    assert "state_after" not in classic
    # The topic is in the timeline, so the classic state section leaves it out.
    assert ("m.room.topic", "") not in keyed(classic["state"]["events"])

    body = await sync(app_client, token, filter=flt, use_state_after=True)
    room = body["rooms"]["join"][room_id]
    assert "state" not in room
    after = keyed(room["state_after"]["events"])
    assert after[("m.room.topic", "")] == topic
    assert ("m.room.create", "") in after and ("m.room.member", alice) in after
    assert room["timeline"]["events"][-1]["event_id"] == topic


async def test_incremental_state_after(app_client: TestClient) -> None:
    alice, token, _ = await make_user(app_client, "alice")
    bob, _, _ = await make_user(app_client, "bob")
    room_id = await make_room(app_client, alice)
    since = (await sync(app_client, token, use_state_after=True))["next_batch"]

    # Only messages: state_after is present and empty (required even if empty).
    await send(app_client, room_id, alice, "hello")
    body = await sync(app_client, token, since=since, use_state_after=True)
    room = body["rooms"]["join"][room_id]
    assert room["state_after"] == {"events": []}
    assert "state" not in room

    # A state change inside a non-limited timeline is in both timeline and state_after.
    topic = await state(app_client, room_id, alice, "m.room.topic", {"topic": "new"})
    await join_room(app_client, room_id, bob)
    body2 = await sync(app_client, token, since=body["next_batch"], use_state_after=True)
    room = body2["rooms"]["join"][room_id]
    after = keyed(room["state_after"]["events"])
    assert after[("m.room.topic", "")] == topic
    assert set(after) == {("m.room.topic", ""), ("m.room.member", bob)}
    assert [e["event_id"] for e in room["timeline"]["events"]][0] == topic
    # The classic form of the same range has an empty state section.
    classic = await sync(app_client, token, since=body["next_batch"])
    assert classic["rooms"]["join"][room_id]["state"] == {"events": []}

    # A limited timeline: state changed in the gap and in the timeline both appear.
    since3 = body2["next_batch"]
    name = await state(app_client, room_id, alice, "m.room.name", {"name": "gap"})
    for i in range(4):
        await send(app_client, room_id, alice, f"m{i}")
    topic2 = await state(app_client, room_id, alice, "m.room.topic", {"topic": "end"})
    flt = {"room": {"timeline": {"limit": 2}}}
    body3 = await sync(app_client, token, since=since3, filter=flt, use_state_after=True)
    room = body3["rooms"]["join"][room_id]
    assert room["timeline"]["limited"] is True
    assert keyed(room["state_after"]["events"]) == {
        ("m.room.name", ""): name,
        ("m.room.topic", ""): topic2,
    }
    classic = await sync(app_client, token, since=since3, filter=flt)
    assert keyed(classic["rooms"]["join"][room_id]["state"]["events"]) == {
        ("m.room.name", ""): name
    }


async def test_state_after_with_lazy_members(app_client: TestClient) -> None:
    alice, token, _ = await make_user(app_client, "alice")
    bob, _, _ = await make_user(app_client, "bob")
    carol, _, _ = await make_user(app_client, "carol")
    room_id = await make_room(app_client, alice)
    await join_room(app_client, room_id, bob)
    await join_room(app_client, room_id, carol)
    await send(app_client, room_id, bob, "from bob")
    flt = {"room": {"state": {"lazy_load_members": True}, "timeline": {"limit": 1}}}
    room = (await sync(app_client, token, filter=flt, use_state_after=True))["rooms"]["join"][
        room_id
    ]
    members = {k[1] for k in keyed(room["state_after"]["events"]) if k[0] == "m.room.member"}
    assert members == {alice, bob}  # the syncing user and the timeline's sender, not carol


async def test_use_state_after_must_be_boolean(app_client: TestClient) -> None:
    _, token, _ = await make_user(app_client, "alice")
    response = await app_client.get(SYNC, params={"use_state_after": "yes"}, headers=auth(token))
    assert response.status == 400
    assert (await response.json())["errcode"] == "M_INVALID_PARAM"


async def test_unread_thread_notifications_split_when_asked(app_client: TestClient) -> None:
    alice, _, _ = await make_user(app_client, "alice")
    bob, bob_token, _ = await make_user(app_client, "bob")
    carol, _, _ = await make_user(app_client, "carol")
    room_id = await make_room(app_client, alice)
    await join_room(app_client, room_id, bob)
    await join_room(app_client, room_id, carol)  # 3 members: plain messages notify
    root = await send(app_client, room_id, alice, "root")
    thread = {"m.relates_to": {"rel_type": "m.thread", "event_id": root}}
    await send(app_client, room_id, alice, "in thread 1", **thread)
    await send(app_client, room_id, alice, "in thread 2", **thread)

    plain = (await sync(app_client, bob_token))["rooms"]["join"][room_id]
    assert plain["unread_notifications"] == {"notification_count": 3, "highlight_count": 0}
    assert "unread_thread_notifications" not in plain

    flt = {"room": {"timeline": {"unread_thread_notifications": True}}}
    split = (await sync(app_client, bob_token, filter=flt))["rooms"]["join"][room_id]
    assert split["unread_notifications"] == {"notification_count": 1, "highlight_count": 0}
    assert split["unread_thread_notifications"] == {
        root: {"notification_count": 2, "highlight_count": 0}
    }


async def test_initial_sync_hides_history_before_join(app_client: TestClient) -> None:
    alice, _, _ = await make_user(app_client, "alice")
    bob, bob_token, _ = await make_user(app_client, "bob")
    room_id = await make_room(app_client, alice)
    await state(
        app_client, room_id, alice, "m.room.history_visibility", {"history_visibility": "joined"}
    )
    await send(app_client, room_id, alice, "secret before bob")
    await join_room(app_client, room_id, bob)
    await send(app_client, room_id, alice, "after bob joined")

    flt = {"room": {"timeline": {"limit": 3}}}
    room = (await sync(app_client, bob_token, filter=flt))["rooms"]["join"][room_id]
    # The last three events are the secret, bob's join and the reply: the secret goes.
    assert [(e["type"], e.get("state_key")) for e in room["timeline"]["events"]] == [
        ("m.room.member", bob),
        ("m.room.message", None),
    ]
    assert room["timeline"]["events"][1]["content"]["body"] == "after bob joined"
    assert room["timeline"]["limited"] is True
    assert ("m.room.history_visibility", "") in keyed(room["state"]["events"])

    # Without a limit: the room's setup (before 'joined' applied) stays visible, and
    # the visibility change counts with the older, more permissive setting.
    full = (await sync(app_client, bob_token))["rooms"]["join"][room_id]
    bodies = [e["content"].get("body") for e in full["timeline"]["events"]]
    assert "secret before bob" not in bodies and bodies[-1] == "after bob joined"
    assert [e["type"] for e in full["timeline"]["events"]][-3:] == [
        "m.room.history_visibility",
        "m.room.member",
        "m.room.message",
    ]

    # With the default 'shared' visibility the earlier messages are visible.
    room2 = await make_room(app_client, alice)
    await send(app_client, room2, alice, "shared before bob")
    await join_room(app_client, room2, bob)
    body = await sync(app_client, bob_token)
    bodies2 = [e["content"].get("body") for e in body["rooms"]["join"][room2]["timeline"]["events"]]
    assert "shared before bob" in bodies2


async def test_profile_change_reaches_other_members_through_sync(app_client: TestClient) -> None:
    alice, alice_token, _ = await make_user(app_client, "alice")
    bob, bob_token, _ = await make_user(app_client, "bob")
    room_id = await make_room(app_client, alice)
    await join_room(app_client, room_id, bob)
    since = await quiet_since(app_client, bob_token)

    response = await app_client.put(
        f"/_matrix/client/v3/profile/{alice}/displayname",
        json={"displayname": "Alice Liddell"},
        headers=auth(alice_token),
    )
    assert response.status == 200, await response.text()
    body = await sync(app_client, bob_token, since=since, timeout=5000)
    events = body["rooms"]["join"][room_id]["timeline"]["events"]
    member = [e for e in events if e["type"] == "m.room.member" and e["state_key"] == alice]
    assert len(member) == 1
    assert member[0]["content"]["displayname"] == "Alice Liddell"
    assert member[0]["content"]["membership"] == "join"
    assert member[0]["unsigned"]["prev_content"]["membership"] == "join"
    assert "Alice Liddell" not in json.dumps(member[0]["unsigned"]["prev_content"])
