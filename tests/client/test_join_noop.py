"""Joining a room you are already in changes nothing (as Synapse): 200 with the room
ID, no new member event in the timeline. A join whose content differs (a new
displayname) is still sent."""

from __future__ import annotations

from tests.client.helpers import auth, make_room, make_user


async def _member_events(client, room_id: str, token: str, user_id: str) -> list[dict]:
    resp = await client.get(
        f"/_matrix/client/v3/rooms/{room_id}/messages",
        params={"dir": "b", "limit": "100"},
        headers=auth(token),
    )
    assert resp.status == 200
    chunk = (await resp.json())["chunk"]
    return [e for e in chunk if e["type"] == "m.room.member" and e["state_key"] == user_id]


async def test_second_join_emits_nothing(app_client) -> None:
    client = app_client
    alice, _, _ = await make_user(client, "alice")
    bob, token, _ = await make_user(client, "bob")
    room_id = await make_room(client, alice)
    for _ in range(3):
        resp = await client.post(f"/_matrix/client/v3/join/{room_id}", headers=auth(token))
        assert resp.status == 200
        assert await resp.json() == {"room_id": room_id}
    joins = await _member_events(client, room_id, token, bob)
    assert [e["content"]["membership"] for e in joins] == ["join"]

    resp = await client.put(
        f"/_matrix/client/v3/profile/{bob}/displayname",
        json={"displayname": "Bob"},
        headers=auth(token),
    )
    assert resp.status == 200
    before = len(await _member_events(client, room_id, token, bob))
    resp = await client.post(f"/_matrix/client/v3/rooms/{room_id}/join", headers=auth(token))
    assert resp.status == 200
    assert len(await _member_events(client, room_id, token, bob)) == before
    state = await client.get(
        f"/_matrix/client/v3/rooms/{room_id}/state/m.room.member/{bob}", headers=auth(token)
    )
    assert (await state.json())["displayname"] == "Bob"
