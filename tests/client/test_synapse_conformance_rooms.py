"""Room answers where clients and conformance suites compare us with Synapse: the
r0-era POST send/redact without a transaction ID, kicking someone not in the room,
/event of a room you cannot see, and what an upgrade carries over."""

from __future__ import annotations

from typing import Any

from tests.client.test_rooms import call, create, users  # noqa: F401 (fixture)


async def _timeline_bodies(client: Any, room: str, token: str) -> list[str]:
    data = await call(client, "GET", f"/rooms/{room}/messages?dir=b&limit=50", token)
    return [e["content"].get("body") for e in data["chunk"] if e["type"] == "m.room.message"]


async def test_post_send_and_redact_without_txn_id(app_client: Any, users: Any) -> None:  # noqa: F811
    _, atok = users["alice"]
    room = await create(app_client, atok, {"preset": "public_chat"})
    first = await call(
        app_client,
        "POST",
        f"/rooms/{room}/send/m.room.message",
        atok,
        {"body": "a", "msgtype": "m.text"},
    )
    again = await call(
        app_client,
        "POST",
        f"/rooms/{room}/send/m.room.message",
        atok,
        {"body": "a", "msgtype": "m.text"},
    )
    # Without a transaction ID each request is a new event.
    assert first["event_id"] != again["event_id"]
    assert await _timeline_bodies(app_client, room, atok) == ["a", "a"]
    redaction = await call(
        app_client, "POST", f"/rooms/{room}/redact/{first['event_id']}", atok, {"reason": "oops"}
    )
    assert redaction["event_id"].startswith("$")
    event = await call(app_client, "GET", f"/rooms/{room}/event/{first['event_id']}", atok)
    assert event["content"] == {}
    assert event["unsigned"]["redacted_because"]["event_id"] == redaction["event_id"]


async def test_kick_of_someone_not_in_the_room_is_403(app_client: Any, users: Any) -> None:  # noqa: F811
    _, atok = users["alice"]
    bob, btok = users["bob"]
    carol, _ = users["carol"]
    room = await create(app_client, atok, {"preset": "public_chat"})
    err = await call(
        app_client, "POST", f"/rooms/{room}/kick", atok, {"user_id": carol}, status=403
    )
    assert err["errcode"] == "M_FORBIDDEN"
    await call(app_client, "POST", f"/rooms/{room}/join", btok, {})
    await call(app_client, "POST", f"/rooms/{room}/kick", atok, {"user_id": bob})
    err = await call(app_client, "POST", f"/rooms/{room}/kick", atok, {"user_id": bob}, status=403)
    assert err["errcode"] == "M_FORBIDDEN"  # already left
    await call(app_client, "POST", f"/rooms/{room}/ban", atok, {"user_id": carol})
    err = await call(
        app_client, "POST", f"/rooms/{room}/kick", atok, {"user_id": carol}, status=403
    )
    assert err["errcode"] == "M_FORBIDDEN"  # banned
    members = await call(app_client, "GET", f"/rooms/{room}/members", atok)
    memberships = {e["state_key"]: e["content"]["membership"] for e in members["chunk"]}
    assert memberships[carol] == "ban" and memberships[bob] == "leave"


async def test_event_of_a_room_you_cannot_see_is_404(app_client: Any, users: Any) -> None:  # noqa: F811
    _, atok = users["alice"]
    _, btok = users["bob"]
    room = await create(app_client, atok, {"preset": "private_chat"})
    sent = await call(
        app_client, "PUT", f"/rooms/{room}/send/m.room.message/t1", atok, {"body": "s"}
    )
    err = await call(app_client, "GET", f"/rooms/{room}/event/{sent['event_id']}", btok, status=404)
    assert err == {"errcode": "M_NOT_FOUND", "error": "Event not found."}


async def test_upgrade_of_unknown_room_is_404(app_client: Any, users: Any) -> None:  # noqa: F811
    _, atok = users["alice"]
    err = await call(
        app_client,
        "POST",
        "/rooms/!nope:test.local/upgrade",
        atok,
        {"new_version": "11"},
        status=404,
    )
    assert err["errcode"] == "M_NOT_FOUND"


async def test_upgrade_cites_the_tombstone_and_carries_bans_guest_access_and_space_children(
    app_client: Any,
    users: Any,  # noqa: F811
) -> None:
    _, atok = users["alice"]
    carol, _ = users["carol"]
    space = await create(
        app_client,
        atok,
        {"preset": "public_chat", "room_version": "10", "creation_content": {"type": "m.space"}},
    )
    await call(
        app_client,
        "PUT",
        f"/rooms/{space}/state/m.room.guest_access",
        atok,
        {"guest_access": "can_join"},
    )
    child = {"via": ["test.local"], "suggested": True}
    await call(
        app_client, "PUT", f"/rooms/{space}/state/m.space.child/!child:test.local", atok, child
    )
    await call(app_client, "PUT", f"/rooms/{space}/state/m.space.child/!gone:test.local", atok, {})
    await call(
        app_client, "POST", f"/rooms/{space}/ban", atok, {"user_id": carol, "reason": "spam"}
    )

    new = (await call(app_client, "POST", f"/rooms/{space}/upgrade", atok, {"new_version": "11"}))[
        "replacement_room"
    ]
    old_state = await call(app_client, "GET", f"/rooms/{space}/state", atok)
    tombstone = next(e for e in old_state if e["type"] == "m.room.tombstone")
    assert tombstone["content"]["replacement_room"] == new
    create_ev = await call(app_client, "GET", f"/rooms/{new}/state/m.room.create", atok)
    assert create_ev["predecessor"] == {"room_id": space, "event_id": tombstone["event_id"]}
    assert create_ev["type"] == "m.space"
    new_state = {
        (e["type"], e["state_key"]): e["content"]
        for e in await call(app_client, "GET", f"/rooms/{new}/state", atok)
    }
    assert new_state[("m.room.guest_access", "")] == {"guest_access": "can_join"}
    assert new_state[("m.space.child", "!child:test.local")] == child
    assert ("m.space.child", "!gone:test.local") not in new_state
    assert new_state[("m.room.member", carol)] == {"membership": "ban", "reason": "spam"}


async def test_alias_rules_of_the_canonical_alias(app_client: Any, users: Any) -> None:  # noqa: F811
    """Bad alias syntax is 400 M_INVALID_PARAM (an alias elsewhere is M_BAD_ALIAS), and
    deleting an alias removes it from m.room.canonical_alias, as Synapse does."""
    _, atok = users["alice"]
    room = await create(app_client, atok, {"preset": "public_chat", "room_alias_name": "main"})
    await call(app_client, "PUT", "/directory/room/%23second:test.local", atok, {"room_id": room})
    for bad in (["no-sigil"], ["#missing-server"]):
        err = await call(
            app_client,
            "PUT",
            f"/rooms/{room}/state/m.room.canonical_alias",
            atok,
            {"alias": "#main:test.local", "alt_aliases": bad},
            status=400,
        )
        assert err["errcode"] == "M_INVALID_PARAM", bad
    err = await call(
        app_client,
        "PUT",
        f"/rooms/{room}/state/m.room.canonical_alias",
        atok,
        {"alt_aliases": ["#nowhere:test.local"]},
        status=400,
    )
    assert err["errcode"] == "M_BAD_ALIAS"
    content = {"alias": "#main:test.local", "alt_aliases": ["#second:test.local"]}
    await call(app_client, "PUT", f"/rooms/{room}/state/m.room.canonical_alias", atok, content)
    await call(app_client, "DELETE", "/directory/room/%23second:test.local", atok)
    got = await call(app_client, "GET", f"/rooms/{room}/state/m.room.canonical_alias", atok)
    assert got == {"alias": "#main:test.local", "alt_aliases": []}
    await call(app_client, "DELETE", "/directory/room/%23main:test.local", atok)
    got = await call(app_client, "GET", f"/rooms/{room}/state/m.room.canonical_alias", atok)
    assert got == {"alt_aliases": []}
