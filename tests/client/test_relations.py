"""/relations, /threads and bundled aggregations (threads, edits, references)."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from homeserver.appstate import LOCAL_EVENTS, RELATIONS
from tests.client.helpers import auth, deployed, eventually, join_room, make_room, make_user

V1 = "/_matrix/client/v1/rooms"


async def send(
    client: TestClient,
    room: str,
    sender: str,
    content: dict[str, Any],
    type_: str = "m.room.message",
) -> str:
    event = await client.server.app[LOCAL_EVENTS].send(room, sender, type_, content)
    return event.event_id


def text(body: str, **extra: Any) -> dict[str, Any]:
    return {"msgtype": "m.text", "body": body, **extra}


def rel(rel_type: str, target: str, **extra: Any) -> dict[str, Any]:
    return {"m.relates_to": {"rel_type": rel_type, "event_id": target, **extra}}


async def setup_room(client: TestClient) -> tuple[str, str, str, str, str]:
    alice, alice_token, _ = await make_user(client, "alice")
    bob, bob_token, _ = await make_user(client, "bob")
    room = await make_room(client, alice)
    await join_room(client, room, bob)
    return alice, alice_token, bob, bob_token, room


async def test_relations_endpoint_filters_and_paginates(app_client: TestClient) -> None:
    alice, token, bob, _, room = await setup_room(app_client)
    root = await send(app_client, room, alice, text("root"))
    t1 = await send(app_client, room, bob, text("t1", **rel("m.thread", root)))
    r1 = await send(app_client, room, bob, rel("m.annotation", root, key="👍"), "m.reaction")
    t2 = await send(app_client, room, alice, text("t2", **rel("m.thread", root)))
    ref = await send(app_client, room, bob, text("ref", **rel("m.reference", t1)))
    url = f"{V1}/{room}/relations/{root}"
    body = await (await app_client.get(url, headers=auth(token))).json()
    assert [e["event_id"] for e in body["chunk"]] == [t2, r1, t1]
    assert body["chunk"][0]["content"]["body"] == "t2" and body["chunk"][0]["room_id"] == room
    assert "next_batch" not in body and "recursion_depth" not in body
    body = await (await app_client.get(f"{url}/m.thread", headers=auth(token))).json()
    assert [e["event_id"] for e in body["chunk"]] == [t2, t1]
    body = await (
        await app_client.get(f"{url}/m.annotation/m.reaction", headers=auth(token))
    ).json()
    assert [e["event_id"] for e in body["chunk"]] == [r1]
    body = await (await app_client.get(f"{url}/m.thread/m.reaction", headers=auth(token))).json()
    assert body["chunk"] == []
    page1 = await (await app_client.get(url, params={"limit": "2"}, headers=auth(token))).json()
    assert [e["event_id"] for e in page1["chunk"]] == [t2, r1]
    page2 = await (
        await app_client.get(
            url, params={"limit": "2", "from": page1["next_batch"]}, headers=auth(token)
        )
    ).json()
    assert [e["event_id"] for e in page2["chunk"]] == [t1]
    assert "next_batch" not in page2
    forward = await (await app_client.get(url, params={"dir": "f"}, headers=auth(token))).json()
    assert [e["event_id"] for e in forward["chunk"]] == [t1, r1, t2]
    deep = await (await app_client.get(url, params={"recurse": "true"}, headers=auth(token))).json()
    assert [e["event_id"] for e in deep["chunk"]] == [ref, t2, r1, t1]
    assert deep["recursion_depth"] == 3
    # Errors: unknown event, bad params, outsider.
    r = await app_client.get(f"{V1}/{room}/relations/$nope", headers=auth(token))
    assert r.status == 404 and (await r.json())["errcode"] == "M_NOT_FOUND"
    r = await app_client.get(url, params={"dir": "x"}, headers=auth(token))
    assert r.status == 400
    r = await app_client.get(url, params={"from": "garbage"}, headers=auth(token))
    assert r.status == 400
    _, eve_token, _ = await make_user(app_client, "eve")
    r = await app_client.get(url, headers=auth(eve_token))
    assert r.status == 404


async def bundled(
    client: TestClient, room_id: str, event_id: str, user_id: str, token: str
) -> dict[str, Any]:
    """The relations service's bundle for `event_id` as `user_id` sees it (a deployment:
    as GET /event bundles it, on a client reader, which hears of relations a moment
    after they are written)."""
    if not deployed(client):
        bundles = await client.server.app[RELATIONS].bundle_aggregations([event_id], user_id)
        return bundles.get(event_id, {})

    async def read() -> dict[str, Any]:
        url = f"/_matrix/client/v3/rooms/{room_id}/event/{event_id}"
        response = await client.get(url, headers=auth(token))
        assert response.status == 200, await response.text()
        relations: dict[str, Any] = (await response.json())["unsigned"].get("m.relations", {})
        return relations

    return await eventually(client, read, lambda r: r.get("m.thread", {}).get("count") == 2)


async def test_bundled_aggregations(app_client: TestClient) -> None:
    alice, _, bob, bob_token, room = await setup_room(app_client)
    root = await send(app_client, room, alice, text("root"))
    await send(app_client, room, bob, text("t1", **rel("m.thread", root)))
    t2 = await send(app_client, room, bob, text("t2", **rel("m.thread", root)))
    edit_content = text("* better", **{"m.new_content": text("better")}, **rel("m.replace", root))
    edit1 = await send(app_client, room, alice, edit_content)
    edit2 = await send(app_client, room, alice, {**edit_content, "body": "* best"})
    # Invalid: another sender's edit; and an edit without m.new_content.
    await send(app_client, room, bob, edit_content)
    await send(app_client, room, alice, text("* nope", **rel("m.replace", root)))
    ref = await send(app_client, room, bob, text("see", **rel("m.reference", root)))
    agg = await bundled(app_client, room, root, bob, bob_token)
    assert agg["m.thread"]["count"] == 2
    assert agg["m.thread"]["current_user_participated"] is True
    assert agg["m.thread"]["latest_event"]["event_id"] == t2
    assert agg["m.thread"]["latest_event"]["content"]["body"] == "t2"
    # Both alice edits are valid with ordering by (origin_server_ts, event_id).
    assert agg["m.replace"]["event_id"] in (edit1, edit2)
    assert agg["m.replace"]["content"]["m.new_content"] == {"msgtype": "m.text", "body": "better"}
    assert agg["m.reference"] == {"chunk": [{"event_id": ref}]}
    carol, carol_token, _ = await make_user(app_client, "carol")
    await join_room(app_client, room, carol)
    other = await bundled(app_client, room, root, carol, carol_token)
    assert other["m.thread"]["current_user_participated"] is False
    url = f"/_matrix/client/v3/rooms/{room}/event/{t2}"
    if deployed(app_client):
        unsigned = (await (await app_client.get(url, headers=auth(bob_token))).json())["unsigned"]
        assert "m.relations" not in unsigned
    else:
        assert await app_client.server.app[RELATIONS].bundle_aggregations([t2], bob) == {}


async def test_threads_endpoint(app_client: TestClient) -> None:
    alice, alice_token, bob, bob_token, room = await setup_room(app_client)
    a = await send(app_client, room, alice, text("thread A"))
    b = await send(app_client, room, bob, text("thread B"))
    await send(app_client, room, alice, text("no thread"))
    await send(app_client, room, bob, text("in A", **rel("m.thread", a)))
    await send(app_client, room, alice, text("in B", **rel("m.thread", b)))
    url = f"{V1}/{room}/threads"
    body = await (await app_client.get(url, headers=auth(alice_token))).json()
    assert [e["event_id"] for e in body["chunk"]] == [b, a]
    thread = body["chunk"][0]["unsigned"]["m.relations"]["m.thread"]
    assert thread["count"] == 1 and thread["latest_event"]["content"]["body"] == "in B"
    page = await (
        await app_client.get(url, params={"limit": "1"}, headers=auth(alice_token))
    ).json()
    assert [e["event_id"] for e in page["chunk"]] == [b]
    rest = await (
        await app_client.get(
            url, params={"limit": "1", "from": page["next_batch"]}, headers=auth(alice_token)
        )
    ).json()
    assert [e["event_id"] for e in rest["chunk"]] == [a] and "next_batch" not in rest
    carol, carol_token, _ = await make_user(app_client, "carol")
    await join_room(app_client, room, carol)
    await send(app_client, room, carol, text("carol in A", **rel("m.thread", a)))
    mine = await (
        await app_client.get(url, params={"include": "participated"}, headers=auth(carol_token))
    ).json()
    assert [e["event_id"] for e in mine["chunk"]] == [a]
    r = await app_client.get(url, params={"include": "some"}, headers=auth(alice_token))
    assert r.status == 400
    _, eve_token, _ = await make_user(app_client, "eve")
    r = await app_client.get(url, headers=auth(eve_token))
    assert r.status == 403
