"""Hostile peers and membership (security issue, items 1, 7 and 12).

A signed fake peer (remote.test, see inbound_helpers) attacks through the federation
API; what our users see is checked through the client API:

- item 1: a forged invite (from a server with no user in the room) must not rewrite a
  joined user's membership, and the user's re-join stays local (no peer's answer can
  change the room's state);
- item 7: send_join / send_leave built on state from before a ban are refused like
  /send soft-fails them, not let in above the ban;
- item 12: an invite naming a room in our own namespace that we do not know is refused,
  and a forged invite does not open a private room's summary.
"""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from homeserver.appstate import STORES
from homeserver.events import get_room_version
from homeserver.events.builder import build_event
from homeserver.events.hashing import compute_event_id
from homeserver.graph.auth_rules import auth_types_for_event
from tests.client.helpers import auth, make_room, make_user
from tests.federation.inbound_helpers import (
    REMOTE,
    REMOTE_KEY,
    RITA,
    fed,
    join_remote,
    remote_event,
    seed_remote_key,
)

V3 = "/_matrix/client/v3"


@pytest.fixture
async def client(app_client: TestClient) -> TestClient:
    await seed_remote_key(app_client)
    return app_client


async def _invite(
    client: TestClient, room_id: str, event: Any, stripped: list[Any] | None = None
) -> tuple[int, Any]:
    return await fed(
        client,
        "PUT",
        f"/_matrix/federation/v2/invite/{room_id}/{event.event_id}",
        {
            "room_version": event.room_version.identifier,
            "event": event.pdu,
            "invite_room_state": stripped or [],
        },
    )


async def _sync(client: TestClient, token: str) -> dict[str, Any]:
    response = await client.get(f"{V3}/sync", params={"timeout": "0"}, headers=auth(token))
    assert response.status == 200
    return await response.json()


async def _joined_rooms(client: TestClient, token: str) -> list[str]:
    response = await client.get(f"{V3}/joined_rooms", headers=auth(token))
    assert response.status == 200
    return (await response.json())["joined_rooms"]


async def _send_text(client: TestClient, token: str, room_id: str, txn: str) -> int:
    response = await client.put(
        f"{V3}/rooms/{room_id}/send/m.room.message/{txn}",
        json={"msgtype": "m.text", "body": txn},
        headers=auth(token),
    )
    return response.status


# -- item 1: a forged invite does not rewrite a joined member ---------------------------


async def test_forged_invite_of_a_joined_user_is_refused_and_changes_nothing(client):
    alice, alice_token, _ = await make_user(client, "alice")
    room_id = await make_room(client, alice)
    stores = client.app[STORES]
    state_before = await stores.current_state.get_current_state_ids(room_id)
    # remote.test has no user in the room; it signs an invite of our joined user anyway.
    forged = await remote_event(
        client, room_id, RITA, "m.room.member", {"membership": "invite"}, alice
    )
    status, body = await _invite(client, room_id, forged)
    assert status == 403, body
    assert body["errcode"] == "M_FORBIDDEN"

    # What alice sees: still joined, can still talk, /sync shows the room as joined.
    assert room_id in await _joined_rooms(client, alice_token)
    assert await _send_text(client, alice_token, room_id, "still-here") == 200
    synced = await _sync(client, alice_token)
    assert room_id in synced["rooms"]["join"]
    assert room_id not in synced["rooms"]["invite"]
    assert await stores.current_state.get_membership(room_id, alice) == "join"
    assert await stores.events.get_event(forged.event_id) is None

    # Her re-join is answered locally (remote.test is never asked: it could not be
    # reached here) and, as she is already joined with the same profile, changes
    # nothing at all (Synapse's no-op re-join).
    response = await client.post(f"{V3}/join/{room_id}", json={}, headers=auth(alice_token))
    assert response.status == 200, await response.text()
    state_after = await stores.current_state.get_current_state_ids(room_id)
    changed = {k for k in state_after if state_after[k] != state_before.get(k)}
    assert changed == set()
    assert set(state_after) == set(state_before)


async def test_invite_from_a_member_server_into_a_room_we_are_in_follows_the_rules(client):
    alice, alice_token, _ = await make_user(client, "alice")
    bob, bob_token, _ = await make_user(client, "bob")
    room_id = await make_room(client, alice)
    await join_remote(client, room_id)  # rita joins: remote.test is now in the room
    levels_url = f"{V3}/rooms/{room_id}/state/m.room.power_levels"
    levels = await (await client.get(levels_url, headers=auth(alice_token))).json()
    levels["users"][RITA] = levels.get("invite", 0)
    response = await client.put(levels_url, json=levels, headers=auth(alice_token))
    assert response.status == 200
    # rita may invite bob: the invite is received like any event of the room.
    invite = await remote_event(
        client, room_id, RITA, "m.room.member", {"membership": "invite"}, bob
    )
    status, body = await _invite(client, room_id, invite)
    assert status == 200, body
    assert set(body["event"]["signatures"]) == {REMOTE, "test.local"}
    stores = client.app[STORES]
    assert await stores.current_state.get_membership(room_id, bob) == "invite"
    assert room_id in (await _sync(client, bob_token))["rooms"]["invite"]
    # ...but not re-invite alice, who is joined.
    again = await remote_event(
        client, room_id, RITA, "m.room.member", {"membership": "invite"}, alice
    )
    status, body = await _invite(client, room_id, again)
    assert status == 403, body
    assert await stores.current_state.get_membership(room_id, alice) == "join"


async def test_forged_invite_of_a_non_member_into_a_room_we_are_in_is_refused(client):
    alice, _, _ = await make_user(client, "alice")
    bob, bob_token, _ = await make_user(client, "bob")
    room_id = await make_room(client, alice)
    forged = await remote_event(
        client, room_id, RITA, "m.room.member", {"membership": "invite"}, bob
    )
    status, body = await _invite(client, room_id, forged)
    assert status == 403, body
    assert await client.app[STORES].current_state.get_membership(room_id, bob) is None
    assert room_id not in (await _sync(client, bob_token))["rooms"]["invite"]


# -- item 7: handshakes get the same current-state check as /send ------------------------


async def _ban_rita_after_she_joined(client: TestClient) -> tuple[str, str, dict, list[str]]:
    """A public room rita joined and alice then banned her from; returns (room, alice's
    token, the state before the ban, the forward extremities before the ban)."""
    alice, alice_token, _ = await make_user(client, "alice")
    room_id = await make_room(client, alice)
    await join_remote(client, room_id)
    stores = client.app[STORES]
    state = await stores.current_state.get_current_state_ids(room_id)
    extremities = await stores.events.get_forward_extremities(room_id)
    response = await client.post(
        f"{V3}/rooms/{room_id}/ban", json={"user_id": RITA}, headers=auth(alice_token)
    )
    assert response.status == 200
    assert await stores.current_state.get_membership(room_id, RITA) == "ban"
    return room_id, alice_token, state, extremities


async def _built_on(
    client: TestClient, room_id: str, state: dict, prev: list[str], membership: str
) -> Any:
    """rita's membership event cut from the state before the ban (what a hostile server
    builds instead of asking make_join, which now refuses)."""
    version = get_room_version(await client.app[STORES].rooms.get_room_version(room_id))
    content = {"membership": membership}
    keys = auth_types_for_event(version, "m.room.member", RITA, RITA, content)
    return await remote_event(
        client,
        room_id,
        RITA,
        "m.room.member",
        content,
        RITA,
        prev=prev,
        auth=[state[k] for k in sorted(keys) if k in state],
    )


@pytest.mark.parametrize("membership", ["join", "leave"])
async def test_banned_users_membership_built_before_the_ban_is_refused(client, membership):
    room_id, alice_token, state, prev = await _ban_rita_after_she_joined(client)
    event = await _built_on(client, room_id, state, prev, membership)
    status, body = await fed(
        client,
        "PUT",
        f"/_matrix/federation/v2/send_{membership}/{room_id}/{event.event_id}",
        event.pdu,
    )
    assert status == 403, body
    stores = client.app[STORES]
    assert await stores.current_state.get_membership(room_id, RITA) == "ban"
    assert await stores.events.get_event(event.event_id) is None
    timeline = (await _sync(client, alice_token))["rooms"]["join"][room_id]["timeline"]
    assert event.event_id not in [e["event_id"] for e in timeline["events"]]


async def test_banned_users_knock_built_before_the_ban_is_refused(client):
    alice, alice_token, _ = await make_user(client, "alice")
    room_id = await make_room(client, alice)
    response = await client.put(
        f"{V3}/rooms/{room_id}/state/m.room.join_rules",
        json={"join_rule": "knock"},
        headers=auth(alice_token),
    )
    assert response.status == 200
    stores = client.app[STORES]
    state = await stores.current_state.get_current_state_ids(room_id)
    prev = await stores.events.get_forward_extremities(room_id)
    response = await client.post(
        f"{V3}/rooms/{room_id}/ban", json={"user_id": RITA}, headers=auth(alice_token)
    )
    assert response.status == 200
    event = await _built_on(client, room_id, state, prev, "knock")
    status, body = await fed(
        client, "PUT", f"/_matrix/federation/v1/send_knock/{room_id}/{event.event_id}", event.pdu
    )
    assert status == 403, body
    assert await stores.current_state.get_membership(room_id, RITA) == "ban"


# -- item 12: invites naming our own rooms, and room summaries ----------------------------


def _invite_into(room_id: str, version_id: str, target: str, stripped_sender: str) -> Any:
    version = get_room_version(version_id)
    return build_event(
        version,
        room_id=room_id,
        sender=RITA,
        type="m.room.member",
        content={"membership": "invite"},
        state_key=target,
        prev_event_ids=["$" + "A" * 43],
        auth_event_ids=["$" + "B" * 43],
        depth=3,
        origin_server_ts=1_700_000_000_000,
        server_name=REMOTE,
        signing_key=REMOTE_KEY,
    )


def _spoofed_state(room_id: str, creator: str) -> list[dict[str, Any]]:
    return [
        {"type": "m.room.create", "state_key": "", "sender": creator, "content": {}},
        {
            "type": "m.room.name",
            "state_key": "",
            "sender": creator,
            "content": {"name": "Official announcements"},
        },
    ]


async def test_invite_into_an_unknown_room_of_our_own_namespace_is_refused(client):
    bob, bob_token, _ = await make_user(client, "bob")
    room_id = "!doesnotexist:test.local"
    invite = _invite_into(room_id, "10", bob, "@admin:test.local")
    status, body = await _invite(
        client, room_id, invite, _spoofed_state(room_id, "@admin:test.local")
    )
    assert status == 403, body
    stores = client.app[STORES]
    assert await stores.rooms.get_room_version(room_id) is None
    assert room_id not in (await _sync(client, bob_token))["rooms"]["invite"]


async def test_invite_into_an_unknown_v12_room_claiming_our_creator_is_refused(client):
    bob, bob_token, _ = await make_user(client, "bob")
    version = get_room_version("12")
    create = {
        "type": "m.room.create",
        "state_key": "",
        "sender": "@admin:test.local",
        "content": {"room_version": "12"},
        "auth_events": [],
        "prev_events": [],
        "depth": 1,
        "origin_server_ts": 1_700_000_000_000,
        "hashes": {"sha256": "x"},
        "signatures": {},
    }
    room_id = "!" + compute_event_id(create, version)[1:]
    invite = _invite_into(room_id, "12", bob, "@admin:test.local")
    status, body = await _invite(client, room_id, invite, [create])
    assert status == 403, body
    assert room_id not in (await _sync(client, bob_token))["rooms"]["invite"]


async def test_forged_invite_does_not_open_a_private_rooms_summary(client):
    alice, alice_token, _ = await make_user(client, "alice")
    bob, bob_token, _ = await make_user(client, "bob")
    room_id = await make_room(client, alice, preset="private_chat")
    response = await client.put(
        f"{V3}/rooms/{room_id}/state/m.room.name",
        json={"name": "Secret plans"},
        headers=auth(alice_token),
    )
    assert response.status == 200
    summary_url = f"/_matrix/client/v1/room_summary/{room_id}"

    # While our server is in the room, the forged invite is refused outright.
    forged = await remote_event(
        client, room_id, RITA, "m.room.member", {"membership": "invite"}, bob
    )
    status, _ = await _invite(client, room_id, forged)
    assert status == 403
    assert (await client.get(summary_url, headers=auth(bob_token))).status == 404

    # Once nobody of ours is left, an invite is stored out of band (only the inviting
    # server could tell us about it) - but it does not open what we hold of the room.
    response = await client.post(f"{V3}/rooms/{room_id}/leave", json={}, headers=auth(alice_token))
    assert response.status == 200
    late = _invite_into(room_id, "10", bob, alice)
    status, body = await _invite(client, room_id, late)
    assert status == 200, body
    assert room_id in (await _sync(client, bob_token))["rooms"]["invite"]
    response = await client.get(summary_url, headers=auth(bob_token))
    assert response.status == 404, await response.text()
    # alice, who was a member, still may not read it either now (private room, left).
    assert (await client.get(summary_url, headers=auth(alice_token))).status == 404
