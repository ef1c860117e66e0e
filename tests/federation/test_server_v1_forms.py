"""Deprecated v1 membership endpoints (send_join, send_leave, invite) answer the spec's
`[200, {...}]` form, and send_join re-checks a restricted join's allow condition."""

from __future__ import annotations

import pytest

from homeserver.appstate import LOCAL_EVENTS, STORES
from homeserver.events import get_room_version
from homeserver.events.builder import build_event
from tests.federation.inbound_helpers import (
    ALICE,
    REMOTE_KEY,
    RITA,
    create_room,
    fed,
    join_remote,
    seed_remote_key,
    sign_template,
)


@pytest.fixture
async def client(app_client):
    await seed_remote_key(app_client)
    return app_client


async def _template(client, kind: str, room_id: str, user: str = RITA):
    status, made = await fed(
        client, "GET", f"/_matrix/federation/v1/make_{kind}/{room_id}/{user}?ver=12"
    )
    assert status == 200, made
    return sign_template(made["event"], get_room_version("12"))


async def test_v1_send_join_and_send_leave_answer_a_pair(client):
    room_id = await create_room(client)
    join = await _template(client, "join", room_id)
    status, body = await fed(
        client, "PUT", f"/_matrix/federation/v1/send_join/{room_id}/{join.event_id}", join.pdu
    )
    assert status == 200, body
    code, content = body
    assert code == 200
    assert content["origin"] == "test.local"
    assert ("m.room.create", "") in {(e["type"], e["state_key"]) for e in content["state"]}
    assert content["auth_chain"] and content["members_omitted"] is False
    stores = client.app[STORES]
    assert await stores.current_state.get_membership(room_id, RITA) == "join"

    leave = await _template(client, "leave", room_id)
    status, body = await fed(
        client, "PUT", f"/_matrix/federation/v1/send_leave/{room_id}/{leave.event_id}", leave.pdu
    )
    assert (status, body) == (200, [200, {}])
    assert await stores.current_state.get_membership(room_id, RITA) == "leave"


def _v1_invite(room_id: str, invitee: str):
    return build_event(
        get_room_version("1"),
        room_id=room_id,
        sender=RITA,
        type="m.room.member",
        content={"membership": "invite"},
        state_key=invitee,
        prev_event_ids=["$prev:remote.test"],
        auth_event_ids=["$create:remote.test"],
        depth=3,
        origin_server_ts=1_700_000_000_000,
        server_name="remote.test",
        signing_key=REMOTE_KEY,
        unsigned={
            "invite_room_state": [
                {"type": "m.room.name", "state_key": "", "sender": RITA, "content": {"name": "Old"}}
            ]
        },
    )


async def test_v1_invite_is_countersigned_and_answers_a_pair(client):
    stores = client.app[STORES]
    await stores.accounts.create_user("@bob:test.local", None)
    room_id = "!old:remote.test"
    invite = _v1_invite(room_id, "@bob:test.local")
    status, body = await fed(
        client, "PUT", f"/_matrix/federation/v1/invite/{room_id}/{invite.event_id}", invite.pdu
    )
    assert status == 200, body
    code, content = body
    assert code == 200
    assert set(content["event"]["signatures"]) == {"remote.test", "test.local"}
    assert content["event"]["event_id"] == invite.event_id
    assert await stores.current_state.get_membership(room_id, "@bob:test.local") == "invite"
    assert await stores.rooms.get_room_version(room_id) == "1"
    stored = await stores.events.get_event(invite.event_id)
    assert stored.unsigned["invite_room_state"] == [
        {"type": "m.room.name", "state_key": "", "sender": RITA, "content": {"name": "Old"}}
    ]


async def test_v1_invite_into_a_newer_room_version_is_refused(client):
    await client.app[STORES].accounts.create_user("@bob:test.local", None)
    room_id = await create_room(client, version="10")
    invite = _v1_invite(room_id, "@bob:test.local")
    status, body = await fed(
        client, "PUT", f"/_matrix/federation/v1/invite/{room_id}/{invite.event_id}", invite.pdu
    )
    assert (status, body["errcode"], body["room_version"]) == (
        400,
        "M_INCOMPATIBLE_ROOM_VERSION",
        "10",
    )


async def test_send_join_rechecks_the_restricted_allow_condition(client):
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
    join = await _template(client, "join", room_id)
    assert join.content["join_authorised_via_users_server"] == ALICE
    # Rita leaves the allowed room between make_join and send_join.
    leave = await _template(client, "leave", space)
    status, _ = await fed(
        client, "PUT", f"/_matrix/federation/v2/send_leave/{space}/{leave.event_id}", leave.pdu
    )
    assert status == 200
    status, body = await fed(
        client, "PUT", f"/_matrix/federation/v2/send_join/{room_id}/{join.event_id}", join.pdu
    )
    assert (status, body["errcode"]) == (403, "M_UNABLE_TO_AUTHORISE_JOIN")
    assert await client.app[STORES].current_state.get_membership(room_id, RITA) is None
