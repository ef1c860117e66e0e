"""Graph reads (backfill, get_missing_events, state, state_ids, event, event_auth),
visibility for the requesting server, and the query/directory endpoints."""

from __future__ import annotations

import pytest

from homeserver.appstate import LOCAL_EVENTS, STORES
from homeserver.events import Event, get_room_version
from tests.federation.inbound_helpers import (
    ALICE,
    create_room,
    fed,
    join_remote,
    seed_remote_key,
)

V12 = get_room_version("12")


def ids(pdus):
    return [Event(p, V12).event_id for p in pdus]


@pytest.fixture
async def client(app_client):
    await seed_remote_key(app_client)
    return app_client


@pytest.fixture
async def room(client):
    room_id = await create_room(client)
    await join_remote(client, room_id)
    sent = []
    for i in range(5):
        ev = await client.app[LOCAL_EVENTS].send(
            room_id, ALICE, "m.room.message", {"body": f"m{i}", "msgtype": "m.text"}
        )
        sent.append(ev)
    return room_id, sent


async def test_backfill_walks_prev_events_newest_first(client, room):
    room_id, sent = room
    status, body = await fed(
        client, "GET", f"/_matrix/federation/v1/backfill/{room_id}?v={sent[-1].event_id}&limit=3"
    )
    assert status == 200, body
    assert body["origin"] == "test.local"
    assert ids(body["pdus"]) == [sent[4].event_id, sent[3].event_id, sent[2].event_id]


async def test_get_missing_events_between(client, room):
    room_id, sent = room
    status, body = await fed(
        client,
        "POST",
        f"/_matrix/federation/v1/get_missing_events/{room_id}",
        {"earliest_events": [sent[0].event_id], "latest_events": [sent[4].event_id], "limit": 10},
    )
    assert status == 200, body
    assert ids(body["events"]) == [e.event_id for e in sent[1:4]]


async def test_state_ids_returns_state_before_and_auth_chain(client, room):
    room_id, sent = room
    stores = client.app[STORES]
    status, body = await fed(
        client, "GET", f"/_matrix/federation/v1/state_ids/{room_id}?event_id={sent[2].event_id}"
    )
    assert status == 200, body
    current = await stores.current_state.get_current_state_ids(room_id)
    assert sorted(body["pdu_ids"]) == sorted(current.values())
    chain = await stores.events.get_auth_chain_ids(current.values())
    assert sorted(body["auth_chain_ids"]) == sorted(chain)
    assert body["auth_chain_ids"]  # create, join and power levels at least
    status, full = await fed(
        client, "GET", f"/_matrix/federation/v1/state/{room_id}?event_id={sent[2].event_id}"
    )
    assert sorted(ids(full["pdus"])) == sorted(body["pdu_ids"])
    assert sorted(ids(full["auth_chain"])) == sorted(body["auth_chain_ids"])


async def test_event_and_event_auth(client, room):
    room_id, sent = room
    status, body = await fed(client, "GET", f"/_matrix/federation/v1/event/{sent[0].event_id}")
    assert status == 200
    assert ids(body["pdus"]) == [sent[0].event_id]
    status, body = await fed(
        client, "GET", f"/_matrix/federation/v1/event_auth/{room_id}/{sent[0].event_id}"
    )
    assert status == 200
    chain = await client.app[STORES].events.get_auth_chain_ids([sent[0].event_id])
    assert sorted(ids(body["auth_chain"])) == sorted(chain)


async def test_server_without_users_cannot_read(client):
    room_id = await create_room(client)
    ev = await client.app[LOCAL_EVENTS].send(room_id, ALICE, "m.room.message", {"body": "secret"})
    status, body = await fed(
        client, "GET", f"/_matrix/federation/v1/backfill/{room_id}?v={ev.event_id}"
    )
    assert (status, body["errcode"]) == (403, "M_FORBIDDEN")
    status, body = await fed(client, "GET", f"/_matrix/federation/v1/event/{ev.event_id}")
    assert status == 403


async def test_joined_history_hidden_from_before_join(client):
    room_id = await create_room(client)
    await client.app[LOCAL_EVENTS].send(
        room_id, ALICE, "m.room.history_visibility", {"history_visibility": "joined"}, ""
    )
    early = await client.app[LOCAL_EVENTS].send(
        room_id, ALICE, "m.room.message", {"body": "before you came"}
    )
    await join_remote(client, room_id)
    status, body = await fed(client, "GET", f"/_matrix/federation/v1/event/{early.event_id}")
    assert status == 200
    assert body["pdus"][0]["content"] == {}  # redacted for the remote server


async def test_query_profile_and_directory(client):
    stores = client.app[STORES]
    await stores.accounts.create_user("@bob:test.local", None, displayname="Bob")
    status, body = await fed(
        client, "GET", "/_matrix/federation/v1/query/profile?user_id=@bob:test.local"
    )
    assert (status, body) == (200, {"displayname": "Bob"})
    status, body = await fed(
        client,
        "GET",
        "/_matrix/federation/v1/query/profile?user_id=@bob:test.local&field=avatar_url",
    )
    assert (status, body) == (200, {})
    status, body = await fed(
        client,
        "GET",
        "/_matrix/federation/v1/query/profile?user_id=@bob:test.local&field=displayname",
    )
    assert (status, body) == (200, {"displayname": "Bob"})
    status, body = await fed(
        client, "GET", "/_matrix/federation/v1/query/profile?user_id=@nobody:test.local"
    )
    assert status == 404
    room_id = await create_room(client)
    await stores.rooms.create_alias("#room:test.local", room_id, ["test.local"])
    status, body = await fed(
        client, "GET", "/_matrix/federation/v1/query/directory?room_alias=%23room:test.local"
    )
    assert (status, body) == (200, {"room_id": room_id, "servers": ["test.local"]})


async def test_user_devices_and_keys(client):
    stores = client.app[STORES]
    await stores.accounts.create_user("@bob:test.local", None)
    await stores.accounts.upsert_device("@bob:test.local", "DEV", "Phone")
    status, body = await fed(client, "GET", "/_matrix/federation/v1/user/devices/@bob:test.local")
    assert status == 200, body
    assert body["user_id"] == "@bob:test.local"
    # Device names are private by default (allow_device_name_lookup_over_federation).
    assert body["devices"] == [{"device_id": "DEV"}]
    status, body = await fed(
        client,
        "POST",
        "/_matrix/federation/v1/user/keys/query",
        {"device_keys": {"@bob:test.local": []}},
    )
    assert status == 200
    assert body["device_keys"] == {"@bob:test.local": {}}
    status, body = await fed(
        client,
        "POST",
        "/_matrix/federation/v1/user/keys/claim",
        {"one_time_keys": {"@bob:test.local": {"DEV": "signed_curve25519"}}},
    )
    assert (status, body) == (200, {"one_time_keys": {}})


async def test_public_rooms_and_hierarchy(client):
    stores = client.app[STORES]
    space = await create_room(client)
    child = await create_room(client)
    await client.app[LOCAL_EVENTS].send(space, ALICE, "m.room.name", {"name": "Space"}, "")
    await client.app[LOCAL_EVENTS].send(
        space, ALICE, "m.space.child", {"via": ["test.local"]}, child
    )
    await stores.rooms.set_room_is_public(space, True)
    status, body = await fed(client, "GET", "/_matrix/federation/v1/publicRooms?limit=10")
    assert status == 200
    assert [(c["room_id"], c.get("name"), c["num_joined_members"]) for c in body["chunk"]] == [
        (space, "Space", 1)
    ]
    status, body = await fed(
        client,
        "POST",
        "/_matrix/federation/v1/publicRooms",
        {"filter": {"generic_search_term": "nothing"}},
    )
    assert body["chunk"] == []
    status, body = await fed(client, "GET", f"/_matrix/federation/v1/hierarchy/{space}")
    assert status == 200, body
    assert body["room"]["room_id"] == space
    assert [c["state_key"] for c in body["room"]["children_state"]] == [child]
    assert [c["room_id"] for c in body["children"]] == [child]


async def test_federation_hierarchy_serves_the_subtree_it_may_reveal(client):
    """The asking server learns the tree below in one answer (grandchildren too), but
    not rooms it may not see, and a cycle ends the walk."""
    space = await create_room(client)
    sub = await create_room(client)
    leaf = await create_room(client)
    private = await create_room(client, preset="private_chat")
    send = client.app[LOCAL_EVENTS].send
    for parent, child in ((space, sub), (sub, leaf), (sub, private), (leaf, space)):
        await send(parent, ALICE, "m.space.child", {"via": ["test.local"]}, child)
    status, body = await fed(client, "GET", f"/_matrix/federation/v1/hierarchy/{space}")
    assert status == 200, body
    assert [c["room_id"] for c in body["children"]] == [sub, leaf]
    assert body["inaccessible_children"] == [private]
    by_id = {c["room_id"]: c for c in body["children"]}
    assert {c["state_key"] for c in by_id[sub]["children_state"]} == {leaf, private}
