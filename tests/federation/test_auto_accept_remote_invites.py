"""auto_accept_invites over federation: "a" accepts invites for its users, "b" invites
them. An invite into a room "a" is not in arrives by federation /invite and is stored
out of band (no room graph listener hears it): it must be accepted all the same, with
the join retried while "b" has not yet stored its own invite. only_from_local_users
leaves a remote inviter's invite to the user."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.federation.multiserver import LoopbackServer, eventually


async def _membership(server: LoopbackServer, viewer: str, room: str, user: str) -> str | None:
    status, body = await server.call("GET", f"/rooms/{room}/state/m.room.member/{user}", viewer)
    return body.get("membership") if status == 200 else None


async def _invited_in_sync(server: LoopbackServer, user: str, room: str) -> bool:
    return room in (await server.sync(user))["rooms"]["invite"]


async def test_a_remote_invite_is_accepted_over_federation(loopback: Any) -> None:
    a = await loopback("a", auto_accept_invites={"enabled": True})
    b = await loopback("b")
    alice = await a.register("alice")
    bob = await b.register("bob")
    room = await b.create_room(bob, preset="private_chat", name="From b", is_direct=False)
    await b.ok("POST", f"/rooms/{room}/invite", bob, {"user_id": alice})

    async def joined_on_b() -> bool:
        return await _membership(b, bob, room, alice) == "join"

    # Synapse's retries wait 1, 2, 4 and 8 s: within 20 s whatever the first refusal.
    assert await eventually(joined_on_b, timeout=20.0)
    assert room in (await a.ok("GET", "/joined_rooms", alice))["joined_rooms"]
    await b.send_text(bob, room, "welcome")

    async def seen_on_a() -> bool:
        return "welcome" in await a.sync_texts(alice, room)

    assert await eventually(seen_on_a)
    sync = await a.sync(alice)
    assert room in sync["rooms"]["join"] and room not in sync["rooms"]["invite"]
    resp_status, _ = await a.call("GET", f"/user/{alice}/account_data/m.direct", alice)
    assert resp_status == 404  # not a DM: m.direct untouched


async def test_a_remote_direct_invite_is_marked_direct(loopback: Any) -> None:
    a = await loopback("a", auto_accept_invites={"enabled": True, "only_for_direct_messages": True})
    b = await loopback("b")
    alice = await a.register("alice")
    bob = await b.register("bob")
    room = await b.create_room(bob, preset="trusted_private_chat", invite=[alice], is_direct=True)

    async def joined_on_a() -> bool:
        return room in (await a.ok("GET", "/joined_rooms", alice))["joined_rooms"]

    assert await eventually(joined_on_a, timeout=20.0)
    direct = await a.ok("GET", f"/user/{alice}/account_data/m.direct", alice)
    assert direct == {bob: [room]}
    assert await _membership(b, bob, room, alice) == "join"


async def test_only_from_local_users_leaves_a_remote_invite(loopback: Any) -> None:
    a = await loopback("a", auto_accept_invites={"enabled": True, "only_from_local_users": True})
    b = await loopback("b")
    alice, carol = await a.register("alice"), await a.register("carol")
    bob = await b.register("bob")
    remote_room = await b.create_room(bob, preset="private_chat", name="From b")
    await b.ok("POST", f"/rooms/{remote_room}/invite", bob, {"user_id": alice})
    assert await eventually(lambda: _invited_in_sync(a, alice, remote_room))
    # A local invite made afterwards is accepted: the remote one was heard and skipped.
    local_room = await a.create_room(carol, preset="private_chat")
    await a.ok("POST", f"/rooms/{local_room}/invite", carol, {"user_id": alice})

    async def local_joined() -> bool:
        return local_room in (await a.ok("GET", "/joined_rooms", alice))["joined_rooms"]

    assert await eventually(local_joined)
    await asyncio.sleep(1.5)  # past the first retry, had one been started
    assert await _invited_in_sync(a, alice, remote_room)
    assert remote_room not in (await a.ok("GET", "/joined_rooms", alice))["joined_rooms"]
    assert await _membership(b, bob, remote_room, alice) == "invite"
