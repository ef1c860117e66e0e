"""Restricted joins (room v8+) and knocks end to end between two of our loopback servers,
driven by the client API: A hosts the rooms, B's users join or knock through A."""

from __future__ import annotations

import pytest

from homeserver.appstate import STORES
from tests.federation.multiserver import LoopbackServer, eventually


async def _membership(server: LoopbackServer, room_id: str, user: str) -> str | None:
    return await server.app[STORES].current_state.get_membership(room_id, user)


@pytest.mark.parametrize("version", ["10", "12"])
async def test_restricted_join_through_membership_of_an_allowed_room(pair, version) -> None:
    a, b = pair
    alice = await a.register("alice")
    bob = await b.register("bob")
    carol = await b.register("carol")
    space = await a.create_room(alice, room_version=version, name="Space")
    await b.join(bob, space, [a.name])
    allow = [{"type": "m.room_membership", "room_id": space}]
    room_id = await a.create_room(
        alice,
        room_version=version,
        preset="private_chat",
        initial_state=[
            {
                "type": "m.room.join_rules",
                "state_key": "",
                "content": {"join_rule": "restricted", "allow": allow},
            }
        ],
    )
    # Carol is in no allowed room: A refuses to vouch for her.
    status, body = await b.call("POST", f"/join/{room_id}", carol, {}, server_name=[a.name])
    assert status == 403, body
    assert await _membership(a, room_id, carol) is None

    assert await b.join(bob, room_id, [a.name]) == room_id
    member = await a.ok("GET", f"/rooms/{room_id}/state/m.room.member/{bob}", alice)
    assert member["membership"] == "join"
    assert member["join_authorised_via_users_server"] == alice
    await eventually(lambda: _membership(b, room_id, bob))
    assert await _membership(b, room_id, bob) == "join"
    # The room works for Bob: a message from B reaches A.
    await b.send_text(bob, room_id, "in via the space")
    assert await eventually(lambda: _has_text(a, alice, room_id, "in via the space")), (
        "message from the restricted joiner never reached A"
    )


async def _has_text(server: LoopbackServer, user: str, room_id: str, text: str) -> bool:
    return text in await server.sync_texts(user, room_id)


async def test_knock_then_invite_then_join(pair) -> None:
    a, b = pair
    alice = await a.register("alice")
    bob = await b.register("bob")
    room_id = await a.create_room(
        alice,
        preset="private_chat",
        initial_state=[
            {"type": "m.room.join_rules", "state_key": "", "content": {"join_rule": "knock"}}
        ],
    )
    # Bob cannot simply join a knock room.
    status, _ = await b.call("POST", f"/join/{room_id}", bob, {}, server_name=[a.name])
    assert status == 403

    knocked = await b.ok(
        "POST", f"/knock/{room_id}", bob, {"reason": "let me in"}, server_name=[a.name]
    )
    assert knocked == {"room_id": room_id}
    member = await a.ok("GET", f"/rooms/{room_id}/state/m.room.member/{bob}", alice)
    assert (member["membership"], member.get("reason")) == ("knock", "let me in")
    sync = await b.sync(bob)
    knock_state = sync["rooms"]["knock"][room_id]["knock_state"]["events"]
    assert {e["type"] for e in knock_state} >= {"m.room.create", "m.room.join_rules"}

    # A's admin accepts the knock by inviting Bob; the invite reaches B.
    await a.ok("POST", f"/rooms/{room_id}/invite", alice, {"user_id": bob})
    assert await eventually(lambda: _invited(b, bob, room_id))
    assert await b.join(bob, room_id, [a.name]) == room_id
    assert await eventually(lambda: _is_joined(a, room_id, bob))
    await b.send_text(bob, room_id, "thanks")
    assert await eventually(lambda: _has_text(a, alice, room_id, "thanks"))


async def _invited(server: LoopbackServer, user: str, room_id: str) -> bool:
    return room_id in (await server.sync(user)).get("rooms", {}).get("invite", {})


async def _is_joined(server: LoopbackServer, room_id: str, user: str) -> bool:
    return await _membership(server, room_id, user) == "join"
