"""Rooms created and profiles changed by the event persisters (issue 16), so Element
can start a chat or a direct message, and users set their name, while the main process
is down.

Server A is the README's seven-process deployment behind nginx (tests/deployment.py
FULL_LAYOUT); server B is one process on loopback, federating with it. With A's main
SIGKILLed, `POST /createRoom` through nginx (before: the readers handed it to the
main and answered 502) is written by an event persister (the one the creator's access
token hashes to; the room's later writes go to the persister its ID hashes to):
the room has its name, topic, alias (resolved on a reader) and directory entry, the
creator reads it at once in /sync, the local and the remote invitee are invited and
join, and messages flow both ways. A direct message (trusted_private_chat with
is_direct) is created the same way. A display name change (a new member event in
each of the user's rooms) is written the same way: the profile on a reader, the other
local member and the remote member see the new name.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from tests.federation.multiserver import (
    LoopbackServer,
    eventually,
    room_of_three,
    writers_and_peer,
)


@pytest.fixture
async def servers(tmp_path: Path) -> AsyncIterator[tuple[LoopbackServer, LoopbackServer]]:
    async with writers_and_peer(tmp_path, {}) as pair:
        yield pair


async def invited(server: LoopbackServer, user: str, room_id: str) -> bool:
    body = await server.ok("GET", "/sync", user, timeout="0")
    return room_id in body.get("rooms", {}).get("invite", {})


async def test_the_persisters_create_rooms_while_the_main_is_down(servers: Any) -> None:
    a, b = servers
    alice, carol, bob = (
        await a.register("alice"),
        await a.register("carol"),
        await b.register("bob"),
    )
    a.deployment.kill("main")
    try:
        room_id = await a.create_room(
            alice,
            name="While the main is down",
            topic="still here",
            room_alias_name="down",
            visibility="public",
            invite=[carol, bob],
        )
        # The creator reads it at once (the reader waited for the persister's write).
        joined = (await a.sync(alice))["rooms"]["join"][room_id]
        state = {e["type"]: e["content"] for e in joined["state"]["events"]}
        timeline = {e["type"]: e["content"] for e in joined["timeline"]["events"]}
        names = {**state, **timeline}
        assert names["m.room.name"] == {"name": "While the main is down"}
        assert names["m.room.topic"]["topic"] == "still here"
        alias = f"#down:{a.name}"
        resolved = await a.ok("GET", f"/directory/room/{quote(alias)}", alice)
        assert resolved["room_id"] == room_id
        listed = await a.ok("POST", "/publicRooms", alice, {"limit": 100})
        assert room_id in {r["room_id"] for r in listed["chunk"]}
        served_by = [
            n for n in ("event_persister1", "event_persister2")
            if "POST /_matrix/client/v3/createRoom" in a.deployment.logs(n)
        ]  # fmt: skip
        assert len(served_by) == 1, served_by

        assert await eventually(lambda: invited(a, carol, room_id))
        assert await eventually(lambda: invited(b, bob, room_id), timeout=30)
        await a.join(carol, room_id, [a.name])
        await b.join(bob, room_id, [a.name])
        await a.send_text(carol, room_id, "from carol")
        await b.send_text(bob, room_id, "from bob")

        async def alice_reads_both() -> bool:
            texts = await a.sync_texts(alice, room_id)
            return "from carol" in texts and "from bob" in texts

        assert await eventually(alice_reads_both, timeout=30)

        # A direct message, as Element starts one.
        dm = await a.create_room(alice, preset="trusted_private_chat", is_direct=True, invite=[bob])
        assert await eventually(lambda: invited(b, bob, dm), timeout=30)
        body = await b.ok("GET", "/sync", bob, timeout="0")
        member = [
            e for e in body["rooms"]["invite"][dm]["invite_state"]["events"]
            if e["type"] == "m.room.member" and e["state_key"] == bob
        ]  # fmt: skip
        assert member and member[0]["content"].get("is_direct") is True
    finally:
        await asyncio.to_thread(a.deployment.start_process, "main")


def _names(body: dict[str, Any], room_id: str) -> dict[str, str]:
    """Member display names in the room's state and timeline of a /sync."""
    room = body.get("rooms", {}).get("join", {}).get(room_id, {})
    events = room.get("state", {}).get("events", []) + room.get("timeline", {}).get("events", [])
    return {
        e["state_key"]: e["content"].get("displayname")
        for e in events
        if e["type"] == "m.room.member" and e["content"].get("membership") == "join"
    }


async def test_the_persisters_change_profiles_while_the_main_is_down(servers: Any) -> None:
    a, b = servers
    alice, carol, bob, room_id = await room_of_three(a, b)
    carol_since = (await a.sync(carol))["next_batch"]
    bob_since = (await b.sync(bob))["next_batch"]
    a.deployment.kill("main")
    try:
        path = f"/profile/{quote(alice)}/displayname"
        await a.ok("PUT", path, alice, {"displayname": "Alice, main down"})
        assert await a.ok("GET", path, alice) == {"displayname": "Alice, main down"}
        await a.ok("PUT", f"/profile/{quote(alice)}/avatar_url", alice, {"avatar_url": "mxc://a/b"})

        async def carol_sees() -> bool:
            body = await a.ok("GET", "/sync", carol, since=carol_since, timeout="0")
            return _names(body, room_id).get(alice) == "Alice, main down"

        async def bob_sees() -> bool:
            body = await b.ok("GET", "/sync", bob, since=bob_since, timeout="0")
            return _names(body, room_id).get(alice) == "Alice, main down"

        assert await eventually(carol_sees)
        assert await eventually(bob_sees, timeout=30)
        profile = await a.ok("GET", f"/profile/{quote(alice)}", carol)
        assert profile == {"displayname": "Alice, main down", "avatar_url": "mxc://a/b"}
    finally:
        await asyncio.to_thread(a.deployment.start_process, "main")
