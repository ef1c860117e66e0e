"""`limit_remote_rooms` between two of our servers on loopback: "a" limits its users'
joins of remote rooms, "b" hosts the rooms.

A room's complexity is its state events / 500 (Synapse's v1). A fresh room has under
a dozen state events (complexity 0.02 at most, its joiner included), so "a" runs with
a threshold of 0.03 and a room becomes "too complex" with twenty more state events
(0.05 or more): the same checks as a room of 500,000, at the cost of twenty requests.
"""

from __future__ import annotations

from typing import Any

from tests.federation.multiserver import LoopbackServer, eventually

TOO_BIG = "Rooms this big are not for this little server"
LIMIT = {"enabled": True, "complexity": 0.03, "complexity_error": TOO_BIG}


async def _bloat(server: LoopbackServer, user: str, room_id: str, count: int = 20) -> None:
    """`count` more state events in the room (distinct state keys)."""
    for i in range(count):
        await server.put_state(user, room_id, f"org.example.filler/{i}", {"n": i})


async def _complexity_on(server: LoopbackServer, room_id: str) -> float:
    """The room's complexity as `server` reckons it (its state through the client API
    of a member, counted here independently of the endpoint)."""
    member = next(iter(server.tokens))
    state = await server.ok("GET", f"/rooms/{room_id}/state", member)
    return round(len(state) / 500, 2)


async def _joined_rooms(server: LoopbackServer, user: str) -> list[str]:
    return (await server.ok("GET", "/joined_rooms", user))["joined_rooms"]


async def _membership_on(server: LoopbackServer, viewer: str, room_id: str, user: str) -> Any:
    status, body = await server.state(viewer, room_id, f"m.room.member/{user}")
    return body.get("membership") if status == 200 else None


async def test_joins_of_rooms_too_complex_are_refused_simple_ones_allowed(loopback) -> None:
    a = await loopback("a", limit_remote_rooms=LIMIT)
    b = await loopback("b")
    alice, bob = await a.register("alice"), await b.register("bob")
    simple = await b.create_room(bob, name="Small")
    big = await b.create_room(bob, name="Big")
    await _bloat(b, bob, big)
    assert await _complexity_on(b, simple) < 0.03 < await _complexity_on(b, big)

    status, body = await a.call("POST", f"/join/{big}", alice, {}, server_name=[b.name])
    assert (status, body) == (400, {"errcode": "M_RESOURCE_LIMIT_EXCEEDED", "error": TOO_BIG})
    # Refused before any handshake: b never saw alice, a holds nothing of the room.
    assert await _membership_on(b, bob, big, alice) is None
    assert big not in await _joined_rooms(a, alice)
    status, body = await a.state(alice, big, "m.room.create")
    assert status in (403, 404), body

    assert await a.join(alice, simple, [b.name]) == simple
    assert simple in await _joined_rooms(a, alice)
    assert await eventually(lambda: _is(b, bob, simple, alice, "join"))


async def _is(server: LoopbackServer, viewer: str, room_id: str, user: str, want: str) -> bool:
    return await _membership_on(server, viewer, room_id, user) == want


async def test_admins_can_join_lets_server_admins_through(loopback) -> None:
    a = await loopback("a", limit_remote_rooms={**LIMIT, "admins_can_join": True})
    b = await loopback("b")
    root, alice, bob = (
        await a.register_admin("root"),
        await a.register("alice"),
        await b.register("bob"),
    )
    big = await b.create_room(bob, name="Big")
    await _bloat(b, bob, big)
    status, body = await a.call("POST", f"/join/{big}", alice, {}, server_name=[b.name])
    assert (status, body["errcode"]) == (400, "M_RESOURCE_LIMIT_EXCEEDED")
    assert await a.join(root, big, [b.name]) == big
    assert big in await _joined_rooms(a, root)
    assert await eventually(lambda: _is(b, bob, big, root, "join"))


async def test_admins_are_limited_too_by_default(loopback) -> None:
    a = await loopback("a", limit_remote_rooms=LIMIT)
    b = await loopback("b")
    root, bob = await a.register_admin("root"), await b.register("bob")
    big = await b.create_room(bob, name="Big")
    await _bloat(b, bob, big)
    status, body = await a.call("POST", f"/join/{big}", root, {}, server_name=[b.name])
    assert (status, body) == (400, {"errcode": "M_RESOURCE_LIMIT_EXCEEDED", "error": TOO_BIG})


async def test_without_a_complexity_answer_the_state_we_hold_is_measured(loopback) -> None:
    """An invite-only room: b (as Synapse) does not tell its complexity, so a joins and
    measures the state it then holds: too big, alice leaves again (b sees the leave);
    a small one keeps her."""
    a = await loopback("a", limit_remote_rooms=LIMIT)
    b = await loopback("b")
    alice, bob = await a.register("alice"), await b.register("bob")
    big = await b.create_room(bob, preset="private_chat", name="Big and closed")
    small = await b.create_room(bob, preset="private_chat", name="Small and closed")
    await _bloat(b, bob, big)
    for room_id in (big, small):
        await b.ok("POST", f"/rooms/{room_id}/invite", bob, {"user_id": alice})
    await eventually(lambda: _invited(a, alice, {big, small}))

    status, body = await a.call("POST", f"/join/{big}", alice, {}, server_name=[b.name])
    assert (status, body) == (400, {"errcode": "M_RESOURCE_LIMIT_EXCEEDED", "error": TOO_BIG})
    assert big not in await _joined_rooms(a, alice)
    assert await _membership_on(a, alice, big, alice) == "leave"
    assert await eventually(lambda: _is(b, bob, big, alice, "leave"))

    assert await a.join(alice, small, [b.name]) == small
    assert small in await _joined_rooms(a, alice)
    assert await eventually(lambda: _is(b, bob, small, alice, "join"))


async def _invited(server: LoopbackServer, user: str, rooms: set[str]) -> bool:
    data = await server.ok("GET", "/sync", user, timeout="0")
    return rooms <= set(data["rooms"]["invite"])


async def test_servers_without_the_limit_join_anything(loopback) -> None:
    a = await loopback("a")
    b = await loopback("b")
    alice, bob = await a.register("alice"), await b.register("bob")
    big = await b.create_room(bob, name="Big")
    await _bloat(b, bob, big)
    assert await a.join(alice, big, [b.name]) == big
