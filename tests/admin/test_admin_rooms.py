"""The room admin API through HTTP: the room list, one room's details and contents,
and deleting rooms and history (with what users and the API see afterwards)."""

from __future__ import annotations

import asyncio
from typing import Any

from homeserver.appstate import ADMIN_JOBS, STORES
from tests.admin.conftest import AdminEnv
from tests.client.helpers import auth, join_room, make_user

CLIENT = "/_matrix/client/v3"


async def send(env: AdminEnv, room_id: str, token: str, body: str, txn: str) -> str:
    response = await env.client.put(
        f"{CLIENT}/rooms/{room_id}/send/m.room.message/{txn}",
        headers=auth(token),
        json={"msgtype": "m.text", "body": body},
    )
    assert response.status == 200, await response.text()
    return (await response.json())["event_id"]


async def set_state(env: AdminEnv, room_id: str, event_type: str, content: dict[str, Any]) -> None:
    response = await env.client.put(
        f"{CLIENT}/rooms/{room_id}/state/{event_type}", headers=env.admin, json=content
    )
    assert response.status == 200, await response.text()


async def create_room(env: AdminEnv, **body: Any) -> str:
    response = await env.client.post(f"{CLIENT}/createRoom", headers=env.admin, json=body)
    assert response.status == 200, await response.text()
    return (await response.json())["room_id"]


async def test_room_list_shows_state_and_counts(env: AdminEnv) -> None:
    lounge = await create_room(
        env, name="Lounge", preset="public_chat", room_alias_name="lounge", visibility="public"
    )
    secret = await create_room(
        env,
        name="secret",
        initial_state=[
            {"type": "m.room.encryption", "content": {"algorithm": "m.megolm.v1.aes-sha2"}}
        ],
    )
    await create_room(env, creation_content={"type": "m.space", "m.federate": False})
    await join_room(env.client, lounge, env.user_id)
    await env.client.server.app[STORES].current_state.get_users_in_room(lounge)

    status, body = await env.call("GET", "/v1/rooms")
    assert status == 200
    assert body["total_rooms"] == 3 and body["offset"] == 0
    by_id = {r["room_id"]: r for r in body["rooms"]}
    room = by_id[lounge]
    assert room["name"] == "Lounge"
    assert room["canonical_alias"] == "#lounge:test.local"
    assert room["joined_members"] == 2 and room["joined_local_members"] == 2
    assert room["public"] is True and room["join_rules"] == "public"
    assert room["federatable"] is True and room["encryption"] is None
    assert room["creator"] == env.admin_id and room["version"] == "12"
    assert room["state_events"] >= 6
    assert by_id[secret]["encryption"] == "m.megolm.v1.aes-sha2"
    space = next(r for r in body["rooms"] if r["room_type"] == "m.space")
    assert space["federatable"] is False and space["name"] is None
    # Named rooms first, alphabetically (case as stored), unnamed last.
    assert [r["name"] for r in body["rooms"]] == ["Lounge", "secret", None]

    status, body = await env.call("GET", "/v1/rooms?search_term=LOUN")
    assert [r["room_id"] for r in body["rooms"]] == [lounge]
    status, body = await env.call("GET", f"/v1/rooms?search_term={lounge}")
    assert [r["room_id"] for r in body["rooms"]] == [lounge]
    status, body = await env.call("GET", "/v1/rooms?order_by=joined_members&limit=1")
    assert [r["room_id"] for r in body["rooms"]] == [lounge]
    assert body["next_batch"] == 1 and "prev_batch" not in body
    status, body = await env.call("GET", "/v1/rooms?order_by=joined_members&limit=1&from=2")
    assert body["prev_batch"] == 1 and "next_batch" not in body
    status, body = await env.call("GET", "/v1/rooms?public_rooms=true")
    assert [r["room_id"] for r in body["rooms"]] == [lounge]

    # A rename shows up in the next listing (no waiting for the background task).
    await set_state(env, lounge, "m.room.name", {"name": "Big Lounge"})
    status, body = await env.call("GET", "/v1/rooms?search_term=big")
    assert [r["name"] for r in body["rooms"]] == ["Big Lounge"]


async def test_room_details_members_state(env: AdminEnv) -> None:
    room_id = await create_room(env, name="Details", topic="All about it", preset="public_chat")
    await join_room(env.client, room_id, env.user_id)
    status, body = await env.call("GET", f"/v1/rooms/{room_id}")
    assert status == 200
    assert body["name"] == "Details" and body["topic"] == "All about it"
    assert body["joined_local_devices"] == 2 and body["forgotten"] is False
    assert body["tombstoned"] is False and body["replacement_room"] is None
    status, body = await env.call("GET", f"/v1/rooms/{room_id}/members")
    assert body == {"members": sorted([env.admin_id, env.user_id]), "total": 2}
    status, body = await env.call("GET", f"/v1/rooms/{room_id}/state")
    types = {e["type"] for e in body["state"]}
    assert {"m.room.create", "m.room.member", "m.room.name", "m.room.power_levels"} <= types
    assert all("event_id" in e and "sender" in e for e in body["state"])
    status, body = await env.call("GET", f"/v1/rooms/{room_id}/state?type=m.room.member")
    assert {e["state_key"] for e in body["state"]} == {env.admin_id, env.user_id}


async def test_room_messages_see_everything(env: AdminEnv) -> None:
    """The admin reads a private room with joined-only history they never joined."""
    carol_id, carol_token, _ = await make_user(env.client, "carol")
    response = await env.client.post(
        f"{CLIENT}/createRoom",
        headers=auth(carol_token),
        json={
            "initial_state": [
                {"type": "m.room.history_visibility", "content": {"history_visibility": "joined"}}
            ]
        },
    )
    room_id = (await response.json())["room_id"]
    ids = [await send(env, room_id, carol_token, f"m{i}", f"t{i}") for i in range(5)]
    status, body = await env.call("GET", f"/v1/rooms/{room_id}/messages?dir=b&limit=3")
    assert status == 200
    assert [e["event_id"] for e in body["chunk"]] == ids[::-1][:3]
    status, page2 = await env.call(
        "GET", f"/v1/rooms/{room_id}/messages?dir=b&limit=3&from={body['end']}"
    )
    assert [e["event_id"] for e in page2["chunk"]][:2] == ids[::-1][3:5]
    status, body = await env.call("GET", f"/v1/rooms/{room_id}/messages?limit=50")
    assert [e["event_id"] for e in body["chunk"] if e["type"] == "m.room.message"] == ids
    status, body = await env.call("GET", f"/v1/rooms/{room_id}/context/{ids[2]}?limit=2")
    assert body["event"]["event_id"] == ids[2]
    # The same reads through the client API are refused to the admin.
    response = await env.client.get(f"{CLIENT}/rooms/{room_id}/messages", headers=env.admin)
    assert response.status == 403
    status, body = await env.call("GET", f"/v1/rooms/{room_id}/messages?filter=notjson")
    assert status == 400
    assert carol_id


async def test_forward_extremities(env: AdminEnv) -> None:
    room_id = await create_room(env, room_alias_name="fx")
    stores = env.client.server.app[STORES]
    status, body = await env.call("GET", f"/v1/rooms/{room_id}/forward_extremities")
    assert body["count"] == 1
    (only,) = body["results"]
    assert set(only) == {"event_id", "state_group", "depth", "received_ts"}
    # Fork the room's tips by hand: two extremities (as after a federation split).
    old = (await stores.events.get_forward_extremities(room_id))[0]
    first = await send(env, room_id, env.admin_token, "one", "x1")
    await stores.events.update_forward_extremities(room_id, [old], [])
    status, body = await env.call("GET", "/v1/rooms/%23fx:test.local/forward_extremities")
    assert body["count"] == 2
    status, body = await env.call("DELETE", f"/v1/rooms/{room_id}/forward_extremities")
    assert body == {"deleted": 1}
    assert await stores.events.get_forward_extremities(room_id) == [first]
    status, body = await env.call("DELETE", f"/v1/rooms/{room_id}/forward_extremities")
    assert body == {"deleted": 0}
    await send(env, room_id, env.admin_token, "still works", "x2")


async def test_make_room_admin_and_join(env: AdminEnv) -> None:
    carol_id, carol_token, _ = await make_user(env.client, "carol")
    response = await env.client.post(
        f"{CLIENT}/createRoom", headers=auth(carol_token), json={"preset": "private_chat"}
    )
    room_id = (await response.json())["room_id"]
    status, body = await env.call("POST", f"/v1/rooms/{room_id}/make_room_admin", json={})
    assert (status, body) == (200, {})
    state = await env.client.get(
        f"{CLIENT}/rooms/{room_id}/state/m.room.power_levels", headers=auth(carol_token)
    )
    levels = await state.json()
    assert levels["users"][env.admin_id] == 100
    # Not in a private room: invited, so the admin can now join and act.
    stores = env.client.server.app[STORES]
    assert await stores.current_state.get_membership(room_id, env.admin_id) == "invite"
    # Joining a user to a private room: a local member with the power invites them.
    status, body = await env.call("POST", f"/v1/join/{room_id}", json={"user_id": env.user_id})
    assert (status, body) == (200, {"room_id": room_id})
    assert await stores.current_state.get_membership(room_id, env.user_id) == "join"
    status, body = await env.call(
        "POST", f"/v1/join/{room_id}", json={"user_id": "@x:elsewhere.example"}
    )
    assert status == 400
    assert carol_id


async def test_block_room(env: AdminEnv) -> None:
    room_id = await create_room(env, preset="public_chat")
    status, body = await env.call("GET", f"/v1/rooms/{room_id}/block")
    assert body == {"block": False}
    status, body = await env.call("PUT", f"/v1/rooms/{room_id}/block", json={"block": True})
    assert body == {"block": True}
    status, body = await env.call("GET", f"/v1/rooms/{room_id}/block")
    assert body == {"block": True, "user_id": env.admin_id}
    response = await env.client.post(f"{CLIENT}/join/{room_id}", headers=env.user, json={})
    assert response.status == 403 and "blocked" in (await response.json())["error"]
    response = await env.client.post(
        f"{CLIENT}/rooms/{room_id}/invite", headers=env.admin, json={"user_id": env.user_id}
    )
    assert response.status == 403
    # A room this server never saw can be blocked ahead of time.
    status, body = await env.call(
        "PUT", "/v1/rooms/!future:elsewhere.example/block", json={"block": True}
    )
    assert body == {"block": True}
    status, body = await env.call("PUT", f"/v1/rooms/{room_id}/block", json={"block": False})
    response = await env.client.post(f"{CLIENT}/join/{room_id}", headers=env.user, json={})
    assert response.status == 200


async def test_delete_room_v2_kicks_purges_and_blocks(env: AdminEnv) -> None:
    client = env.client
    room_id = await create_room(env, name="Doomed", preset="public_chat", room_alias_name="doomed")
    await join_room(client, room_id, env.user_id)
    event_id = await send(env, room_id, env.user_token, "hello", "d1")
    response = await client.get(f"{CLIENT}/sync", headers=env.user)
    since = (await response.json())["next_batch"]

    status, body = await env.call(
        "DELETE",
        f"/v2/rooms/{room_id}",
        json={"block": True, "new_room_user_id": "@moderator:test.local", "message": "Gone."},
    )
    assert status == 200
    delete_id = body["delete_id"]
    await client.server.app[ADMIN_JOBS].wait_idle()

    status, body = await env.call("GET", f"/v2/rooms/delete_status/{delete_id}")
    assert body["status"] == "complete" and body["room_id"] == room_id
    result = body["shutdown_room"]
    assert sorted(result["kicked_users"]) == sorted([env.admin_id, env.user_id])
    assert result["failed_to_kick_users"] == []
    assert result["local_aliases"] == ["#doomed:test.local"]
    new_room = result["new_room_id"]
    status, by_room = await env.call("GET", f"/v2/rooms/{room_id}/delete_status")
    assert [r["delete_id"] for r in by_room["results"]] == [delete_id]

    # The user left (their sync says so), and landed in the replacement room,
    # where the moderator explains and they cannot speak.
    response = await client.get(f"{CLIENT}/sync?since={since}", headers=env.user)
    sync = await response.json()
    assert room_id not in sync["rooms"].get("join", {})
    response = await client.get(f"{CLIENT}/joined_rooms", headers=env.user)
    assert await response.json() == {"joined_rooms": [new_room]}
    assert new_room in sync["rooms"]["join"]
    timeline = sync["rooms"]["join"][new_room]["timeline"]["events"]
    assert any(e["content"].get("body") == "Gone." for e in timeline)
    response = await client.put(
        f"{CLIENT}/rooms/{new_room}/send/m.room.message/z1",
        headers=env.user,
        json={"msgtype": "m.text", "body": "hey"},
    )
    assert response.status == 403
    # The alias now leads to the replacement room.
    response = await client.get(f"{CLIENT}/directory/room/%23doomed:test.local")
    assert (await response.json())["room_id"] == new_room

    # Nothing of the old room is served any more.
    response = await client.get(f"{CLIENT}/rooms/{room_id}/event/{event_id}", headers=env.user)
    assert response.status in (403, 404)
    status, answer = await env.call("GET", f"/v1/rooms/{room_id}")
    assert (status, answer["errcode"]) == (404, "M_NOT_FOUND")
    status, answer = await env.call("GET", f"/v1/rooms/{room_id}/messages")
    assert status == 404
    status, rooms = await env.call("GET", "/v1/rooms")
    assert room_id not in [r["room_id"] for r in rooms["rooms"]]
    stores = client.server.app[STORES]
    assert await stores.events.get_event(event_id) is None
    assert await stores.rooms.get_room_version(room_id) is None
    for table in ("events", "current_state", "room_memberships", "state_groups", "receipts"):
        count = await stores.db.fetchval(
            f"SELECT COUNT(*) FROM {table} WHERE room_id = $1", room_id
        )
        assert count == 0, table
    # ... and it stays blocked: nobody local can come back.
    response = await client.post(f"{CLIENT}/join/{room_id}", headers=env.user, json={})
    assert response.status in (403, 404)
    status, block = await env.call("GET", f"/v1/rooms/{room_id}/block")
    assert block["block"] is True

    status, tasks = await env.call("GET", f"/v1/scheduled_tasks?resource_id={room_id}")
    assert [t["id"] for t in tasks["scheduled_tasks"]] == [delete_id]
    assert tasks["scheduled_tasks"][0]["action"] == "shutdown_and_purge_room"
    assert tasks["scheduled_tasks"][0]["status"] == "complete"


async def test_delete_room_v1_is_synchronous(env: AdminEnv) -> None:
    room_id = await create_room(env)
    status, body = await env.call("DELETE", f"/v1/rooms/{room_id}", json={})
    assert status == 200
    assert body["kicked_users"] == [env.admin_id] and body["new_room_id"] is None
    assert await env.client.server.app[STORES].rooms.get_room_version(room_id) is None
    status, answer = await env.call("DELETE", f"/v2/rooms/{room_id}", json={})
    assert (status, answer["errcode"]) == (404, "M_NOT_FOUND")  # gone, and not blocking
    status, body = await env.call(
        "DELETE", "/v2/rooms/!unknown:elsewhere.example", json={"block": True}
    )
    assert status == 200  # an unknown room can still be blocked
    await env.client.server.app[ADMIN_JOBS].wait_idle()


async def test_delete_without_purge_keeps_the_data(env: AdminEnv) -> None:
    room_id = await create_room(env, preset="public_chat")
    await join_room(env.client, room_id, env.user_id)
    status, body = await env.call("DELETE", f"/v1/rooms/{room_id}", json={"purge": False})
    assert status == 200 and set(body["kicked_users"]) == {env.admin_id, env.user_id}
    status, details = await env.call("GET", f"/v1/rooms/{room_id}")
    assert status == 200 and details["joined_members"] == 0


async def test_purge_history(env: AdminEnv) -> None:
    client = env.client
    carol_id, carol_token, _ = await make_user(client, "carol")
    room_id = await create_room(env, preset="public_chat")
    await join_room(client, room_id, carol_id)
    ids = [await send(env, room_id, carol_token, f"old {i}", f"o{i}") for i in range(4)]
    keep = await send(env, room_id, carol_token, "recent", "r1")
    status, body = await env.call(
        "POST",
        f"/v1/purge_history/{room_id}",
        json={"purge_up_to_event_id": keep, "delete_local_events": True},
    )
    assert status == 200
    purge_id = body["purge_id"]
    await client.server.app[ADMIN_JOBS].wait_idle()
    status, body = await env.call("GET", f"/v1/purge_history_status/{purge_id}")
    assert body == {"status": "complete"}
    status, body = await env.call("GET", f"/v1/rooms/{room_id}/messages?limit=100")
    remaining = [e["event_id"] for e in body["chunk"] if e["type"] == "m.room.message"]
    assert remaining == [keep]
    # State survived: the room still works and its members are intact.
    status, members = await env.call("GET", f"/v1/rooms/{room_id}/members")
    assert carol_id in members["members"]
    await send(env, room_id, carol_token, "after the purge", "a1")
    assert await client.server.app[STORES].events.get_event(ids[0]) is None

    # Local events are kept unless delete_local_events.
    more = await send(env, room_id, carol_token, "local", "l1")
    last = await send(env, room_id, carol_token, "last", "l2")
    status, body = await env.call("POST", f"/v1/purge_history/{room_id}/{last}", json={})
    await client.server.app[ADMIN_JOBS].wait_idle()
    assert await client.server.app[STORES].events.get_event(more) is not None
    status, answer = await env.call(
        "POST", f"/v1/purge_history/{room_id}", json={"purge_up_to_event_id": "$elsewhere"}
    )
    assert status == 400
    status, answer = await env.call("POST", f"/v1/purge_history/{room_id}", json={})
    assert status == 400
    status, answer = await env.call("GET", "/v1/purge_history_status/nope")
    assert (status, answer["errcode"]) == (404, "M_NOT_FOUND")
    await asyncio.sleep(0)
