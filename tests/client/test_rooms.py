"""Rooms client API: createRoom, membership, state, members, directory, upgrades."""

from __future__ import annotations

from typing import Any

import pytest

from tests.client.helpers import auth, eventually, make_user

V3 = "/_matrix/client/v3"


@pytest.fixture
async def users(app_client: Any) -> dict[str, tuple[str, str]]:
    out = {}
    for name in ("alice", "bob", "carol"):
        user_id, token, _ = await make_user(app_client, name)
        out[name] = (user_id, token)
    return out


async def create(client: Any, token: str, body: dict[str, Any] | None = None) -> str:
    resp = await client.post(f"{V3}/createRoom", json=body or {}, headers=auth(token))
    data = await resp.json()
    assert resp.status == 200, data
    return data["room_id"]


async def call(
    client: Any, method: str, path: str, token: str | None, body: Any = None, status: int = 200
) -> Any:
    headers = auth(token) if token else {}
    kwargs: dict[str, Any] = {"headers": headers}
    if body is not None:
        kwargs["json"] = body
    resp = await client.request(method, f"{V3}{path}", **kwargs)
    data = await resp.json()
    assert resp.status == status, (resp.status, data)
    return data


async def test_create_room_state_and_members(app_client: Any, users: Any) -> None:
    alice, atok = users["alice"]
    bob, _ = users["bob"]
    room = await create(
        app_client,
        atok,
        {
            "name": "Room",
            "topic": "About things",
            "preset": "private_chat",
            "invite": [bob],
            "is_direct": True,
            "initial_state": [
                {"type": "m.room.encryption", "content": {"algorithm": "m.megolm.v1.aes-sha2"}}
            ],
        },
    )
    assert room.startswith("!")
    state = await call(app_client, "GET", f"/rooms/{room}/state", atok)
    by_key = {(e["type"], e["state_key"]): e for e in state}
    create_ev = by_key[("m.room.create", "")]
    assert create_ev["content"]["room_version"] == "12"
    assert create_ev["sender"] == alice
    assert by_key[("m.room.name", "")]["content"] == {"name": "Room"}
    assert by_key[("m.room.topic", "")]["content"]["topic"] == "About things"
    assert by_key[("m.room.join_rules", "")]["content"] == {"join_rule": "invite"}
    assert by_key[("m.room.history_visibility", "")]["content"] == {"history_visibility": "shared"}
    assert by_key[("m.room.encryption", "")]["content"]["algorithm"] == "m.megolm.v1.aes-sha2"
    invite = by_key[("m.room.member", bob)]
    assert invite["content"] == {"membership": "invite", "is_direct": True}
    assert invite["room_id"] == room and "unsigned" in invite
    assert "hashes" not in invite and "signatures" not in invite and "auth_events" not in invite

    name = await call(app_client, "GET", f"/rooms/{room}/state/m.room.name", atok)
    assert name == {"name": "Room"}
    name = await call(app_client, "GET", f"/rooms/{room}/state/m.room.name/", atok)
    assert name == {"name": "Room"}
    full = await call(app_client, "GET", f"/rooms/{room}/state/m.room.name?format=event", atok)
    assert full["type"] == "m.room.name" and full["state_key"] == ""
    missing = await call(app_client, "GET", f"/rooms/{room}/state/m.room.avatar", atok, status=404)
    assert missing["errcode"] == "M_NOT_FOUND"

    members = await call(app_client, "GET", f"/rooms/{room}/members", atok)
    assert sorted((e["state_key"], e["content"]["membership"]) for e in members["chunk"]) == [
        (alice, "join"),
        (bob, "invite"),
    ]
    only_join = await call(app_client, "GET", f"/rooms/{room}/members?membership=join", atok)
    assert [e["state_key"] for e in only_join["chunk"]] == [alice]
    not_join = await call(app_client, "GET", f"/rooms/{room}/members?not_membership=join", atok)
    assert [e["state_key"] for e in not_join["chunk"]] == [bob]
    joined = await call(app_client, "GET", f"/rooms/{room}/joined_members", atok)
    assert joined == {"joined": {alice: {}}}


async def test_non_member_cannot_read_state(app_client: Any, users: Any) -> None:
    _, atok = users["alice"]
    _, ctok = users["carol"]
    room = await create(app_client, atok, {"preset": "private_chat"})
    for path in (
        f"/rooms/{room}/state",
        f"/rooms/{room}/state/m.room.create",
        f"/rooms/{room}/members",
        f"/rooms/{room}/joined_members",
        f"/rooms/{room}/messages",
    ):
        body = await call(app_client, "GET", path, ctok, status=403)
        assert body["errcode"] == "M_FORBIDDEN", path
    body = await call(app_client, "GET", "/rooms/!nope:test.local/state", ctok, status=403)
    assert body["errcode"] == "M_FORBIDDEN"


async def test_join_leave_forget_and_joined_rooms(app_client: Any, users: Any) -> None:
    alice, atok = users["alice"]
    bob, btok = users["bob"]
    room = await create(app_client, atok, {"preset": "public_chat"})
    assert await call(app_client, "POST", f"/rooms/{room}/join", btok, {}) == {"room_id": room}
    assert await call(app_client, "GET", "/joined_rooms", btok) == {"joined_rooms": [room]}
    joined = await call(app_client, "GET", f"/rooms/{room}/joined_members", btok)
    assert set(joined["joined"]) == {alice, bob}
    err = await call(app_client, "POST", f"/rooms/{room}/forget", btok, {}, status=400)
    assert err["errcode"] == "M_UNKNOWN"
    assert await call(app_client, "POST", f"/rooms/{room}/leave", btok, {}) == {}
    assert await call(app_client, "POST", f"/rooms/{room}/leave", btok, {}) == {}
    assert await call(app_client, "GET", "/joined_rooms", btok) == {"joined_rooms": []}
    assert await call(app_client, "POST", f"/rooms/{room}/forget", btok, {}) == {}
    store = app_client.server.app
    from homeserver.appstate import ROOM_READ_STORE

    assert await store[ROOM_READ_STORE].is_forgotten(bob, room)
    assert await call(app_client, "POST", f"/join/{room}", btok, {}) == {"room_id": room}
    assert not await store[ROOM_READ_STORE].is_forgotten(bob, room)


async def test_join_by_alias_and_directory(app_client: Any, users: Any) -> None:
    alice, atok = users["alice"]
    _, btok = users["bob"]
    room = await create(
        app_client, atok, {"room_alias_name": "lounge", "visibility": "public", "name": "L"}
    )
    alias = "#lounge:test.local"
    got = await call(app_client, "GET", "/directory/room/%23lounge:test.local", None)
    assert got == {"room_id": room, "servers": ["test.local"]}
    canonical = await call(app_client, "GET", f"/rooms/{room}/state/m.room.canonical_alias", atok)
    assert canonical == {"alias": alias}
    joined = await call(app_client, "POST", "/join/%23lounge:test.local", btok, {})
    assert joined == {"room_id": room}
    # Taken alias on createRoom.
    err = await call(
        app_client, "POST", "/createRoom", atok, {"room_alias_name": "lounge"}, status=400
    )
    assert err["errcode"] == "M_ROOM_IN_USE"
    # Extra alias, listing, deletion permissions.
    assert (
        await call(app_client, "PUT", "/directory/room/%23den:test.local", atok, {"room_id": room})
        == {}
    )
    err = await call(
        app_client, "PUT", "/directory/room/%23den:test.local", atok, {"room_id": room}, status=409
    )
    assert err["errcode"] == "M_UNKNOWN"
    aliases = await call(app_client, "GET", f"/rooms/{room}/aliases", btok)
    assert aliases == {"aliases": ["#den:test.local", alias]}
    err = await call(app_client, "DELETE", "/directory/room/%23den:test.local", btok, status=403)
    assert err["errcode"] == "M_FORBIDDEN"
    assert await call(app_client, "DELETE", "/directory/room/%23den:test.local", atok) == {}
    err = await call(app_client, "GET", "/directory/room/%23den:test.local", None, status=404)
    assert err["errcode"] == "M_NOT_FOUND"
    err = await call(
        app_client, "PUT", "/directory/room/%23x:elsewhere.org", atok, {"room_id": room}, status=400
    )
    assert err["errcode"] == "M_INVALID_PARAM"

    # Public rooms directory.
    vis = await call(app_client, "GET", f"/directory/list/room/{room}", None)
    assert vis == {"visibility": "public"}
    err = await call(app_client, "GET", "/publicRooms", None, status=401)
    assert err["errcode"] == "M_MISSING_TOKEN"  # allow_public_rooms_without_auth is off
    listing = await call(app_client, "GET", "/publicRooms", btok)
    assert listing["total_room_count_estimate"] == 1
    (entry,) = listing["chunk"]
    assert entry == {
        "room_id": room,
        "num_joined_members": 2,
        "world_readable": False,
        "guest_can_join": False,
        "join_rule": "public",
        "name": "L",
        "canonical_alias": alias,
        "room_version": "12",
    }
    found = await call(
        app_client, "POST", "/publicRooms", btok, {"filter": {"generic_search_term": "lou"}}
    )
    assert [e["room_id"] for e in found["chunk"]] == [room]
    none = await call(
        app_client, "POST", "/publicRooms", btok, {"filter": {"generic_search_term": "zzz"}}
    )
    assert none["chunk"] == []
    err = await call(
        app_client,
        "PUT",
        f"/directory/list/room/{room}",
        btok,
        {"visibility": "private"},
        status=403,
    )
    assert err["errcode"] == "M_FORBIDDEN"
    assert (
        await call(
            app_client, "PUT", f"/directory/list/room/{room}", atok, {"visibility": "private"}
        )
        == {}
    )

    async def listed() -> list[Any]:
        return list((await call(app_client, "GET", "/publicRooms", btok))["chunk"])

    # (A deployment: Bob's reader hears of the main's change a moment later.)
    assert await eventually(app_client, listed, lambda chunk: chunk == []) == []


async def test_public_rooms_pagination(app_client: Any, users: Any) -> None:
    _, atok = users["alice"]
    rooms = {await create(app_client, atok, {"visibility": "public"}) for _ in range(3)}
    first = await call(app_client, "GET", "/publicRooms?limit=2", atok)
    assert len(first["chunk"]) == 2 and first["next_batch"]
    second = await call(
        app_client, "GET", f"/publicRooms?limit=2&since={first['next_batch']}", atok
    )
    assert len(second["chunk"]) == 1 and "next_batch" not in second
    assert second["prev_batch"] == "o0"
    assert {e["room_id"] for e in first["chunk"] + second["chunk"]} == rooms


async def test_public_rooms_filtered_by_room_type(app_client: Any, users: Any) -> None:
    """MSC3827 (stable in v1.4, advertised as org.matrix.msc3827.stable): Element's
    search asks for public spaces with room_types ["m.space"]; null means plain rooms."""
    _, atok = users["alice"]
    space = await create(
        app_client, atok, {"visibility": "public", "creation_content": {"type": "m.space"}}
    )
    room = await create(app_client, atok, {"visibility": "public"})

    async def listed(room_types: list[Any] | None) -> set[str]:
        body = {"filter": {"room_types": room_types}} if room_types is not None else {}
        answer = await call(app_client, "POST", "/publicRooms", atok, body)
        return {e["room_id"] for e in answer["chunk"]}

    assert await listed(["m.space"]) == {space}
    assert await listed([None]) == {room}
    assert await listed([None, "m.space"]) == await listed(None) == {space, room}
    spaces = await call(
        app_client, "POST", "/publicRooms", atok, {"filter": {"room_types": ["m.space"]}}
    )
    assert spaces["chunk"][0]["room_type"] == "m.space"


async def test_invite_kick_ban_unban(app_client: Any, users: Any) -> None:
    alice, atok = users["alice"]
    bob, btok = users["bob"]
    carol, ctok = users["carol"]
    room = await create(app_client, atok, {"preset": "private_chat"})
    err = await call(app_client, "POST", f"/rooms/{room}/join", btok, {}, status=403)
    assert err["errcode"] == "M_FORBIDDEN"
    assert (
        await call(
            app_client, "POST", f"/rooms/{room}/invite", atok, {"user_id": bob, "reason": "hi"}
        )
        == {}
    )
    member = await call(app_client, "GET", f"/rooms/{room}/state/m.room.member/{bob}", atok)
    assert member == {"membership": "invite", "reason": "hi"}
    await call(app_client, "POST", f"/rooms/{room}/join", btok, {})
    await call(app_client, "POST", f"/rooms/{room}/invite", atok, {"user_id": carol})
    await call(app_client, "POST", f"/rooms/{room}/join", ctok, {})
    # bob (PL 0) cannot kick carol.
    err = await call(
        app_client, "POST", f"/rooms/{room}/kick", btok, {"user_id": carol}, status=403
    )
    assert err["errcode"] == "M_FORBIDDEN"
    await call(app_client, "POST", f"/rooms/{room}/kick", atok, {"user_id": carol, "reason": "bye"})
    member = await call(app_client, "GET", f"/rooms/{room}/state/m.room.member/{carol}", atok)
    assert member == {"membership": "leave", "reason": "bye"}
    await call(app_client, "POST", f"/rooms/{room}/ban", atok, {"user_id": bob})
    member = await call(app_client, "GET", f"/rooms/{room}/state/m.room.member/{bob}", atok)
    assert member["membership"] == "ban"
    err = await call(
        app_client, "POST", f"/rooms/{room}/invite", atok, {"user_id": bob}, status=403
    )
    assert err["errcode"] == "M_FORBIDDEN"
    err = await call(
        app_client, "POST", f"/rooms/{room}/unban", atok, {"user_id": carol}, status=403
    )
    await call(app_client, "POST", f"/rooms/{room}/unban", atok, {"user_id": bob})
    member = await call(app_client, "GET", f"/rooms/{room}/state/m.room.member/{bob}", atok)
    assert member["membership"] == "leave"
    assert alice


async def test_knock(app_client: Any, users: Any) -> None:
    alice, atok = users["alice"]
    bob, btok = users["bob"]
    room = await create(
        app_client,
        atok,
        {"initial_state": [{"type": "m.room.join_rules", "content": {"join_rule": "knock"}}]},
    )
    assert await call(app_client, "POST", f"/knock/{room}", btok, {"reason": "let me in"}) == {
        "room_id": room
    }
    member = await call(app_client, "GET", f"/rooms/{room}/state/m.room.member/{bob}", atok)
    assert member["membership"] == "knock" and member["reason"] == "let me in"
    assert alice


async def test_left_user_reads_state_at_leave(app_client: Any, users: Any) -> None:
    _, atok = users["alice"]
    bob, btok = users["bob"]
    room = await create(app_client, atok, {"preset": "public_chat", "name": "Before"})
    await call(app_client, "POST", f"/rooms/{room}/join", btok, {})
    await call(app_client, "POST", f"/rooms/{room}/leave", btok, {})
    await call(app_client, "PUT", f"/rooms/{room}/state/m.room.name", atok, {"name": "After"})
    assert await call(app_client, "GET", f"/rooms/{room}/state/m.room.name", btok) == {
        "name": "Before"
    }
    members = await call(app_client, "GET", f"/rooms/{room}/members", btok)
    assert {e["state_key"]: e["content"]["membership"] for e in members["chunk"]}[bob] == "leave"
    assert await call(app_client, "GET", f"/rooms/{room}/state/m.room.name", atok) == {
        "name": "After"
    }


async def test_members_at_token(app_client: Any, users: Any) -> None:
    alice, atok = users["alice"]
    bob, btok = users["bob"]
    room = await create(app_client, atok, {"preset": "public_chat"})
    first = await call(app_client, "GET", f"/rooms/{room}/messages?dir=b&limit=1", atok)
    await call(app_client, "POST", f"/rooms/{room}/join", btok, {})
    at = first["start"]
    old = await call(app_client, "GET", f"/rooms/{room}/members?at={at}", atok)
    assert [e["state_key"] for e in old["chunk"]] == [alice]
    now = await call(app_client, "GET", f"/rooms/{room}/members", atok)
    assert sorted(e["state_key"] for e in now["chunk"]) == [alice, bob]


async def test_state_put_and_noop(app_client: Any, users: Any) -> None:
    _, atok = users["alice"]
    _, btok = users["bob"]
    room = await create(app_client, atok, {"preset": "public_chat"})
    first = await call(app_client, "PUT", f"/rooms/{room}/state/m.room.topic", atok, {"topic": "x"})
    again = await call(
        app_client, "PUT", f"/rooms/{room}/state/m.room.topic/", atok, {"topic": "x"}
    )
    assert first["event_id"] == again["event_id"]
    custom = await call(
        app_client, "PUT", f"/rooms/{room}/state/org.example/some%2Fkey", atok, {"a": 1}
    )
    assert custom["event_id"].startswith("$")
    got = await call(app_client, "GET", f"/rooms/{room}/state/org.example/some%2Fkey", atok)
    assert got == {"a": 1}
    await call(app_client, "POST", f"/rooms/{room}/join", btok, {})
    err = await call(
        app_client, "PUT", f"/rooms/{room}/state/m.room.name", btok, {"name": "n"}, status=403
    )
    assert err["errcode"] == "M_FORBIDDEN"
    ev = await call(app_client, "GET", f"/rooms/{room}/state/m.room.topic?format=event", atok)
    second = await call(
        app_client, "PUT", f"/rooms/{room}/state/m.room.topic", atok, {"topic": "y"}
    )
    ev2 = await call(app_client, "GET", f"/rooms/{room}/event/{second['event_id']}", atok)
    assert ev2["unsigned"]["replaces_state"] == ev["event_id"]
    assert ev2["unsigned"]["prev_content"] == {"topic": "x"}
    err = await call(
        app_client,
        "PUT",
        f"/rooms/{room}/state/m.room.canonical_alias",
        atok,
        {"alias": "#nope:test.local"},
        status=400,
    )
    assert err["errcode"] == "M_BAD_ALIAS"


async def test_upgrade_room(app_client: Any, users: Any) -> None:
    alice, atok = users["alice"]
    _, btok = users["bob"]
    room = await create(
        app_client,
        atok,
        {
            "preset": "public_chat",
            "name": "Old",
            "room_version": "10",
            "room_alias_name": "up",
            "visibility": "public",
        },
    )
    await call(app_client, "POST", f"/rooms/{room}/join", btok, {})
    err = await call(
        app_client, "POST", f"/rooms/{room}/upgrade", btok, {"new_version": "11"}, status=403
    )
    assert err["errcode"] == "M_FORBIDDEN"
    err = await call(
        app_client, "POST", f"/rooms/{room}/upgrade", atok, {"new_version": "99"}, status=400
    )
    assert err["errcode"] == "M_UNSUPPORTED_ROOM_VERSION"
    new = (await call(app_client, "POST", f"/rooms/{room}/upgrade", atok, {"new_version": "12"}))[
        "replacement_room"
    ]
    tomb = await call(app_client, "GET", f"/rooms/{room}/state/m.room.tombstone", atok)
    assert tomb["replacement_room"] == new
    create_ev = await call(app_client, "GET", f"/rooms/{new}/state/m.room.create", atok)
    assert create_ev["predecessor"] == {"room_id": room}
    assert create_ev["room_version"] == "12"
    assert await call(app_client, "GET", f"/rooms/{new}/state/m.room.name", atok) == {"name": "Old"}
    pl = await call(app_client, "GET", f"/rooms/{new}/state/m.room.power_levels", atok)
    assert alice not in pl["users"]  # v12: creators are implicit
    got = await call(app_client, "GET", "/directory/room/%23up:test.local", None)
    assert got["room_id"] == new
    assert (await call(app_client, "GET", f"/directory/list/room/{new}", None)) == {
        "visibility": "public"
    }
    old_pl = await call(app_client, "GET", f"/rooms/{room}/state/m.room.power_levels", atok)
    assert old_pl["events_default"] == 50 and old_pl["invite"] == 50


async def test_room_summary(app_client: Any, users: Any) -> None:
    _, atok = users["alice"]
    _, ctok = users["carol"]
    room = await create(app_client, atok, {"preset": "public_chat", "name": "S"})
    summary = await app_client.get(f"/_matrix/client/v1/room_summary/{room}", headers=auth(ctok))
    body = await summary.json()
    assert summary.status == 200
    assert body["room_id"] == room and body["name"] == "S" and body["join_rule"] == "public"
    assert "membership" not in body
    # MSC3266's unstable paths, where matrix-js-sdk's getRoomSummary asks (Synapse's).
    for path in (f"summary/{room}", f"rooms/{room}/summary", f"room_summary/{room}"):
        unstable = f"/_matrix/client/unstable/im.nheko.summary/{path}"
        resp = await app_client.get(unstable, headers=auth(ctok))
        assert resp.status == 200 and await resp.json() == body, path
    private = await create(app_client, atok, {"preset": "private_chat"})
    resp = await app_client.get(f"/_matrix/client/v1/room_summary/{private}", headers=auth(ctok))
    assert resp.status == 404


async def test_public_rooms_without_a_token_only_when_allowed(
    aiohttp_client: Any, tmp_config: Any
) -> None:
    """Synapse's allow_public_rooms_without_auth: anonymous readers of the directory
    only when the operator says so; the listing they get is the cached one, and a
    room published meanwhile shows at once."""
    from homeserver.app import create_app

    client = await aiohttp_client(create_app(tmp_config(allow_public_rooms_without_auth=True)))
    _, token, _ = await make_user(client, "ann")
    assert (await call(client, "GET", "/publicRooms", None))["chunk"] == []
    room = await create(client, token, {"visibility": "public", "name": "Open"})
    listing = await call(client, "GET", "/publicRooms", None)
    assert [(e["room_id"], e["name"]) for e in listing["chunk"]] == [(room, "Open")]
    await call(client, "PUT", f"/directory/list/room/{room}", token, {"visibility": "private"})
    assert (await call(client, "GET", "/publicRooms", None))["chunk"] == []


async def test_public_rooms_listing_is_built_once_and_shared(app_client: Any, users: Any) -> None:
    """Issue 8.14: a /publicRooms request costs a slice of a cached list, not a summary
    (several database reads) per published room."""
    from homeserver.appstate import ROOM_DIRECTORY

    _, atok = users["alice"]
    for _ in range(30):
        await create(app_client, atok, {"visibility": "public"})
    first = await call(app_client, "GET", "/publicRooms?limit=5", atok)
    directory = app_client.app[ROOM_DIRECTORY]
    built = 0
    original = directory.room_summary

    async def counting(room_id: str) -> Any:
        nonlocal built
        built += 1
        return await original(room_id)

    directory.room_summary = counting  # type: ignore[method-assign]
    for _ in range(20):
        again = await call(app_client, "GET", "/publicRooms?limit=5", atok)
        assert again["chunk"] == first["chunk"]
    assert built == 0
