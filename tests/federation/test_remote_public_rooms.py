"""GET/POST /publicRooms?server=<other server>: B asks A's directory over federation
(/_matrix/federation/v1/publicRooms) and answers with A's list, paging with A's tokens;
an unreachable server is a 502, an invalid name a 400, never a 500."""

from __future__ import annotations

from tests.federation.multiserver import LoopbackServer


async def publish(server: LoopbackServer, user: str, name: str, topic: str) -> str:
    room_id = await server.create_room(user, name=name, topic=topic, visibility="public")
    return room_id


async def test_remote_public_rooms(pair) -> None:
    a, b = pair
    alice = await a.register("alice")
    bob = await b.register("bob")
    lobby = await publish(a, alice, "Lobby", "general chat")
    garden = await publish(a, alice, "Garden", "plants")
    await a.create_room(alice, name="Hidden")  # not published
    await publish(b, bob, "B's own", "not on A")

    listed = await b.ok("GET", "/publicRooms", bob, server=a.name)
    assert sorted(r["room_id"] for r in listed["chunk"]) == sorted([lobby, garden])
    by_id = {r["room_id"]: r for r in listed["chunk"]}
    assert by_id[lobby]["name"] == "Lobby" and by_id[lobby]["topic"] == "general chat"
    assert by_id[lobby]["num_joined_members"] == 1
    assert listed["total_room_count_estimate"] == 2
    assert by_id[garden]["join_rule"] == "public" and by_id[garden]["guest_can_join"] is False
    # The same rooms A's own users see.
    local = await a.ok("GET", "/publicRooms", alice)
    assert sorted(r["room_id"] for r in local["chunk"]) == sorted(by_id)

    # Paging uses A's tokens, passed through.
    first = await b.ok("GET", "/publicRooms", bob, server=a.name, limit="1")
    assert len(first["chunk"]) == 1 and "next_batch" in first
    second = await b.ok(
        "GET", "/publicRooms", bob, server=a.name, limit="1", since=first["next_batch"]
    )
    assert len(second["chunk"]) == 1
    assert {first["chunk"][0]["room_id"], second["chunk"][0]["room_id"]} == {lobby, garden}

    # POST with a search term goes to A's POST /publicRooms.
    found = await b.ok(
        "POST",
        "/publicRooms",
        bob,
        {"filter": {"generic_search_term": "plant"}, "limit": 10},
        server=a.name,
    )
    assert [r["room_id"] for r in found["chunk"]] == [garden]

    # Our own name is the local directory.
    own = await b.ok("GET", "/publicRooms", bob, server=b.name)
    assert [r["name"] for r in own["chunk"]] == ["B's own"]


async def test_remote_public_rooms_failures(pair) -> None:
    a, b = pair
    bob = await b.register("bob")
    status, body = await b.call("GET", "/publicRooms", None, server=a.name)
    assert status == 401 and body["errcode"] == "M_MISSING_TOKEN"
    status, body = await b.call("GET", "/publicRooms", bob, server="127.0.0.1:1")
    assert status == 502 and body["errcode"] == "M_UNKNOWN"
    status, body = await b.call("POST", "/publicRooms", bob, {}, server="127.0.0.1:1")
    assert status == 502 and body["errcode"] == "M_UNKNOWN"
    status, body = await b.call("GET", "/publicRooms", bob, server="not a server!")
    assert status == 400 and body["errcode"] == "M_INVALID_PARAM"
