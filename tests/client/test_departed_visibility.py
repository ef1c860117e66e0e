"""Issue 8.4 and 8.5, performed by a second user through the client API: a knock
that is rescinded, or an invite that is rejected, is not membership (no `shared`
history); banned and forgetting users read nothing; a user who left reads relations,
threads and bundled aggregations only as they were at their leave."""

from __future__ import annotations

from typing import Any

import pytest

from tests.client.helpers import make_user
from tests.client.test_rooms import call, create


@pytest.fixture
async def users(app_client: Any) -> dict[str, tuple[str, str]]:
    out = {}
    for name in ("alice", "bob", "carol"):
        user_id, token, _ = await make_user(app_client, name)
        out[name] = (user_id, token)
    return out


def _paths(room: str, root: str) -> list[str]:
    return [
        f"/rooms/{room}/messages?dir=b",
        f"/rooms/{room}/state",
        f"/rooms/{room}/members",
        f"/rooms/{room}/event/{root}",
        f"/rooms/{room}/context/{root}",
        f"/rooms/{room}/relations/{root}",
        f"/rooms/{room}/threads",
    ]


async def _denied(client: Any, token: str, room: str, root: str) -> None:
    for path in _paths(room, root):
        prefix = "/_matrix/client/v1" if "/relations/" in path or "/threads" in path else None
        if prefix:
            resp = await client.get(prefix + path, headers={"Authorization": f"Bearer {token}"})
            status = resp.status
        else:
            resp = await client.get(
                "/_matrix/client/v3" + path, headers={"Authorization": f"Bearer {token}"}
            )
            status = resp.status
        assert status in (403, 404), (path, status, await resp.text())


async def _room_with_thread(client: Any, token: str, join_rule: str) -> tuple[str, str]:
    room = await create(client, token, {"preset": "private_chat"})
    await call(
        client, "PUT", f"/rooms/{room}/state/m.room.join_rules", token, {"join_rule": join_rule}
    )
    root = (
        await call(client, "PUT", f"/rooms/{room}/send/m.room.message/r", token, {"body": "root"})
    )["event_id"]
    reply = {"body": "secret reply", "m.relates_to": {"rel_type": "m.thread", "event_id": root}}
    await call(client, "PUT", f"/rooms/{room}/send/m.room.message/t1", token, reply)
    return room, root


async def test_rescinded_knock_and_rejected_invite_read_nothing(
    app_client: Any, users: Any
) -> None:
    alice, atok = users["alice"]
    bob, btok = users["bob"]
    carol, ctok = users["carol"]
    room, root = await _room_with_thread(app_client, atok, "knock")
    await call(app_client, "POST", f"/knock/{room}", btok, {})
    await call(app_client, "POST", f"/rooms/{room}/leave", btok, {})  # rescind
    await _denied(app_client, btok, room, root)
    await call(app_client, "POST", f"/rooms/{room}/invite", atok, {"user_id": carol})
    await call(app_client, "POST", f"/rooms/{room}/leave", ctok, {})  # reject
    await _denied(app_client, ctok, room, root)
    del alice, bob


async def test_banned_and_forgetting_users_read_nothing(app_client: Any, users: Any) -> None:
    _, atok = users["alice"]
    bob, btok = users["bob"]
    carol, ctok = users["carol"]
    room, root = await _room_with_thread(app_client, atok, "public")
    for token in (btok, ctok):
        await call(app_client, "POST", f"/rooms/{room}/join", token, {})
    await call(app_client, "POST", f"/rooms/{room}/ban", atok, {"user_id": bob})
    await _denied(app_client, btok, room, root)
    await call(app_client, "POST", f"/rooms/{room}/leave", ctok, {})
    # Left but not forgotten: history up to the leave.
    await call(app_client, "GET", f"/rooms/{room}/messages?dir=b", ctok)
    await call(app_client, "POST", f"/rooms/{room}/forget", ctok, {})
    await _denied(app_client, ctok, room, root)


async def test_a_departed_user_sees_relations_only_up_to_their_leave(
    app_client: Any,
    users: Any,
) -> None:
    _, atok = users["alice"]
    _, btok = users["bob"]
    room, root = await _room_with_thread(app_client, atok, "public")
    await call(app_client, "POST", f"/rooms/{room}/join", btok, {})
    await call(app_client, "POST", f"/rooms/{room}/leave", btok, {})
    # After bob left: another thread reply, a reaction, an edit, and a new thread.
    late = {"body": "after you left", "m.relates_to": {"rel_type": "m.thread", "event_id": root}}
    await call(app_client, "PUT", f"/rooms/{room}/send/m.room.message/t2", atok, late)
    react = {"m.relates_to": {"rel_type": "m.annotation", "event_id": root, "key": "👍"}}
    await call(app_client, "PUT", f"/rooms/{room}/send/m.reaction/t3", atok, react)
    edit = {
        "body": "* edited",
        "m.new_content": {"body": "edited later"},
        "m.relates_to": {"rel_type": "m.replace", "event_id": root},
    }
    await call(app_client, "PUT", f"/rooms/{room}/send/m.room.message/t4", atok, edit)
    new_root = (
        await call(
            app_client, "PUT", f"/rooms/{room}/send/m.room.message/t5", atok, {"body": "new"}
        )
    )["event_id"]
    new_reply = {"body": "x", "m.relates_to": {"rel_type": "m.thread", "event_id": new_root}}
    await call(app_client, "PUT", f"/rooms/{room}/send/m.room.message/t6", atok, new_reply)

    h = {"Authorization": f"Bearer {btok}"}
    rel = await (
        await app_client.get(f"/_matrix/client/v1/rooms/{room}/relations/{root}", headers=h)
    ).json()
    assert [e["content"]["body"] for e in rel["chunk"]] == ["secret reply"]
    threads = await (
        await app_client.get(f"/_matrix/client/v1/rooms/{room}/threads", headers=h)
    ).json()
    assert [e["event_id"] for e in threads["chunk"]] == [root]
    summary = threads["chunk"][0]["unsigned"]["m.relations"]["m.thread"]
    assert summary["count"] == 1 and summary["latest_event"]["content"]["body"] == "secret reply"
    event = await call(app_client, "GET", f"/rooms/{room}/event/{root}", btok)
    bundle = event["unsigned"]["m.relations"]
    assert bundle["m.thread"]["count"] == 1
    assert "m.replace" not in bundle
    # Alice, still joined, sees everything.
    full = await call(app_client, "GET", f"/rooms/{room}/event/{root}", atok)
    assert full["unsigned"]["m.relations"]["m.thread"]["count"] == 2
    assert "m.replace" in full["unsigned"]["m.relations"]
