"""make_join/send_join round trip, omit_members, restricted rooms, invite v2, leave."""

from __future__ import annotations

import pytest

from homeserver.appstate import LOCAL_EVENTS, STORES
from homeserver.events import get_room_version
from tests.federation.inbound_helpers import (
    ALICE,
    RITA,
    create_room,
    fed,
    join_remote,
    remote_event,
    seed_remote_key,
    sign_template,
)

FAKE_ID = "$" + "A" * 43


@pytest.fixture
async def client(app_client):
    await seed_remote_key(app_client)
    return app_client


async def test_join_round_trip_makes_remote_user_joined(client):
    room_id = await create_room(client)
    body = await join_remote(client, room_id)
    stores = client.app[STORES]
    assert await stores.current_state.get_membership(room_id, RITA) == "join"
    assert body["origin"] == "test.local"
    assert body["members_omitted"] is False
    assert body["servers_in_room"] == ["test.local"]
    state_types = sorted((e["type"], e["state_key"]) for e in body["state"])
    assert ("m.room.member", ALICE) in state_types
    assert ("m.room.create", "") in state_types
    assert ("m.room.member", RITA) not in state_types  # state before the join
    assert body["event"]["content"]["membership"] == "join"
    assert "remote.test" in await stores.current_state.get_joined_hosts(room_id)


async def test_make_join_incompatible_version(client):
    room_id = await create_room(client)
    status, body = await fed(
        client, "GET", f"/_matrix/federation/v1/make_join/{room_id}/{RITA}?ver=1"
    )
    assert status == 400
    assert body == {
        "errcode": "M_INCOMPATIBLE_ROOM_VERSION",
        "error": body["error"],
        "room_version": "12",
    }


async def test_make_join_invite_only_is_403_and_other_server_user_is_403(client):
    room_id = await create_room(client, preset="private_chat")
    status, body = await fed(
        client, "GET", f"/_matrix/federation/v1/make_join/{room_id}/{RITA}?ver=12"
    )
    assert (status, body["errcode"]) == (403, "M_FORBIDDEN")
    public = await create_room(client)
    status, body = await fed(
        client, "GET", f"/_matrix/federation/v1/make_join/{public}/@x:elsewhere.test?ver=12"
    )
    assert (status, body["errcode"]) == (403, "M_FORBIDDEN")


async def test_send_join_rejects_event_for_another_servers_user(client):
    room_id = await create_room(client)
    status, made = await fed(
        client, "GET", f"/_matrix/federation/v1/make_join/{room_id}/{RITA}?ver=12"
    )
    template = dict(made["event"], sender="@x:elsewhere.test", state_key="@x:elsewhere.test")
    event = sign_template(template, get_room_version("12"))
    status, body = await fed(
        client, "PUT", f"/_matrix/federation/v2/send_join/{room_id}/{event.event_id}", event.pdu
    )
    assert (status, body["errcode"]) == (403, "M_FORBIDDEN")


async def test_omit_members_keeps_heroes_only(client):
    room_id = await create_room(client)
    await client.app[LOCAL_EVENTS].send(room_id, ALICE, "m.room.name", {"name": "Named"}, "")
    status, made = await fed(
        client, "GET", f"/_matrix/federation/v1/make_join/{room_id}/{RITA}?ver=12"
    )
    event = sign_template(made["event"], get_room_version("12"))
    status, body = await fed(
        client,
        "PUT",
        f"/_matrix/federation/v2/send_join/{room_id}/{event.event_id}?omit_members=true",
        event.pdu,
    )
    assert status == 200, body
    assert body["members_omitted"] is True
    assert not [e for e in body["state"] if e["type"] == "m.room.member"]
    state_ids = {Event_id(e) for e in body["state"]}
    assert not state_ids & {Event_id(e) for e in body["auth_chain"]}
    assert body["servers_in_room"] == ["test.local"]


def Event_id(pdu):
    from homeserver.events import Event

    return Event(pdu, get_room_version("12")).event_id


async def test_restricted_join_gets_local_authoriser_and_our_signature(client):
    space = await create_room(client)
    await join_remote(client, space)
    room_id = await create_room(client, preset="private_chat")
    await client.app[LOCAL_EVENTS].send(
        room_id,
        ALICE,
        "m.room.join_rules",
        {"join_rule": "restricted", "allow": [{"type": "m.room_membership", "room_id": space}]},
        "",
    )
    status, made = await fed(
        client, "GET", f"/_matrix/federation/v1/make_join/{room_id}/{RITA}?ver=12"
    )
    assert status == 200, made
    assert made["event"]["content"]["join_authorised_via_users_server"] == ALICE
    event = sign_template(made["event"], get_room_version("12"))
    status, body = await fed(
        client, "PUT", f"/_matrix/federation/v2/send_join/{room_id}/{event.event_id}", event.pdu
    )
    assert status == 200, body
    assert "test.local" in body["event"]["signatures"]
    assert await client.app[STORES].current_state.get_membership(room_id, RITA) == "join"
    # A user in no allowed room cannot be authorised.
    status, body = await fed(
        client, "GET", f"/_matrix/federation/v1/make_join/{room_id}/@zed:remote.test?ver=12"
    )
    assert (status, body["errcode"]) == (403, "M_UNABLE_TO_AUTHORISE_JOIN")


async def test_invite_v2_is_countersigned_and_visible_to_invitee(client):
    stores = client.app[STORES]
    await stores.accounts.create_user("@bob:test.local", None)
    room_id = "!remoteroom:remote.test"
    version = get_room_version("10")
    from homeserver.events.builder import build_event
    from tests.federation.inbound_helpers import REMOTE_KEY

    invite = build_event(
        version,
        room_id=room_id,
        sender=RITA,
        type="m.room.member",
        content={"membership": "invite"},
        state_key="@bob:test.local",
        prev_event_ids=[FAKE_ID],
        auth_event_ids=[FAKE_ID],
        depth=5,
        origin_server_ts=1_700_000_000_000,
        server_name="remote.test",
        signing_key=REMOTE_KEY,
    )
    stripped = [{"type": "m.room.name", "state_key": "", "sender": RITA, "content": {"name": "R"}}]
    # Since v1.16 peers (Synapse) send full PDUs here; clients must only see stripped keys.
    create_pdu = {
        "type": "m.room.create",
        "state_key": "",
        "sender": RITA,
        "content": {"room_version": "10"},
        "room_id": room_id,
        "auth_events": [],
        "prev_events": [],
        "depth": 1,
        "origin_server_ts": 1_700_000_000_000,
        "hashes": {"sha256": "x"},
        "signatures": {"remote.test": {"ed25519:k": "y"}},
    }
    status, body = await fed(
        client,
        "PUT",
        f"/_matrix/federation/v2/invite/{room_id}/{invite.event_id}",
        {"room_version": "10", "event": invite.pdu, "invite_room_state": [create_pdu, *stripped]},
    )
    assert status == 200, body
    assert set(body["event"]["signatures"]) == {"remote.test", "test.local"}
    assert await stores.current_state.get_membership(room_id, "@bob:test.local") == "invite"
    stored = await stores.events.get_event(invite.event_id)
    create_stripped = {
        "type": "m.room.create",
        "state_key": "",
        "sender": RITA,
        "content": {"room_version": "10"},
    }
    assert stored.unsigned["invite_room_state"] == [create_stripped, *stripped]
    # Unknown local user: 404.
    other = build_event(
        version,
        room_id=room_id,
        sender=RITA,
        type="m.room.member",
        content={"membership": "invite"},
        state_key="@ghost:test.local",
        prev_event_ids=[FAKE_ID],
        auth_event_ids=[FAKE_ID],
        depth=5,
        origin_server_ts=1_700_000_000_000,
        server_name="remote.test",
        signing_key=REMOTE_KEY,
    )
    status, body = await fed(
        client,
        "PUT",
        f"/_matrix/federation/v2/invite/{room_id}/{other.event_id}",
        {"room_version": "10", "event": other.pdu, "invite_room_state": []},
    )
    assert status == 404


async def test_leave_round_trip(client):
    room_id = await create_room(client)
    await join_remote(client, room_id)
    status, made = await fed(client, "GET", f"/_matrix/federation/v1/make_leave/{room_id}/{RITA}")
    assert status == 200, made
    assert made["event"]["content"] == {"membership": "leave"}
    event = sign_template(made["event"], get_room_version("12"))
    status, body = await fed(
        client, "PUT", f"/_matrix/federation/v2/send_leave/{room_id}/{event.event_id}", event.pdu
    )
    assert (status, body) == (200, {})
    assert await client.app[STORES].current_state.get_membership(room_id, RITA) == "leave"


async def test_knock_round_trip(client):
    room_id = await create_room(client, preset="private_chat")
    await client.app[LOCAL_EVENTS].send(
        room_id, ALICE, "m.room.join_rules", {"join_rule": "knock"}, ""
    )
    status, made = await fed(
        client, "GET", f"/_matrix/federation/v1/make_knock/{room_id}/{RITA}?ver=12"
    )
    assert status == 200, made
    event = sign_template(made["event"], get_room_version("12"))
    status, body = await fed(
        client, "PUT", f"/_matrix/federation/v1/send_knock/{room_id}/{event.event_id}", event.pdu
    )
    assert status == 200, body
    assert {s["type"] for s in body["knock_room_state"]} >= {"m.room.create", "m.room.join_rules"}
    # v1.16: full PDUs of the room version, not stripped events.
    for pdu in body["knock_room_state"]:
        assert {"auth_events", "prev_events", "hashes", "signatures", "depth"} <= set(pdu)
        assert "unsigned" not in pdu
    assert await client.app[STORES].current_state.get_membership(room_id, RITA) == "knock"
    _ = remote_event
