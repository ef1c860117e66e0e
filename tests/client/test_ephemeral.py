"""Typing, receipts, read markers and presence, each checked through /sync."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp.test_utils import TestClient

from federation.appkeys import SENDER
from homeserver.appstate import LOCAL_EVENTS, PRESENCE, RECEIPTS, TYPING
from tests.client.helpers import auth, deployed, eventually, join_room, make_room, make_user

V3 = "/_matrix/client/v3"


async def sync(client: TestClient, token: str, **params: Any) -> dict[str, Any]:
    query = {k: (json.dumps(v) if isinstance(v, dict) else str(v)) for k, v in params.items()}
    response = await client.get(f"{V3}/sync", params=query, headers=auth(token))
    assert response.status == 200
    return await response.json()


async def two_users_in_a_room(client: TestClient) -> tuple[str, str, str, str, str]:
    alice, alice_token, _ = await make_user(client, "alice")
    bob, bob_token, _ = await make_user(client, "bob")
    room_id = await make_room(client, alice)
    await join_room(client, room_id, bob)
    return alice, alice_token, bob, bob_token, room_id


def ephemeral(body: dict[str, Any], room_id: str) -> list[dict[str, Any]]:
    return body["rooms"]["join"].get(room_id, {}).get("ephemeral", {}).get("events", [])


async def test_typing_round_trip_and_long_poll(app_client: TestClient) -> None:
    alice, alice_token, bob, bob_token, room_id = await two_users_in_a_room(app_client)
    since = (await sync(app_client, bob_token))["next_batch"]
    waiter = asyncio.create_task(sync(app_client, bob_token, since=since, timeout=5000))
    await asyncio.sleep(0.1)
    response = await app_client.put(
        f"{V3}/rooms/{room_id}/typing/{alice}",
        json={"typing": True, "timeout": 10000},
        headers=auth(alice_token),
    )
    assert response.status == 200 and await response.json() == {}
    body = await asyncio.wait_for(waiter, 3)
    # In a worker deployment the long-poll may wake first for Bob's own presence (his
    # reader hears it back from the main); a client long-polls again from there.
    for _ in range(3):
        if not deployed(app_client) or ephemeral(body, room_id):
            break
        body = await asyncio.wait_for(
            sync(app_client, bob_token, since=body["next_batch"], timeout=2000), 3
        )
    assert ephemeral(body, room_id) == [{"type": "m.typing", "content": {"user_ids": [alice]}}]

    await app_client.put(
        f"{V3}/rooms/{room_id}/typing/{alice}", json={"typing": False}, headers=auth(alice_token)
    )
    since = body["next_batch"]
    body = await eventually(
        app_client,
        lambda: sync(app_client, bob_token, since=since),
        lambda body: bool(ephemeral(body, room_id)),
    )
    assert ephemeral(body, room_id) == [{"type": "m.typing", "content": {"user_ids": []}}]
    # nothing changed since: the room is not repeated
    again = await sync(app_client, bob_token, since=body["next_batch"])
    assert room_id not in again["rooms"]["join"]


async def test_typing_times_out(app_client: TestClient) -> None:
    alice, alice_token, _, bob_token, room_id = await two_users_in_a_room(app_client)
    stopped = [{"type": "m.typing", "content": {"user_ids": []}}]
    if deployed(app_client):
        # Alice's client says she types for a second; the main times her out and tells
        # the reader serving Bob (the service itself is in the main's memory).
        response = await app_client.put(
            f"{V3}/rooms/{room_id}/typing/{alice}",
            json={"typing": True, "timeout": 1000},
            headers=auth(alice_token),
        )
        assert response.status == 200, await response.text()
        body = await eventually(
            app_client,
            lambda: sync(app_client, bob_token),
            lambda b: bool(ephemeral(b, room_id)),
        )
        assert ephemeral(body, room_id)[0]["content"]["user_ids"] == [alice]
        since = body["next_batch"]
        body = await eventually(
            app_client,
            lambda: sync(app_client, bob_token, since=since, timeout=1000),
            lambda b: bool(ephemeral(b, room_id)),
        )
        assert ephemeral(body, room_id) == stopped
        return
    app_client.server.app[TYPING].set_remote(room_id, alice, True, timeout_ms=50)
    body = await sync(app_client, bob_token)
    assert ephemeral(body, room_id)[0]["content"]["user_ids"] == [alice]
    await asyncio.sleep(0.1)
    body = await sync(app_client, bob_token, since=body["next_batch"])
    assert ephemeral(body, room_id) == stopped


async def test_typing_errors(app_client: TestClient) -> None:
    alice, alice_token, bob, _, room_id = await two_users_in_a_room(app_client)
    carol, carol_token, _ = await make_user(app_client, "carol")
    cases = [
        (alice_token, bob, {"typing": True}, 403, "M_FORBIDDEN"),
        (carol_token, carol, {"typing": True}, 403, "M_FORBIDDEN"),
        (alice_token, alice, {"typing": "yes"}, 400, "M_BAD_JSON"),
        (alice_token, alice, {"typing": True, "timeout": "x"}, 400, "M_BAD_JSON"),
    ]
    for token, user, body, status, errcode in cases:
        response = await app_client.put(
            f"{V3}/rooms/{room_id}/typing/{user}", json=body, headers=auth(token)
        )
        assert response.status == status, body
        assert (await response.json())["errcode"] == errcode


async def test_receipts_public_private_threaded(app_client: TestClient) -> None:
    alice, alice_token, bob, bob_token, room_id = await two_users_in_a_room(app_client)
    event = await app_client.server.app[LOCAL_EVENTS].send(
        room_id, alice, "m.room.message", {"msgtype": "m.text", "body": "read me"}
    )
    bob_since = (await sync(app_client, bob_token))["next_batch"]
    alice_since = (await sync(app_client, alice_token))["next_batch"]
    base = f"{V3}/rooms/{room_id}/receipt"
    response = await app_client.post(
        f"{base}/m.read/{event.event_id}", json={"thread_id": "main"}, headers=auth(alice_token)
    )
    assert response.status == 200 and await response.json() == {}
    response = await app_client.post(
        f"{base}/m.read.private/{event.event_id}", json={}, headers=auth(alice_token)
    )
    assert response.status == 200

    body = await sync(app_client, bob_token, since=bob_since)
    (receipt,) = ephemeral(body, room_id)
    assert receipt["type"] == "m.receipt"
    data = receipt["content"][event.event_id]
    assert list(data) == ["m.read"]  # the private receipt is not shown to bob
    assert data["m.read"][alice]["thread_id"] == "main"
    assert isinstance(data["m.read"][alice]["ts"], int)

    mine = await sync(app_client, alice_token, since=alice_since)
    (receipt,) = ephemeral(mine, room_id)
    assert set(receipt["content"][event.event_id]) == {"m.read", "m.read.private"}

    bad = await app_client.post(
        f"{base}/m.read/{event.event_id}", json={"thread_id": 5}, headers=auth(alice_token)
    )
    assert bad.status == 400 and (await bad.json())["errcode"] == "M_INVALID_PARAM"
    bad = await app_client.post(
        f"{base}/m.bogus/{event.event_id}", json={}, headers=auth(alice_token)
    )
    assert bad.status == 400
    missing = await app_client.post(f"{base}/m.read/$nope", json={}, headers=auth(alice_token))
    assert missing.status == 404


async def test_read_markers_set_fully_read_and_receipt(app_client: TestClient) -> None:
    alice, alice_token, _, _, room_id = await two_users_in_a_room(app_client)
    event = await app_client.server.app[LOCAL_EVENTS].send(
        room_id, alice, "m.room.message", {"msgtype": "m.text", "body": "x"}
    )
    since = (await sync(app_client, alice_token))["next_batch"]
    response = await app_client.post(
        f"{V3}/rooms/{room_id}/read_markers",
        json={"m.fully_read": event.event_id, "m.read": event.event_id},
        headers=auth(alice_token),
    )
    assert response.status == 200

    def both(body: dict[str, Any]) -> bool:
        room = body["rooms"]["join"].get(room_id, {})
        return bool(room.get("account_data", {}).get("events")) and bool(ephemeral(body, room_id))

    # (A deployment's reader may hear of the main's two writes one after the other.)
    body = await eventually(app_client, lambda: sync(app_client, alice_token, since=since), both)
    room = body["rooms"]["join"][room_id]
    assert room["account_data"]["events"] == [
        {"type": "m.fully_read", "content": {"event_id": event.event_id}}
    ]
    (receipt,) = room["ephemeral"]["events"]
    assert alice in receipt["content"][event.event_id]["m.read"]
    response = await app_client.get(
        f"{V3}/user/{alice}/rooms/{room_id}/account_data/m.fully_read", headers=auth(alice_token)
    )
    assert await response.json() == {"event_id": event.event_id}


async def test_presence_round_trip_and_visibility(app_client: TestClient) -> None:
    alice, alice_token, bob, bob_token, _ = await two_users_in_a_room(app_client)
    _, stranger_token, _ = await make_user(app_client, "stranger")
    since = (await sync(app_client, bob_token, set_presence="offline"))["next_batch"]
    response = await app_client.put(
        f"{V3}/presence/{alice}/status",
        json={"presence": "unavailable", "status_msg": "lunch"},
        headers=auth(alice_token),
    )
    assert response.status == 200
    response = await app_client.get(f"{V3}/presence/{alice}/status", headers=auth(bob_token))
    body = await response.json()
    assert body["presence"] == "unavailable" and body["status_msg"] == "lunch"
    assert isinstance(body["last_active_ago"], int)

    synced = await sync(app_client, bob_token, since=since, set_presence="offline")
    events = [e for e in synced["presence"]["events"] if e["sender"] == alice]
    assert events[0]["type"] == "m.presence"
    assert events[0]["content"]["presence"] == "unavailable"
    assert events[0]["content"]["status_msg"] == "lunch"

    hidden = await sync(app_client, stranger_token, set_presence="offline")
    assert [e for e in hidden["presence"]["events"] if e["sender"] == alice] == []
    response = await app_client.get(f"{V3}/presence/{alice}/status", headers=auth(stranger_token))
    assert response.status == 403
    response = await app_client.put(
        f"{V3}/presence/{alice}/status", json={"presence": "away"}, headers=auth(alice_token)
    )
    assert response.status == 400
    response = await app_client.put(
        f"{V3}/presence/{bob}/status", json={"presence": "online"}, headers=auth(alice_token)
    )
    assert response.status == 403


async def test_remote_updates_and_outbound_edus(app_client: TestClient) -> None:
    app = app_client.server.app
    alice, alice_token, _, bob_token, room_id = await two_users_in_a_room(app_client)
    sent: list[tuple[str, dict, list[str]]] = []

    async def record(destinations: list[str], edu_type: str, content: dict) -> None:
        sent.append((edu_type, content, destinations))

    app[SENDER].send_edu = record  # type: ignore[method-assign]
    remote = "@zed:remote.example"
    # Only local servers are in the room: local updates produce no EDUs.
    await app_client.put(
        f"{V3}/rooms/{room_id}/typing/{alice}", json={"typing": True}, headers=auth(alice_token)
    )
    assert sent == []

    since = (await sync(app_client, bob_token))["next_batch"]
    app[TYPING].set_remote(room_id, remote, True)
    event = await app[LOCAL_EVENTS].send(room_id, alice, "m.room.message", {"body": "r"})
    await app[RECEIPTS].apply_remote(room_id, "m.read", remote, [event.event_id], {"ts": 123})
    await app[PRESENCE].set_remote(remote, "online", "hi", last_active_ago=1000)
    body = await sync(app_client, bob_token, since=since)
    events = {e["type"]: e for e in ephemeral(body, room_id)}
    assert set(events["m.typing"]["content"]["user_ids"]) == {alice, remote}
    assert events["m.receipt"]["content"] == {event.event_id: {"m.read": {remote: {"ts": 123}}}}
    assert app[PRESENCE].get(remote).status_msg == "hi"
