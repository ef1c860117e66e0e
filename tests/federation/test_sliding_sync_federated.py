"""Sliding sync on a server that learns of a room's changes over federation: a rename,
a new member and messages sent on the other server reach the list (order, name,
timeline, counts) of a user on ours, as they would for local changes."""

from __future__ import annotations

from typing import Any

from tests.federation.multiserver import eventually

SS = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync"
BODY = {
    "lists": {
        "all": {
            "ranges": [[0, 9]],
            "timeline_limit": 2,
            "required_state": [["m.room.name", ""], ["m.room.member", "$LAZY"]],
        }
    }
}


async def sliding(server: Any, user: str, pos: str | None = None) -> dict[str, Any]:
    params = {"timeout": "0", **({"pos": pos} if pos else {})}
    async with server.http.post(
        f"http://{server.name}{SS}",
        json=BODY,
        params=params,
        headers={"Authorization": f"Bearer {server.tokens[user]}"},
    ) as r:
        assert r.status == 200, await r.text()
        return await r.json()


async def test_remote_changes_reach_the_room_list(pair) -> None:
    a, b = pair
    alice = await a.register("alice")
    bob = await b.register("bob")
    remote_room = await a.create_room(alice, name="Before")
    await b.join(bob, remote_room, [a.name])
    local_room = await b.create_room(bob, name="Local")
    await b.send_text(bob, local_room, "newer, local")
    first = await sliding(b, bob)
    assert list(first["rooms"]) == [local_room, remote_room] or set(first["rooms"]) == {
        local_room,
        remote_room,
    }
    ordered = sorted(first["rooms"], key=lambda r: -first["rooms"][r]["bump_stamp"])
    assert ordered[0] == local_room

    # On the other server: a rename, then a message. Over federation they move the
    # room to the top of bob's list with its new name and the message.
    await a.put_state(alice, remote_room, "m.room.name", {"name": "After"})
    await a.send_text(alice, remote_room, "from afar")

    async def moved() -> dict[str, Any] | None:
        update = await sliding(b, bob, first["pos"])
        room = update["rooms"].get(remote_room)
        if room and any(e["content"].get("body") == "from afar" for e in room["timeline"]):
            return update
        return None

    update = await eventually(moved)
    room = update["rooms"][remote_room]
    assert room["name"] == "After"
    assert room["bump_stamp"] > first["rooms"][local_room]["bump_stamp"]
    assert room["notification_count"] >= 1
    senders = {e["state_key"] for e in room["required_state"] if e["type"] == "m.room.member"}
    assert alice in senders
    again = await sliding(b, bob)  # a new connection orders it first too
    top = max(again["rooms"], key=lambda r: again["rooms"][r]["bump_stamp"])
    assert top == remote_room
