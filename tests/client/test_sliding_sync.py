"""Simplified sliding sync (issue 14, MSC4186) through the client API: lists ordered by
bump stamp with ranges and counts, required_state with $LAZY/$ME/wildcards, timelines
usable with /messages, incremental responses after `pos` (a retried `pos` answers the
same), unknown positions, long-polling, invites, filters, room subscriptions, the
extensions (to_device, e2ee, account_data, receipts, typing), and hostile bodies."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.client.helpers import auth, eventually, register_user

C = "/_matrix/client/v3"
SS = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync"

REQUIRED_STATE = [
    ["m.room.name", ""],
    ["m.room.encryption", ""],
    ["m.room.member", "$LAZY"],
    ["m.room.member", "$ME"],
    ["m.room.topic", ""],
    ["m.room.create", ""],
    ["m.space.child", "*"],
]


class U:
    def __init__(self, client: TestClient, data: dict[str, Any]) -> None:
        self.c = client
        self.id = data["user_id"]
        self.device = data["device_id"]
        self.h = auth(data["access_token"])

    async def ok(self, method: str, path: str, body: Any = None, **params: str) -> Any:
        resp = await self.c.request(method, C + path, json=body, headers=self.h, params=params)
        data = await resp.json()
        assert resp.status == 200, (path, data)
        return data

    async def room(self, **body: Any) -> str:
        body.setdefault("preset", "public_chat")
        return (await self.ok("POST", "/createRoom", body))["room_id"]

    async def say(self, room: str, text: str) -> str:
        path = f"/rooms/{room}/send/m.room.message/{uuid.uuid4().hex}"
        return (await self.ok("PUT", path, {"msgtype": "m.text", "body": text}))["event_id"]

    async def ss(
        self, body: dict[str, Any], pos: str | None = None, timeout: int = 0
    ) -> tuple[int, Any]:
        params = {"timeout": str(timeout)}
        if pos is not None:
            params["pos"] = pos
        resp = await self.c.post(SS, json=body, headers=self.h, params=params)
        return resp.status, await resp.json()

    async def ss_ok(self, body: dict[str, Any], pos: str | None = None, timeout: int = 0) -> Any:
        status, data = await self.ss(body, pos, timeout)
        assert status == 200, data
        return data


async def users(client: TestClient, *names: str) -> list[U]:
    return [U(client, await register_user(client, n)) for n in names]


def room_list(ranges: list[list[int]], timeline_limit: int = 1, **extra: Any) -> dict[str, Any]:
    return {
        "lists": {
            "all_rooms": {
                "ranges": ranges,
                "timeline_limit": timeline_limit,
                "required_state": REQUIRED_STATE,
                **extra,
            }
        }
    }


def bodies(room: dict[str, Any]) -> list[str]:
    return [e["content"].get("body") for e in room["timeline"] if e["type"] == "m.room.message"]


async def test_versions_advertise_simplified_sliding_sync(app_client: TestClient) -> None:
    resp = await app_client.get("/_matrix/client/versions")
    assert (await resp.json())["unstable_features"]["org.matrix.simplified_msc3575"] is True


async def test_lists_order_ranges_state_and_incremental_updates(app_client: TestClient) -> None:
    alice, bob = await users(app_client, "alice", "bob")
    rooms = [await alice.room(name=f"Room {i}") for i in range(3)]
    await bob.ok("POST", f"/join/{rooms[0]}", {})
    for i, room in enumerate(rooms):
        await alice.say(room, f"hello {i}")
    await bob.say(rooms[0], "bob speaks last")  # rooms[0] now has the newest message

    first = await alice.ss_ok(room_list([[0, 1]]))
    assert first["lists"]["all_rooms"]["count"] == 3
    assert set(first["rooms"]) == {rooms[0], rooms[2]}
    top = first["rooms"][rooms[0]]
    assert top["initial"] is True and top["name"] == "Room 0"
    assert bodies(top) == ["bob speaks last"]
    assert top["limited"] is True and top["prev_batch"]
    assert top["joined_count"] == 2 and top["invited_count"] == 0
    assert top["bump_stamp"] > first["rooms"][rooms[2]]["bump_stamp"]
    state = {(e["type"], e["state_key"]) for e in top["required_state"]}
    # $LAZY: the timeline's sender (bob); $ME: alice; plus name and create.
    assert state == {
        ("m.room.name", ""),
        ("m.room.create", ""),
        ("m.room.member", bob.id),
        ("m.room.member", alice.id),
    }
    # prev_batch continues the timeline with /messages.
    older = await alice.ok(
        "GET", f"/rooms/{rooms[0]}/messages", dir="b", limit="1", **{"from": top["prev_batch"]}
    )
    assert [e["content"].get("body") for e in older["chunk"]] == ["hello 0"]

    # Nothing new: the same position long-polls and times out with no rooms.
    idle = await alice.ss_ok(room_list([[0, 1]]), first["pos"], timeout=100)
    assert idle["rooms"] == {}

    # A message in the third room moves it to the top: it is sent (first time, in full);
    # a message in a room already sent comes as just that event.
    await alice.say(rooms[1], "room one wakes")
    await bob.say(rooms[0], "another from bob")
    second = await alice.ss_ok(room_list([[0, 1]]), first["pos"])
    assert set(second["rooms"]) == {rooms[0], rooms[1]}
    assert second["rooms"][rooms[1]]["initial"] is True
    assert bodies(second["rooms"][rooms[1]]) == ["room one wakes"]
    again = second["rooms"][rooms[0]]
    assert "initial" not in again and bodies(again) == ["another from bob"]
    assert again["num_live"] == 1 and again["required_state"] == []

    # A retried position answers the same changes (the first answer may have been lost).
    retry = await alice.ss_ok(room_list([[0, 1]]), first["pos"])
    assert set(retry["rooms"]) == set(second["rooms"])
    assert bodies(retry["rooms"][rooms[0]]) == ["another from bob"]


async def test_unknown_positions_are_m_unknown_pos(app_client: TestClient) -> None:
    (alice,) = await users(app_client, "alice")
    for pos in ("12345", "x", "-1"):
        status, data = await alice.ss(room_list([[0, 9]]), pos)
        assert status == 400 and data["errcode"] == "M_UNKNOWN_POS", (pos, data)
    first = await alice.ss_ok(room_list([[0, 9]]))
    # Another conn_id does not share positions.
    status, data = await alice.ss({**room_list([[0, 9]]), "conn_id": "other"}, first["pos"])
    assert status == 400 and data["errcode"] == "M_UNKNOWN_POS"


async def test_long_poll_wakes_on_a_new_message(app_client: TestClient) -> None:
    alice, bob = await users(app_client, "alice", "bob")
    room = await alice.room()
    await bob.ok("POST", f"/join/{room}", {})
    first = await alice.ss_ok(room_list([[0, 9]]))

    async def later() -> None:
        await asyncio.sleep(0.3)
        await bob.say(room, "wake up")

    task = asyncio.ensure_future(later())
    loop = asyncio.get_running_loop()
    started = loop.time()
    woke = await alice.ss_ok(room_list([[0, 9]]), first["pos"], timeout=10_000)
    await task
    assert loop.time() - started < 5
    assert bodies(woke["rooms"][room]) == ["wake up"]


async def test_invites_filters_and_subscriptions(app_client: TestClient) -> None:
    alice, bob = await users(app_client, "alice", "bob")
    dm = await bob.room(preset="private_chat", invite=[alice.id], is_direct=True, name="DM")
    space = await alice.room(name="Space", creation_content={"type": "m.space"})
    child = await alice.room(name="Child")
    await alice.ok("PUT", f"/rooms/{space}/state/m.space.child/{child}", {"via": ["test.local"]})
    encrypted = await alice.room(name="Secret")
    await alice.ok(
        "PUT",
        f"/rooms/{encrypted}/state/m.room.encryption",
        {"algorithm": "m.megolm.v1.aes-sha2"},
    )
    stranger = await bob.room(name="Not alice's")

    def listed(filters: dict[str, Any]) -> dict[str, Any]:
        return room_list([[0, 20]], filters=filters)

    invites = await alice.ss_ok(listed({"is_invite": True}))
    assert list(invites["rooms"]) == [dm]
    invite = invites["rooms"][dm]
    assert invite["initial"] is True and "timeline" not in invite
    assert any(s["type"] == "m.room.member" for s in invite["invite_state"])
    assert invite["name"] == "DM" and invite["is_dm"] is True

    spaces = await alice.ss_ok(listed({"room_types": ["m.space"]}))
    assert list(spaces["rooms"]) == [space]
    children = await alice.ss_ok(listed({"spaces": [space]}))
    assert list(children["rooms"]) == [child]
    secret = await alice.ss_ok(listed({"is_encrypted": True}))
    assert list(secret["rooms"]) == [encrypted]
    plain = await alice.ss_ok(listed({"is_encrypted": False, "not_room_types": ["m.space"]}))
    assert set(plain["rooms"]) == {child, dm}

    # A subscription to a room the user is not in shows nothing of it.
    await alice.say(child, "x")
    subs = await alice.ss_ok(
        {
            "room_subscriptions": {
                child: {"timeline_limit": 20, "required_state": [["*", "*"]]},
                stranger: {"timeline_limit": 20, "required_state": [["*", "*"]]},
            }
        }
    )
    assert list(subs["rooms"]) == [child]
    everything = {e["type"] for e in subs["rooms"][child]["required_state"]}
    assert {"m.room.create", "m.room.name", "m.room.power_levels"} <= everything
    assert len(subs["rooms"][child]["timeline"]) > 3


async def test_extensions(app_client: TestClient) -> None:
    alice, bob = await users(app_client, "alice", "bob")
    room = await alice.room()
    await bob.ok("POST", f"/join/{room}", {})
    event = await bob.say(room, "read me")
    await bob.ok("POST", f"/rooms/{room}/receipt/m.read/{event}", {})
    await bob.ok("PUT", f"/rooms/{room}/typing/{bob.id}", {"typing": True, "timeout": 30000})
    await alice.ok("PUT", f"/user/{alice.id}/account_data/org.example.pref", {"on": True})
    await bob.ok(
        "PUT",
        f"/sendToDevice/m.test/{uuid.uuid4().hex}",
        {"messages": {alice.id: {alice.device: {"hello": "device"}}}},
    )
    extensions = {
        name: {"enabled": True}
        for name in ("to_device", "e2ee", "account_data", "receipts", "typing")
    }
    first = await alice.ss_ok({**room_list([[0, 9]]), "extensions": extensions})
    ext = first["extensions"]
    assert [e["content"] for e in ext["to_device"]["events"]] == [{"hello": "device"}]
    assert ext["e2ee"]["device_one_time_keys_count"] == {} or isinstance(
        ext["e2ee"]["device_one_time_keys_count"], dict
    )
    assert any(e["type"] == "org.example.pref" for e in ext["account_data"]["global"])
    assert event in ext["receipts"]["rooms"][room]["content"]
    assert ext["typing"]["rooms"][room]["content"]["user_ids"] == [bob.id]

    # Acknowledging the to-device batch removes it; nothing else changed.
    since = ext["to_device"]["next_batch"]
    extensions["to_device"]["since"] = since
    second = await alice.ss_ok({**room_list([[0, 9]]), "extensions": extensions}, first["pos"])
    assert "to_device" not in second["extensions"]
    assert "receipts" not in second["extensions"] and "account_data" not in second["extensions"]


@pytest.mark.parametrize(
    "body",
    [
        {"lists": []},
        {"lists": {"a": {"ranges": [[5, 1]]}}},
        {"lists": {"a": {"ranges": [[0, "x"]]}}},
        {"lists": {"a": {"timeline_limit": -1}}},
        {"lists": {"a": {"required_state": [["m.room.name"]]}}},
        {"lists": {"a": {"filters": {"is_dm": "yes"}}}},
        {"lists": {f"l{i}": {} for i in range(60)}},
        {"room_subscriptions": {"!r:x": {"timeline_limit": True}}},
        {"extensions": {"to_device": {"since": 5}}},
        {"conn_id": 7},
    ],
)
async def test_hostile_bodies_are_400(app_client: TestClient, body: dict[str, Any]) -> None:
    (alice,) = await users(app_client, "alice")
    status, data = await alice.ss(body)
    assert status == 400 and data["errcode"] == "M_INVALID_PARAM", data


async def test_leaving_is_shown_once_and_reading_resets_counts(app_client: TestClient) -> None:
    alice, bob = await users(app_client, "alice", "bob")
    kept = await bob.room()
    gone = await bob.room()
    for room in (kept, gone):
        await alice.ok("POST", f"/join/{room}", {})
    await bob.say(kept, "one")
    last = await bob.say(kept, "two")
    first = await alice.ss_ok(room_list([[0, 9]], timeline_limit=2))
    assert first["lists"]["all_rooms"]["count"] == 2
    assert first["rooms"][kept]["notification_count"] == 2

    # Alice reads (say, on another device): the room comes back with its counts at 0.
    await alice.ok("POST", f"/rooms/{kept}/receipt/m.read/{last}", {})
    read = await eventually(  # a deployment's reader hears of the receipt a moment later
        app_client,
        lambda: alice.ss_ok(room_list([[0, 9]], timeline_limit=2), first["pos"]),
        lambda body: kept in body["rooms"],
    )
    assert read["rooms"][kept]["notification_count"] == 0
    assert read["rooms"][kept]["timeline"] == []

    # Kicked: the room comes once more, with the kick, then leaves the list.
    await bob.ok("POST", f"/rooms/{gone}/kick", {"user_id": alice.id, "reason": "bye"})
    kicked = await alice.ss_ok(room_list([[0, 9]], timeline_limit=2), read["pos"])
    membership = [e for e in kicked["rooms"][gone]["timeline"] if e["type"] == "m.room.member"]
    assert membership[-1]["content"]["membership"] == "leave"
    after = await alice.ss_ok(room_list([[0, 9]], timeline_limit=2), kicked["pos"], timeout=100)
    assert after["lists"]["all_rooms"]["count"] == 1
    assert gone not in after["rooms"]


async def test_a_device_keeps_a_bounded_number_of_connections(app_client: TestClient) -> None:
    """A client inventing conn_ids cannot grow the stored positions without bound: the
    least recently used connection is forgotten (its pos becomes M_UNKNOWN_POS)."""
    from homeserver.storage.sliding_sync import MAX_CONNECTIONS_PER_DEVICE

    (alice,) = await users(app_client, "alice")
    first = await alice.ss_ok({**room_list([[0, 1]]), "conn_id": "c0"})
    for i in range(1, MAX_CONNECTIONS_PER_DEVICE + 1):
        await alice.ss_ok({**room_list([[0, 1]]), "conn_id": f"c{i}"})
    status, data = await alice.ss({**room_list([[0, 1]]), "conn_id": "c0"}, first["pos"])
    assert (status, data["errcode"]) == (400, "M_UNKNOWN_POS")
    latest = await alice.ss_ok({**room_list([[0, 1]]), "conn_id": f"c{MAX_CONNECTIONS_PER_DEVICE}"})
    assert latest["pos"]


async def test_concurrent_writers_every_message_seen_exactly_once(app_client: TestClient) -> None:
    """While four users send into four rooms at once, a sliding sync client polling
    with its positions sees every message exactly once: each position covers exactly
    what was read for it, whatever commits meanwhile."""
    reader, *writers = await users(app_client, "reader", "w0", "w1", "w2", "w3")
    rooms = [await reader.room() for _ in writers]
    for writer in writers:
        for room in rooms:
            await writer.ok("POST", f"/join/{room}", {})
    body = room_list([[0, 9]], timeline_limit=50)
    pos = (await reader.ss_ok(body))["pos"]
    sent: list[str] = []

    async def write(i: int, writer: U) -> None:
        for n in range(15):
            sent.append(await writer.say(rooms[(i + n) % len(rooms)], f"{i}-{n}"))

    writing = asyncio.gather(*(write(i, w) for i, w in enumerate(writers)))
    seen: list[str] = []
    async with asyncio.timeout(30):
        while not writing.done() or len(seen) < len(sent):
            data = await reader.ss_ok(body, pos, timeout=300)
            pos = data["pos"]
            for room in data["rooms"].values():
                assert not room.get("limited"), "a gap would hide messages"
                seen += [e["event_id"] for e in room["timeline"] if e["type"] == "m.room.message"]
    await writing
    assert len(sent) == 60
    assert sorted(seen) == sorted(sent)  # none missed, none twice


async def test_opening_a_room_expands_its_timeline(app_client: TestClient) -> None:
    """What Element X does: the list asks timeline_limit 1; opening a room subscribes
    with 20. The next response carries the room's last 20 events although nothing new
    happened (`unstable_expanded_timeline`, as Synapse), not `initial`, with the members
    of the older senders; a later response is incremental again."""
    alice, bob = await users(app_client, "alice", "bob")
    room = await alice.room(name="Chat")
    await bob.ok("POST", f"/join/{room}")
    for i in range(8):
        await (alice if i % 2 else bob).say(room, f"m{i}")
    listed = await alice.ss_ok(room_list([[0, 9]]))
    assert bodies(listed["rooms"][room]) == ["m7"]
    opened_body = {
        **room_list([[0, 9]]),
        "room_subscriptions": {
            room: {"timeline_limit": 20, "required_state": [["m.room.member", "$LAZY"]]}
        },
    }
    opened = await alice.ss_ok(opened_body, listed["pos"])
    entry = opened["rooms"][room]
    assert bodies(entry) == [f"m{i}" for i in range(8)]
    assert entry["unstable_expanded_timeline"] is True
    assert "initial" not in entry
    members = {e["state_key"] for e in entry["required_state"] if e["type"] == "m.room.member"}
    assert bob.id in members
    # Nothing new: nothing more; then only the new message.
    again = await alice.ss_ok(opened_body, opened["pos"])
    assert room not in again["rooms"]
    await bob.say(room, "new")
    later = await alice.ss_ok(opened_body, again["pos"])
    assert bodies(later["rooms"][room]) == ["new"]
    assert "unstable_expanded_timeline" not in later["rooms"][room]


async def test_redactions_bans_and_upgrades_keep_the_list_right(app_client: TestClient) -> None:
    """The kept room order and the per-connection state under what moves rooms without
    a message: a redaction (no bump), a ban (shown once, then gone), an upgrade (the
    tombstone reaches the old room, the new room joins the list on top)."""
    alice, bob = await users(app_client, "alice", "bob")
    state = [*REQUIRED_STATE, ["m.room.tombstone", ""]]
    body = room_list([[0, 9]], timeline_limit=3, required_state=state)
    quiet, busy, doomed = await bob.room(), await bob.room(), await bob.room()
    for room in (quiet, busy, doomed):
        await alice.ok("POST", f"/join/{room}", {})
    await bob.say(quiet, "q")
    message = await bob.say(busy, "to be redacted")
    first = await alice.ss_ok(body)
    order = [r for r, _ in sorted(first["rooms"].items(), key=lambda kv: -kv[1]["bump_stamp"])]
    assert order[:2] == [busy, quiet]

    # A redaction changes the timeline, not the order.
    await bob.ok("PUT", f"/rooms/{busy}/redact/{message}/r1", {"reason": "oops"})
    redacted = await alice.ss_ok(body, first["pos"])
    events = redacted["rooms"][busy]["timeline"]
    assert [e["type"] for e in events] == ["m.room.redaction"]
    assert redacted["rooms"][busy]["bump_stamp"] == first["rooms"][busy]["bump_stamp"]

    # A ban: shown once with the ban, then the room leaves the list.
    await bob.ok("POST", f"/rooms/{doomed}/ban", {"user_id": alice.id})
    banned = await alice.ss_ok(body, redacted["pos"])
    bans = [e for e in banned["rooms"][doomed]["timeline"] if e["type"] == "m.room.member"]
    assert bans[-1]["content"]["membership"] == "ban"
    gone = await alice.ss_ok(body, banned["pos"])
    assert gone["lists"]["all_rooms"]["count"] == 2

    # An upgrade: the old room gets its tombstone; the new one tops bob's list.
    new_room = (await bob.ok("POST", f"/rooms/{quiet}/upgrade", {"new_version": "11"}))[
        "replacement_room"
    ]
    first_bob = await bob.ss_ok(body)
    assert first_bob["lists"]["all_rooms"]["count"] == 4
    assert max(first_bob["rooms"].items(), key=lambda kv: kv[1]["bump_stamp"])[0] == new_room
    upgraded = await alice.ss_ok(body, gone["pos"])
    tombstones = [
        e for e in upgraded["rooms"][quiet]["required_state"] if e["type"] == "m.room.tombstone"
    ]
    assert tombstones[0]["content"]["replacement_room"] == new_room


async def test_lazy_members_are_sent_once_per_connection(app_client: TestClient) -> None:
    """$LAZY: a member who joined long ago and speaks now comes with their first
    message on this connection, and only then (Synapse keeps the same record)."""
    alice, bob, carol = await users(app_client, "alice", "bob", "carol")
    room = await alice.room()
    await carol.ok("POST", f"/join/{room}", {})
    await bob.ok("POST", f"/join/{room}", {})
    for i in range(3):
        await alice.say(room, f"filler {i}")
    body = room_list([[0, 0]], timeline_limit=1)
    first = await bob.ss_ok(body)
    members = {
        e["state_key"]
        for e in first["rooms"][room]["required_state"]
        if e["type"] == "m.room.member"
    }
    assert carol.id not in members and alice.id in members

    await carol.say(room, "hello from carol")
    spoke = await bob.ss_ok(body, first["pos"])
    state = spoke["rooms"][room]["required_state"]
    assert [e["state_key"] for e in state if e["type"] == "m.room.member"] == [carol.id]
    # A retried position answers the same (the record belongs to the position): the
    # first answer may never have arrived.
    retried = await bob.ss_ok(body, first["pos"])
    assert [e["state_key"] for e in retried["rooms"][room]["required_state"]] == [carol.id]
    await carol.say(room, "again")
    again = await bob.ss_ok(body, retried["pos"])
    assert again["rooms"][room]["required_state"] == []
