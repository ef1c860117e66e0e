"""The deprecated reads Element still uses to preview rooms (issue 13): /rooms/{id}/
initialSync and /events/{eventId}, with the access of /messages: an outsider previews a
world-readable room (no membership), never a private one."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.client.helpers import auth, make_user

V3 = "/_matrix/client/v3"


async def _get(client: Any, path: str, token: str) -> tuple[int, Any]:
    resp = await client.get(f"{V3}{path}", headers=auth(token))
    return resp.status, await resp.json()


async def test_preview_of_world_readable_and_private_rooms(app_client) -> None:
    _, atok, _ = await make_user(app_client, "alice")
    _, btok, _ = await make_user(app_client, "bob")
    hv = {
        "type": "m.room.history_visibility",
        "state_key": "",
        "content": {"history_visibility": "world_readable"},
    }
    resp = await app_client.post(
        f"{V3}/createRoom",
        json={"preset": "public_chat", "name": "Open", "initial_state": [hv]},
        headers=auth(atok),
    )
    open_room = (await resp.json())["room_id"]
    resp = await app_client.post(
        f"{V3}/createRoom", json={"preset": "private_chat"}, headers=auth(atok)
    )
    private = (await resp.json())["room_id"]
    ids = {}
    for room in (open_room, private):
        for i in range(3):
            resp = await app_client.put(
                f"{V3}/rooms/{room}/send/m.room.message/{room[-4:]}{i}",
                json={"msgtype": "m.text", "body": f"m{i}"},
                headers=auth(atok),
            )
            ids[(room, i)] = (await resp.json())["event_id"]

    status, body = await _get(app_client, f"/rooms/{open_room}/initialSync?limit=2", btok)
    assert status == 200, body
    assert [e["content"]["body"] for e in body["messages"]["chunk"]] == ["m1", "m2"]
    assert "membership" not in body and body["room_id"] == open_room
    assert any(
        e["type"] == "m.room.name" and e["content"] == {"name": "Open"} for e in body["state"]
    )
    # The start token pages further back with /messages.
    status, older = await _get(
        app_client,
        f"/rooms/{open_room}/messages?dir=b&limit=1&from={body['messages']['start']}",
        btok,
    )
    assert status == 200 and [e["content"]["body"] for e in older["chunk"]] == ["m0"]
    status, body = await _get(app_client, f"/rooms/{open_room}/initialSync", atok)
    assert body["membership"] == "join"

    status, body = await _get(app_client, f"/rooms/{private}/initialSync", btok)
    assert (status, body["errcode"]) == (403, "M_FORBIDDEN")

    status, body = await _get(app_client, f"/events/{ids[(open_room, 0)]}", btok)
    assert status == 200 and body["content"]["body"] == "m0"
    status, body = await _get(app_client, f"/events/{ids[(private, 0)]}", btok)
    assert (status, body["errcode"]) == (404, "M_NOT_FOUND")
    status, body = await _get(app_client, f"/events/{ids[(private, 0)]}", atok)
    assert status == 200 and body["room_id"] == private


async def test_peeking_stream_of_a_world_readable_room(app_client) -> None:
    """GET /events?room_id=: an outsider long-polls a world-readable room and gets the
    new message; a private room is refused; no room_id is not served."""

    _, atok, _ = await make_user(app_client, "alice")
    _, btok, _ = await make_user(app_client, "bob")
    hv = {
        "type": "m.room.history_visibility",
        "state_key": "",
        "content": {"history_visibility": "world_readable"},
    }
    resp = await app_client.post(
        f"{V3}/createRoom",
        json={"preset": "public_chat", "initial_state": [hv]},
        headers=auth(atok),
    )
    room = (await resp.json())["room_id"]
    status, first = await _get(app_client, f"/events?room_id={room}&timeout=0", btok)
    assert status == 200 and first["chunk"] == []

    async def later() -> None:
        await asyncio.sleep(0.3)
        await app_client.put(
            f"{V3}/rooms/{room}/send/m.room.message/late",
            json={"msgtype": "m.text", "body": "hello peeker"},
            headers=auth(atok),
        )

    sender = asyncio.ensure_future(later())
    status, body = await _get(
        app_client, f"/events?room_id={room}&from={first['end']}&timeout=5000", btok
    )
    await sender
    assert status == 200, body
    assert [e["content"]["body"] for e in body["chunk"]] == ["hello peeker"]
    status, again = await _get(app_client, f"/events?room_id={room}&from={body['end']}", btok)
    assert again["chunk"] == []

    resp = await app_client.post(
        f"{V3}/createRoom", json={"preset": "private_chat"}, headers=auth(atok)
    )
    private = (await resp.json())["room_id"]
    status, body = await _get(app_client, f"/events?room_id={private}", btok)
    assert (status, body["errcode"]) == (403, "M_FORBIDDEN")


async def test_global_event_stream_of_joined_rooms(app_client) -> None:
    """GET /events without room_id: every joined room's new events, long-polling, each
    event exactly once across calls, even with senders committing concurrently."""
    alice, atok, _ = await make_user(app_client, "alice")
    _, btok, _ = await make_user(app_client, "bob")
    rooms = []
    for _ in range(3):
        resp = await app_client.post(
            f"{V3}/createRoom", json={"preset": "public_chat"}, headers=auth(atok)
        )
        rooms.append((await resp.json())["room_id"])
    elsewhere = (
        await (await app_client.post(f"{V3}/createRoom", json={}, headers=auth(btok))).json()
    )["room_id"]
    status, first = await _get(app_client, "/events?timeout=0", atok)
    assert status == 200 and first["chunk"] == []

    async def later() -> None:
        await asyncio.sleep(0.2)
        await app_client.put(
            f"{V3}/rooms/{rooms[1]}/send/m.room.message/w1",
            json={"msgtype": "m.text", "body": "wake"},
            headers=auth(atok),
        )

    sender = asyncio.ensure_future(later())
    status, woken = await _get(app_client, f"/events?from={first['end']}&timeout=5000", atok)
    await sender
    assert status == 200, woken
    assert [(e["room_id"], e["content"]["body"]) for e in woken["chunk"]] == [(rooms[1], "wake")]

    async def send_many(room: str, token: str, prefix: str) -> None:
        for i in range(20):
            await app_client.put(
                f"{V3}/rooms/{room}/send/m.room.message/{prefix}{i}",
                json={"msgtype": "m.text", "body": f"{prefix}{i}"},
                headers=auth(token),
            )

    async def follow(stop: asyncio.Event) -> list[str]:
        seen: list[str] = []
        token = woken["end"]
        while True:
            done = stop.is_set()
            status, page = await _get(app_client, f"/events?from={token}&timeout=200", atok)
            assert status == 200, page
            seen += [e["content"]["body"] for e in page["chunk"]]
            token = page["end"]
            if done and not page["chunk"]:
                return seen

    stop = asyncio.Event()
    reader = asyncio.ensure_future(follow(stop))
    await asyncio.gather(
        *(send_many(r, atok, f"r{i}-") for i, r in enumerate(rooms)),
        send_many(elsewhere, btok, "other-"),
    )
    stop.set()
    seen = await reader
    expected = {f"r{i}-{n}" for i in range(3) for n in range(20)}
    assert sorted(seen) == sorted(expected)  # all of alice's rooms, once; none of bob's


async def test_global_initial_sync_lists_joined_rooms(app_client) -> None:
    _, atok, _ = await make_user(app_client, "alice")
    resp = await app_client.post(
        f"{V3}/createRoom", json={"preset": "private_chat", "name": "Mine"}, headers=auth(atok)
    )
    room = (await resp.json())["room_id"]
    await app_client.put(
        f"{V3}/rooms/{room}/send/m.room.message/g1",
        json={"msgtype": "m.text", "body": "hi"},
        headers=auth(atok),
    )
    status, body = await _get(app_client, "/initialSync?limit=5", atok)
    assert status == 200, body
    (entry,) = body["rooms"]
    assert entry["room_id"] == room and entry["membership"] == "join"
    assert entry["messages"]["chunk"][-1]["content"]["body"] == "hi"
    assert entry["visibility"] == "private"
    # The end token continues with /sync.
    resp = await app_client.get(
        f"{V3}/sync", params={"since": body["end"], "timeout": "0"}, headers=auth(atok)
    )
    assert resp.status == 200


async def test_an_event_stream_long_poll_woken_by_typing_waits_for_an_event(app_client) -> None:
    """Typing wakes the room's long-polls, but /events shows room events only: the
    poll waits on for the message rather than answering an empty chunk at once (in a
    deployment, a client reader catching up on older writes woke it the same way)."""
    _, atok, _ = await make_user(app_client, "alice")
    bob, btok, _ = await make_user(app_client, "bob")
    resp = await app_client.post(
        f"{V3}/createRoom", json={"preset": "public_chat"}, headers=auth(atok)
    )
    room = (await resp.json())["room_id"]
    assert (await app_client.post(f"{V3}/join/{room}", headers=auth(btok))).status == 200
    typing_path = f"{V3}/rooms/{room}/typing/{bob}"

    async def type_then_send(txn: str) -> None:
        await asyncio.sleep(0.2)
        typing = {"typing": True, "timeout": 5000}
        resp = await app_client.put(typing_path, json=typing, headers=auth(btok))
        assert resp.status == 200
        await asyncio.sleep(0.3)
        await app_client.put(
            f"{V3}/rooms/{room}/send/m.room.message/{txn}",
            json={"msgtype": "m.text", "body": f"after typing {txn}"},
            headers=auth(btok),
        )

    for txn, query in (("peek", f"room_id={room}&"), ("global", "")):
        status, first = await _get(app_client, f"/events?{query}timeout=0", atok)
        assert status == 200
        sender = asyncio.ensure_future(type_then_send(txn))
        status, woken = await _get(
            app_client, f"/events?{query}from={first['end']}&timeout=5000", atok
        )
        await sender
        assert status == 200, woken
        assert [e["content"].get("body") for e in woken["chunk"]] == [f"after typing {txn}"]
        resp = await app_client.put(typing_path, json={"typing": False}, headers=auth(btok))
        assert resp.status == 200
