"""Accounts, filters, pushers, joins by alias and room upgrades while the main process
is down (issue 16).

Server A is the README's seven-process deployment behind nginx (tests/deployment.py
FULL_LAYOUT) whose client readers write device lists and account data; server B is one process on
loopback, federating with it. With A's main SIGKILLed (before this, each request
below was handed to the main and answered 502):
- a new user registers through nginx (user-interactive auth, a device-list writer),
  saves a filter and syncs with it, and sets up a pusher; once the main is back it
  sends the phone the notification of the message that came while it was down, and
  when the phone logs out (on a reader) the main stops pushing to it at once;
- a user reads B's users' profiles, B's aliases and B's room directory (the reader
  asks B itself, with a federation client of its own), and joins rooms by alias,
  ours and B's (the persister the access token hashes
  to resolves the alias, asking B for its own), and a room is upgraded (by the old
  room's persister): the tombstone, the alias moved to the new room, which its
  members join by that alias;
- a reader's /messages reaches history from before our join (backfilled from B by
  the room's event persister);
- Element's key backup works (the backup version, keys uploaded through both readers
  at once: versions and counts exact), and the settings pages' reads (TURN servers,
  third-party IDs, a room's directory visibility, room tags) are answered by the
  readers.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from tests.client.test_workers import port_url
from tests.client.test_workers_background import Recorder
from tests.federation.multiserver import (
    READERS,
    LoopbackServer,
    eventually,
    post_to,
    writers_and_peer,
)


@pytest.fixture
async def servers(tmp_path: Path) -> AsyncIterator[tuple[LoopbackServer, LoopbackServer]]:
    streams = {"device_lists": READERS, "account_data": READERS}
    async with writers_and_peer(tmp_path, streams, allow_public_rooms_over_federation=True) as pair:
        yield pair


@pytest.fixture
def gateway() -> Iterator[Recorder]:
    recorder = Recorder()
    try:
        yield recorder
    finally:
        recorder.server.shutdown()


def _served_by(server: LoopbackServer, request: str, names: list[str]) -> list[str]:
    return [n for n in names if request in server.deployment.logs(n)]


def _pusher(gateway: Recorder, pushkey: str) -> dict[str, Any]:
    return {
        "kind": "http",
        "app_id": "im.vector.app.android",
        "pushkey": pushkey,
        "app_display_name": "Element",
        "device_display_name": "phone",
        "lang": "en",
        "data": {"url": gateway.url + "/_matrix/push/v1/notify"},
    }


async def _pushed(gateway: Recorder, pushkey: str, event_id: str) -> bool:
    return (pushkey, event_id) in gateway.pushes()


async def test_registration_filters_and_pushers_while_the_main_is_down(
    servers: Any, gateway: Recorder
) -> None:
    a, _ = servers
    alice = await a.register("alice")
    room_id = await a.create_room(alice)
    a.deployment.kill("main")
    try:
        assert await a.ok("GET", "/register/available", username="dora") == {"available": True}
        dora, erin = await a.register("dora"), await a.register("erin")
        assert _served_by(a, "POST /_matrix/client/v3/register", READERS)
        status, taken = await a.call("GET", "/register/available", username="dora")
        assert (status, taken["errcode"]) == (400, "M_USER_IN_USE")

        definition = {"room": {"timeline": {"limit": 1}}}
        filter_path = f"/user/{quote(dora)}/filter"
        filter_id = (await a.ok("POST", filter_path, dora, definition))["filter_id"]
        assert await a.ok("GET", f"{filter_path}/{filter_id}", dora) == definition
        second = (await a.ok("POST", filter_path, dora, {"presence": {"limit": 0}}))["filter_id"]
        assert second != filter_id

        for user in (dora, erin):
            await a.join(user, room_id, [a.name])
            await a.ok("POST", "/pushers/set", user, _pusher(gateway, user + "-phone"))
        listed = await a.ok("GET", "/pushers", dora)
        assert [p["pushkey"] for p in listed["pushers"]] == [dora + "-phone"]
        for text in ("one", "two", "three"):
            await a.send_text(alice, room_id, text)
        body = await a.ok("GET", "/sync", dora, filter=str(filter_id), timeout="0")
        timeline = body["rooms"]["join"][room_id]["timeline"]
        assert [e["content"].get("body") for e in timeline["events"]] == ["three"]
        assert timeline["limited"] is True
        while_down = await a.send_text(alice, room_id, "while the main is down")
    finally:
        await asyncio.to_thread(a.deployment.start_process, "main")

    # The main sends the notifications: the one it missed, then new ones.
    assert await eventually(lambda: _pushed(gateway, dora + "-phone", while_down), timeout=30)
    after = await a.send_text(alice, room_id, "after")
    assert await eventually(lambda: _pushed(gateway, dora + "-phone", after), timeout=30)

    # The phone logs out on a reader: the main, which cached dora's pushers while
    # sending, stops pushing to it (erin's phone shows the message was pushed).
    await a.ok("POST", "/logout", dora, {})
    gone = await a.send_text(alice, room_id, "after the logout")
    assert await eventually(lambda: _pushed(gateway, erin + "-phone", gone), timeout=30)
    assert not await _pushed(gateway, dora + "-phone", gone)


async def _member_joined(server: LoopbackServer, viewer: str, room_id: str, user: str) -> bool:
    members = await server.ok("GET", f"/rooms/{quote(room_id)}/joined_members", viewer)
    return user in members["joined"]


async def test_joins_by_alias_and_upgrades_while_the_main_is_down(servers: Any) -> None:
    a, b = servers
    alice, carol, bob = (
        await a.register("alice"),
        await a.register("carol"),
        await b.register("bob"),
    )
    club = await a.create_room(alice, room_alias_name="club", visibility="public")
    far = await b.create_room(bob, room_alias_name="far", visibility="public")
    club_alias, far_alias = f"#club:{a.name}", f"#far:{b.name}"
    a.deployment.kill("main")
    try:
        # Reads that ask B: the readers ask it themselves.
        profile = await a.ok("GET", f"/profile/{quote(bob)}", carol)
        assert profile.get("displayname") == "bob"
        name = await a.ok("GET", f"/profile/{quote(bob)}/displayname", carol)
        assert name == {"displayname": "bob"}
        resolved = await a.ok("GET", f"/directory/room/{quote(far_alias)}", carol)
        assert resolved["room_id"] == far and b.name in resolved["servers"]
        listed = await a.ok("POST", "/publicRooms", carol, {"limit": 10}, server=b.name)
        assert far in [r["room_id"] for r in listed["chunk"]]
        status, missing = await a.call("GET", f"/profile/{quote('@nobody:' + b.name)}", carol)
        assert (status, missing["errcode"]) == (404, "M_NOT_FOUND")
        joined = await a.ok("POST", f"/join/{quote(club_alias)}", carol, {})
        assert joined == {"room_id": club}
        joined = await a.ok("POST", f"/join/{quote(far_alias)}", carol, {})
        assert joined == {"room_id": far}
        assert await eventually(lambda: _member_joined(b, bob, far, carol), timeout=30)
        await a.send_text(carol, far, "joined by alias")
        assert await eventually(lambda: _texts_include(b, bob, far, "joined by alias"), timeout=30)

        upgraded = await a.ok("POST", f"/rooms/{quote(club)}/upgrade", alice, {"new_version": "11"})
        new_room = upgraded["replacement_room"]
        assert _served_by(a, "/upgrade", ["event_persister1", "event_persister2"])
        tombstone = await a.ok("GET", f"/rooms/{quote(club)}/state/m.room.tombstone", carol)
        assert tombstone["replacement_room"] == new_room
        resolved = await a.ok("GET", f"/directory/room/{quote(club_alias)}", carol)
        assert resolved["room_id"] == new_room
        assert (await a.ok("POST", f"/join/{quote(club_alias)}", carol, {})) == {
            "room_id": new_room
        }
        create = await a.ok("GET", f"/rooms/{quote(new_room)}/state/m.room.create", carol)
        assert create["predecessor"]["room_id"] == club
        assert create["room_version"] == "11"
    finally:
        await asyncio.to_thread(a.deployment.start_process, "main")


async def _texts_include(server: LoopbackServer, user: str, room_id: str, text: str) -> bool:
    return text in await server.sync_texts(user, room_id)


def _session(index: int) -> dict[str, Any]:
    return {
        "first_message_index": 0,
        "forwarded_count": 0,
        "is_verified": True,
        "session_data": {"ciphertext": f"c{index}", "ephemeral": "e", "mac": "m"},
    }


async def test_key_backup_and_settings_reads_while_the_main_is_down(servers: Any) -> None:
    a, _ = servers
    alice = await a.register("alice")
    room_id = await a.create_room(alice, visibility="public")
    token = a.tokens[alice]
    readers = [port_url(a.deployment, name) for name in READERS]
    a.deployment.kill("main")
    try:
        assert await a.ok("GET", "/voip/turnServer", alice) == {}
        assert await a.ok("GET", "/account/3pid", alice) == {"threepids": []}
        listed = await a.ok("GET", f"/directory/list/room/{quote(room_id)}", alice)
        assert listed == {"visibility": "public"}
        tag_path = f"/user/{quote(alice)}/rooms/{quote(room_id)}/tags"
        await a.ok("PUT", f"{tag_path}/u.work", alice, {"order": 0.5})
        assert await a.ok("GET", tag_path, alice) == {"tags": {"u.work": {"order": 0.5}}}

        status, missing = await a.call("GET", "/room_keys/version", alice)
        assert (status, missing["errcode"]) == (404, "M_NOT_FOUND")
        backup = {
            "algorithm": "m.megolm_backup.v1.curve25519-aes-sha2",
            "auth_data": {"public_key": "abcdefg", "signatures": {}},
        }
        # Two versions made at once on the two readers: distinct numbers (a new
        # version is MAX + 1, written under the deployment's lock).
        made = await asyncio.gather(
            *(post_to(a.http, base, token, "/room_keys/version", backup) for base in readers)
        )
        assert [status for status, _ in made] == [200, 200], made
        assert sorted(int(body["version"]) for _, body in made) == [1, 2]
        current = await a.ok("GET", "/room_keys/version", alice)
        assert (current["version"], current["count"], current["etag"]) == ("2", 0, "0")

        async def upload(base: str, first: int) -> None:
            for i in range(first, first + 10):
                url = f"{base}/_matrix/client/v3/room_keys/keys/{quote(room_id)}/s{i}"
                headers = {"Authorization": f"Bearer {token}"}
                async with a.http.put(
                    url, json=_session(i), params={"version": "2"}, headers=headers
                ) as resp:
                    assert resp.status == 200, await resp.text()

        await asyncio.gather(upload(readers[0], 0), upload(readers[1], 10))
        current = await a.ok("GET", "/room_keys/version", alice)
        assert (current["count"], current["etag"]) == (20, "20")
        keys = await a.ok("GET", "/room_keys/keys", alice, version="2")
        sessions = keys["rooms"][room_id]["sessions"]
        assert sorted(sessions) == sorted(f"s{i}" for i in range(20))
        assert sessions["s13"]["session_data"]["ciphertext"] == "c13"
        status, wrong = await a.call("PUT", f"/room_keys/keys/{quote(room_id)}/x", alice,
                                     _session(0), version="1")  # fmt: skip
        assert (status, wrong["errcode"]) == (403, "M_WRONG_ROOM_KEYS_VERSION")
        await a.ok("DELETE", "/room_keys/version/2", alice)
        assert (await a.ok("GET", "/room_keys/version", alice))["version"] == "1"
    finally:
        await asyncio.to_thread(a.deployment.start_process, "main")


async def test_history_from_before_the_join_is_backfilled_while_the_main_is_down(
    servers: Any,
) -> None:
    """A reader's /messages past the oldest event we hold asks the room's event
    persister to backfill from B (before: the main, so with it down the history
    stopped at our join)."""
    a, b = servers
    carol, bob = await a.register("carol"), await b.register("bob")
    room_id = await b.create_room(bob, name="Old history")
    for i in range(6):
        await b.send_text(bob, room_id, f"m{i}")
    await a.join(carol, room_id, [b.name])
    a.deployment.kill("main")
    try:
        texts, token = [], None
        for _ in range(10):
            params = {"dir": "b", "limit": "4", **({"from": token} if token else {})}
            page = await a.ok("GET", f"/rooms/{quote(room_id)}/messages", carol, **params)
            texts += [e["content"].get("body") for e in page["chunk"]]
            events = page["chunk"]
            token = page.get("end")
            if token is None:
                break
        assert [t for t in texts if t] == ["m5", "m4", "m3", "m2", "m1", "m0"], texts
        assert events and events[-1]["type"] == "m.room.create"
    finally:
        await asyncio.to_thread(a.deployment.start_process, "main")
