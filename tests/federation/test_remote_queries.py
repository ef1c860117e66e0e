"""Profiles of remote users and remote room aliases, through two of our servers on
loopback: GET /profile of a user on the other server; join a room by an alias that
lives on the other server; unknown ones are 404 M_NOT_FOUND, never a 500."""

from __future__ import annotations


async def test_profile_of_a_remote_user(pair) -> None:
    a, b = pair
    alice = await a.register("alice")
    bob = await b.register("bob")
    await a.ok("PUT", f"/profile/{alice}/displayname", alice, {"displayname": "Alice A."})
    await a.ok("PUT", f"/profile/{alice}/avatar_url", alice, {"avatar_url": "mxc://a/pic"})

    profile = await b.ok("GET", f"/profile/{alice}", bob)
    assert profile == {"displayname": "Alice A.", "avatar_url": "mxc://a/pic"}
    field = await b.ok("GET", f"/profile/{alice}/displayname", bob)
    assert field == {"displayname": "Alice A."}

    status, body = await b.call("GET", f"/profile/@nobody:{a.name}", bob)
    assert status == 404 and body["errcode"] == "M_NOT_FOUND"
    # A server that is not there: still a 404, not a 500.
    status, body = await b.call("GET", "/profile/@x:127.0.0.1:1", bob)
    assert status == 404 and body["errcode"] == "M_NOT_FOUND"


async def test_join_by_a_remote_alias(pair) -> None:
    a, b = pair
    alice = await a.register("alice")
    bob = await b.register("bob")
    alias = f"#lobby:{a.name}"
    quoted = "%23" + alias[1:]
    room_id = await a.create_room(alice, room_alias_name="lobby", name="Lobby")

    resolved = await b.ok("GET", f"/directory/room/{quoted}", bob)
    assert resolved["room_id"] == room_id and a.name in resolved["servers"]

    status, body = await b.call("POST", f"/join/{quoted}", bob, {})
    assert status == 200, body
    assert body == {"room_id": room_id}
    status, name = await b.state(bob, room_id, "m.room.name")
    assert status == 200 and name == {"name": "Lobby"}
    members = await a.ok("GET", f"/rooms/{room_id}/joined_members", alice)
    assert set(members["joined"]) == {alice, bob}

    status, body = await b.call("GET", f"/directory/room/%23nothere:{a.name}", bob)
    assert status == 404 and body["errcode"] == "M_NOT_FOUND"
    status, body = await b.call("POST", f"/join/%23nothere:{a.name}", bob, {})
    assert status == 404 and body["errcode"] == "M_NOT_FOUND"
