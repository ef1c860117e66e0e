"""POST /user_directory/search: Synapse's default visibility, ranking, limits, freshness."""

from __future__ import annotations

from typing import Any

from homeserver.appstate import LOCAL_EVENTS, STORES, USER_DIRECTORY
from tests.client.helpers import auth, eventually, join_room, leave_room, make_room, make_user

S = "/_matrix/client/v3/user_directory/search"


async def search(client: Any, token: str, term: str, **extra: Any) -> dict[str, Any]:
    r = await client.post(S, json={"search_term": term, **extra}, headers=auth(token))
    assert r.status == 200, await r.text()
    return await r.json()


def ids(body: dict[str, Any]) -> list[str]:
    return [item["user_id"] for item in body["results"]]


async def finds(client: Any, token: str, term: str, expected: list[str]) -> list[str]:
    """Who a search finds, once the directory has caught up with the writes before it
    (in a deployment the main maintains it and a client reader answers the search)."""
    body = await eventually(
        client, lambda: search(client, token, term), lambda got: ids(got) == expected
    )
    return ids(body)


async def test_shared_private_room_and_public_rooms(app_client: Any) -> None:
    alice, a_tok, _ = await make_user(app_client, "alice")
    bob, _, _ = await make_user(app_client, "bob")
    carol, _, _ = await make_user(app_client, "carol")
    dave, _, _ = await make_user(app_client, "dave")
    await make_user(app_client, "lonely")  # in no room: never found

    events = app_client.server.app[LOCAL_EVENTS]
    private = await make_room(app_client, alice, preset="private_chat")
    await events.send(private, alice, "m.room.member", {"membership": "invite"}, bob)
    await join_room(app_client, private, bob)
    public = await make_room(app_client, carol, preset="public_chat")
    # dave is only in a private room alice is not in.
    await make_room(app_client, dave, preset="private_chat")

    # bob shares a private room with alice; carol is in a public room.
    assert await finds(app_client, a_tok, "bob", [bob]) == [bob]
    found = ids(await search(app_client, a_tok, ":test.local", limit=50))
    assert found == [alice, bob, carol]
    assert carol in ids(await search(app_client, a_tok, "carol"))
    assert await finds(app_client, a_tok, "dave", []) == []
    assert await finds(app_client, a_tok, "lonely", []) == []
    # Once carol's room stops being public, carol is no longer visible to alice.
    await events.send(public, carol, "m.room.join_rules", {"join_rule": "invite"}, "")
    assert await finds(app_client, a_tok, "carol", []) == []
    # world_readable history also makes members visible.
    await events.send(
        public, carol, "m.room.history_visibility", {"history_visibility": "world_readable"}, ""
    )
    assert await finds(app_client, a_tok, "carol", [carol]) == [carol]


async def test_shared_room_membership_and_leaving(app_client: Any) -> None:
    alice, a_tok, _ = await make_user(app_client, "alice")
    bob, b_tok, _ = await make_user(app_client, "bob")
    room = await make_room(app_client, alice, preset="public_chat")
    await app_client.server.app[LOCAL_EVENTS].send(
        room, alice, "m.room.join_rules", {"join_rule": "invite"}, ""
    )
    assert await finds(app_client, b_tok, "alice", []) == []
    await app_client.server.app[LOCAL_EVENTS].send(
        room, alice, "m.room.member", {"membership": "invite"}, bob
    )
    assert await finds(app_client, b_tok, "alice", []) == []  # invited is not joined
    await join_room(app_client, room, bob)
    assert await finds(app_client, b_tok, "alice", [alice]) == [alice]
    assert await finds(app_client, a_tok, "bob", [bob]) == [bob]
    await leave_room(app_client, room, bob)
    assert await finds(app_client, b_tok, "alice", []) == []


async def test_matches_display_names_case_insensitively_with_ranking(app_client: Any) -> None:
    alice, a_tok, _ = await make_user(app_client, "alice")
    room = await make_room(app_client, alice, preset="public_chat")
    users = {}
    for local, name in (
        ("zed", "Sam Smith"),
        ("smith", None),
        ("xavier", "Blacksmith"),
        ("sammy", "Samantha"),
    ):
        user_id, token, _ = await make_user(app_client, local)
        users[local] = user_id
        if name:
            r = await app_client.put(
                f"/_matrix/client/v3/profile/{user_id}/displayname",
                json={"displayname": name},
                headers=auth(token),
            )
            assert r.status == 200
        await join_room(app_client, room, user_id)
    body = await search(app_client, a_tok, "SMITH")
    # exact localpart first, then word prefix in a display name, then substring.
    assert ids(body) == [users["smith"], users["zed"], users["xavier"]]
    assert body["results"][1] == {"user_id": users["zed"], "display_name": "Sam Smith"}
    assert body["results"][0] == {"user_id": users["smith"]}
    assert body["limited"] is False
    limited = await search(app_client, a_tok, "smith", limit=2)
    assert ids(limited) == [users["smith"], users["zed"]]
    assert limited["limited"] is True
    # LIKE wildcards in the term are literal.
    assert await finds(app_client, a_tok, "%", []) == []
    assert await finds(app_client, a_tok, "_", []) == []
    assert await finds(app_client, a_tok, "   ", []) == []


async def test_every_word_of_the_term_must_match(app_client: Any) -> None:
    """As Synapse's full-text search: "ali smi" finds Alice Smith, in any order."""
    alice, a_tok, _ = await make_user(app_client, "alice")
    bob, _, _ = await make_user(app_client, "bob")
    room = await make_room(app_client, alice, preset="public_chat")
    await join_room(app_client, room, bob)
    await app_client.server.app[STORES].accounts.set_displayname(bob, "Robert Smith-Jones")
    for term in ("rob smi", "SMITH robert", "jones bob", "bob"):
        assert await finds(app_client, a_tok, term, [bob]) == [bob], term
    for term in ("robert brown", "rob % smi"):
        assert await finds(app_client, a_tok, term, []) == [], term


async def test_deactivated_users_are_hidden(app_client: Any) -> None:
    alice, a_tok, _ = await make_user(app_client, "alice")
    bob, _, _ = await make_user(app_client, "bob")
    room = await make_room(app_client, alice)
    await join_room(app_client, room, bob)
    assert await finds(app_client, a_tok, "bob", [bob]) == [bob]
    await app_client.server.app[STORES].accounts.deactivate(bob)
    assert await finds(app_client, a_tok, "bob", []) == []


async def test_remote_users_from_member_events(app_client: Any) -> None:
    alice, a_tok, _ = await make_user(app_client, "alice")
    await make_room(app_client, alice)
    directory = app_client.server.app[USER_DIRECTORY]

    class FakeEvent:
        type = "m.room.member"
        state_key = "@eve:remote.example"
        room_id = "!x:remote.example"
        content = {"membership": "join", "displayname": "Eve Remote"}

    directory.on_new_event(FakeEvent(), 1)  # type: ignore[arg-type]
    await directory.flush()
    rows = await app_client.server.app[STORES].db.fetch(
        "SELECT user_id, displayname FROM user_directory_remote_profiles"
    )
    assert [tuple(r) for r in rows] == [("@eve:remote.example", "Eve Remote")]
    # Not visible: eve shares no room with alice.
    assert await finds(app_client, a_tok, "eve", []) == []


async def test_bad_requests(app_client: Any) -> None:
    _, token, _ = await make_user(app_client, "alice")
    for body, code in (
        ({}, "M_MISSING_PARAM"),
        ({"search_term": 5}, "M_BAD_JSON"),
        ({"search_term": "a", "limit": "5"}, "M_BAD_JSON"),
        ({"search_term": "a", "limit": True}, "M_BAD_JSON"),
        ({"search_term": "a", "limit": -1}, "M_INVALID_PARAM"),
        ({"search_term": "a" * 1001}, "M_INVALID_PARAM"),
    ):
        r = await app_client.post(S, json=body, headers=auth(token))
        assert r.status == 400, body
        assert (await r.json())["errcode"] == code, body
    r = await app_client.post(S, json={"search_term": "a"})
    assert r.status == 401


async def test_index_catches_up_after_restart(app_client: Any) -> None:
    """Rooms whose visibility changed without the listener (e.g. a crash) are re-indexed."""
    alice, _, _ = await make_user(app_client, "alice")
    room = await make_room(app_client, alice, preset="public_chat")
    directory = app_client.server.app[USER_DIRECTORY]
    await directory.flush()
    db = app_client.server.app[STORES].db
    await db.execute("DELETE FROM user_directory_rooms")
    assert await directory.reconcile() == 1
    assert await db.fetchval("SELECT is_public FROM user_directory_rooms WHERE room_id = $1", room)
    assert await directory.reconcile() == 0
