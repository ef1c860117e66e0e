"""Bundled aggregations (unsigned["m.relations"]) on every endpoint returning events:
/sync timelines, /messages, /event and /context - one batched lookup per response."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from homeserver.appstate import LOCAL_EVENTS, ROOM_READER
from tests.client.helpers import auth, join_room, make_room, make_user

V3 = "/_matrix/client/v3"


async def _send(client: TestClient, room: str, sender: str, content: dict[str, Any]) -> str:
    event = await client.server.app[LOCAL_EVENTS].send(room, sender, "m.room.message", content)
    return event.event_id


def _rel(rel_type: str, target: str) -> dict[str, Any]:
    return {"m.relates_to": {"rel_type": rel_type, "event_id": target}}


async def _room_with_relations(client: TestClient) -> dict[str, str]:
    alice, token, _ = await make_user(client, "alice")
    bob, _, _ = await make_user(client, "bob")
    room = await make_room(client, alice)
    await join_room(client, room, bob)
    root = await _send(client, room, alice, {"msgtype": "m.text", "body": "root"})
    edit = await _send(
        client,
        room,
        alice,
        {
            "msgtype": "m.text",
            "body": "* root edited",
            "m.new_content": {"msgtype": "m.text", "body": "root edited"},
            **_rel("m.replace", root),
        },
    )
    reply = await _send(
        client, room, bob, {"msgtype": "m.text", "body": "in thread", **_rel("m.thread", root)}
    )
    ref = await _send(
        client, room, bob, {"msgtype": "m.text", "body": "see", **_rel("m.reference", root)}
    )
    plain = await _send(client, room, alice, {"msgtype": "m.text", "body": "plain"})
    return {
        "room": room,
        "token": token,
        "alice": alice,
        "bob": bob,
        "root": root,
        "edit": edit,
        "reply": reply,
        "ref": ref,
        "plain": plain,
    }


def _check_root_bundle(event: dict[str, Any], ids: dict[str, str]) -> None:
    relations = event["unsigned"]["m.relations"]
    assert set(relations) == {"m.replace", "m.thread", "m.reference"}
    assert relations["m.replace"]["event_id"] == ids["edit"]
    assert relations["m.replace"]["content"]["m.new_content"]["body"] == "root edited"
    thread = relations["m.thread"]
    assert thread["count"] == 1 and thread["current_user_participated"] is True
    assert thread["latest_event"]["event_id"] == ids["reply"]
    assert thread["latest_event"]["content"]["body"] == "in thread"
    assert relations["m.reference"] == {"chunk": [{"event_id": ids["ref"]}]}


async def test_sync_timeline_carries_bundled_aggregations(app_client: TestClient) -> None:
    ids = await _room_with_relations(app_client)
    flt = '{"room": {"timeline": {"limit": 50}}}'
    r = await app_client.get(f"{V3}/sync", params={"filter": flt}, headers=auth(ids["token"]))
    assert r.status == 200
    timeline = (await r.json())["rooms"]["join"][ids["room"]]["timeline"]["events"]
    by_id = {e["event_id"]: e for e in timeline}
    _check_root_bundle(by_id[ids["root"]], ids)
    assert "m.relations" not in by_id[ids["plain"]].get("unsigned", {})
    assert "m.relations" not in by_id[ids["reply"]].get("unsigned", {})
    create = next(e for e in timeline if e["type"] == "m.room.create")
    assert "m.relations" not in create.get("unsigned", {})


async def test_sync_incremental_bundles_a_new_thread_root(app_client: TestClient) -> None:
    ids = await _room_with_relations(app_client)
    first = await (await app_client.get(f"{V3}/sync", headers=auth(ids["token"]))).json()
    root2 = await _send(app_client, ids["room"], ids["alice"], {"msgtype": "m.text", "body": "r2"})
    await _send(
        app_client,
        ids["room"],
        ids["bob"],
        {"msgtype": "m.text", "body": "x", **_rel("m.reference", root2)},
    )
    r = await app_client.get(
        f"{V3}/sync",
        params={"since": first["next_batch"], "timeout": "0"},
        headers=auth(ids["token"]),
    )
    timeline = (await r.json())["rooms"]["join"][ids["room"]]["timeline"]["events"]
    assert timeline[0]["event_id"] == root2
    assert list(timeline[0]["unsigned"]["m.relations"]) == ["m.reference"]


async def test_messages_event_and_context_carry_bundled_aggregations(
    app_client: TestClient,
) -> None:
    ids = await _room_with_relations(app_client)
    room, headers = ids["room"], auth(ids["token"])
    page = await (
        await app_client.get(
            f"{V3}/rooms/{room}/messages", params={"dir": "b", "limit": "50"}, headers=headers
        )
    ).json()
    by_id = {e["event_id"]: e for e in page["chunk"]}
    _check_root_bundle(by_id[ids["root"]], ids)
    assert "m.relations" not in by_id[ids["plain"]].get("unsigned", {})

    single = await (
        await app_client.get(f"{V3}/rooms/{room}/event/{ids['root']}", headers=headers)
    ).json()
    _check_root_bundle(single, ids)

    ctx = await (
        await app_client.get(
            f"{V3}/rooms/{room}/context/{ids['plain']}", params={"limit": "10"}, headers=headers
        )
    ).json()
    before = {e["event_id"]: e for e in ctx["events_before"]}
    _check_root_bundle(before[ids["root"]], ids)
    ctx = await (
        await app_client.get(
            f"{V3}/rooms/{room}/context/{ids['root']}", params={"limit": "10"}, headers=headers
        )
    ).json()
    _check_root_bundle(ctx["event"], ids)


async def test_one_batched_lookup_per_response(app_client: TestClient) -> None:
    ids = await _room_with_relations(app_client)
    reader = app_client.server.app[ROOM_READER]
    inner = reader._aggregations  # noqa: SLF001 - counting the reader's one port
    assert inner is not None
    calls: list[int] = []

    async def counting(events: Any, user_id: str, cap: Any = None) -> dict[str, dict[str, Any]]:
        calls.append(len(events))
        return await inner(events, user_id, cap=cap)

    reader._aggregations = counting  # noqa: SLF001
    url = f"{V3}/rooms/{ids['room']}/context/{ids['ref']}"
    r = await app_client.get(url, params={"limit": "6"}, headers=auth(ids["token"]))
    assert r.status == 200
    assert calls == [5]  # 3 before + the event + the 1 after it, in one call
    calls.clear()
    r = await app_client.get(
        f"{V3}/rooms/{ids['room']}/messages",
        params={"dir": "b", "limit": "4"},
        headers=auth(ids["token"]),
    )
    assert r.status == 200 and calls == [4]
