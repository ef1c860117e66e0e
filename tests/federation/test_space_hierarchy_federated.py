"""A space on one server with rooms on another (issue 13): the hierarchy walk asks
the child's server (`via`) with /_matrix/federation/v1/hierarchy and lists the remote
room with its summary; a private remote room is not listed."""

from __future__ import annotations

import aiohttp


async def test_walk_reaches_rooms_only_the_other_server_knows(pair) -> None:
    a, b = pair
    alice = await a.register("alice")
    bob = await b.register("bob")
    space = await a.create_room(alice, name="Space", creation_content={"type": "m.space"})
    garden = await b.create_room(bob, name="Garden", topic="plants")
    vault = await b.create_room(bob, name="Vault", preset="private_chat")
    for child in (garden, vault):
        await a.ok("PUT", f"/rooms/{space}/state/m.space.child/{child}", alice, {"via": [b.name]})
    url = f"http://{a.name}/_matrix/client/v1/rooms/{space}/hierarchy"
    headers = {"Authorization": f"Bearer {a.tokens[alice]}"}
    async with aiohttp.ClientSession() as http, http.get(url, headers=headers) as resp:
        assert resp.status == 200
        body = await resp.json()
    rooms = {r["room_id"]: r for r in body["rooms"]}
    assert list(rooms) == [space, garden]
    assert rooms[garden]["name"] == "Garden" and rooms[garden]["topic"] == "plants"
    assert rooms[garden]["join_rule"] == "public" and rooms[garden]["num_joined_members"] == 1
    assert {c["state_key"] for c in rooms[space]["children_state"]} == {garden, vault}
