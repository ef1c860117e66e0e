"""Server ACLs on every inbound request that touches a room, and ACL changes taking
effect on the very next request (no caching of an old ACL).

Each case: remote.test has a user joined; an ACL denying remote.test is sent; the
request must be refused (403 M_FORBIDDEN, or for /send the PDU rejected and the EDU
ignored); the ACL is lifted and the same kind of request succeeds again.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote, urlencode

import pytest

from homeserver.appstate import LOCAL_EVENTS, STORES
from homeserver.ephemeral.typing import TypingService
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

DENY = {"allow": ["*"], "deny": ["remote.test"]}
ALLOW = {"allow": ["*"], "deny": []}


@pytest.fixture
async def client(app_client):
    await seed_remote_key(app_client)
    return app_client


@pytest.fixture
async def room(client) -> dict[str, Any]:
    room_id = await create_room(client)
    await join_remote(client, room_id)
    ev = await client.app[LOCAL_EVENTS].send(room_id, ALICE, "m.room.message", {"body": "x"})
    return {"room_id": room_id, "event_id": ev.event_id}


async def _acl(client, room_id: str, content: dict[str, Any]) -> None:
    await client.app[LOCAL_EVENTS].send(room_id, ALICE, "m.room.server_acl", content, "")


Request = Callable[[Any, dict[str, Any]], Awaitable[tuple[int, Any]]]


async def _get(client, path: str) -> tuple[int, Any]:
    return await fed(client, "GET", path)


async def _make_knock(client, room: dict[str, Any]) -> tuple[int, Any]:
    if not room.get("knock"):  # a knockable room for this case only
        await client.app[LOCAL_EVENTS].send(
            room["room_id"], ALICE, "m.room.join_rules", {"join_rule": "knock"}, ""
        )
        room["knock"] = True
    return await _get(
        client, f"/_matrix/federation/v1/make_knock/{room['room_id']}/@new:remote.test?ver=12"
    )


CASES: dict[str, Request] = {
    "make_join": lambda c, r: _get(
        c, f"/_matrix/federation/v1/make_join/{r['room_id']}/@new:remote.test?ver=12"
    ),
    "make_leave": lambda c, r: _get(c, f"/_matrix/federation/v1/make_leave/{r['room_id']}/{RITA}"),
    "make_knock": lambda c, r: _make_knock(c, r),
    "backfill": lambda c, r: _get(
        c, f"/_matrix/federation/v1/backfill/{r['room_id']}?v={r['event_id']}&limit=5"
    ),
    "state": lambda c, r: _get(
        c, f"/_matrix/federation/v1/state/{r['room_id']}?event_id={r['event_id']}"
    ),
    "state_ids": lambda c, r: _get(
        c, f"/_matrix/federation/v1/state_ids/{r['room_id']}?event_id={r['event_id']}"
    ),
    "event": lambda c, r: _get(c, f"/_matrix/federation/v1/event/{r['event_id']}"),
    "event_auth": lambda c, r: _get(
        c, f"/_matrix/federation/v1/event_auth/{r['room_id']}/{r['event_id']}"
    ),
    "get_missing_events": lambda c, r: fed(
        c,
        "POST",
        f"/_matrix/federation/v1/get_missing_events/{r['room_id']}",
        {"earliest_events": [], "latest_events": [r["event_id"]], "limit": 5},
    ),
    "timestamp_to_event": lambda c, r: _get(
        c, f"/_matrix/federation/v1/timestamp_to_event/{r['room_id']}?ts=0&dir=f"
    ),
    "hierarchy": lambda c, r: _get(c, f"/_matrix/federation/v1/hierarchy/{r['room_id']}"),
}


@pytest.mark.parametrize("name", sorted(CASES))
async def test_acl_refuses_then_allows_immediately(client, room, name):
    request = CASES[name]
    status, body = await request(client, room)
    assert status == 200, body  # allowed before any ACL
    await _acl(client, room["room_id"], DENY)
    status, body = await request(client, room)
    assert (status, body["errcode"]) == (403, "M_FORBIDDEN"), body
    await _acl(client, room["room_id"], ALLOW)
    status, body = await request(client, room)
    assert status == 200, body


async def test_acl_on_send_join_send_leave_and_send_knock(client, room):
    room_id = room["room_id"]
    version = get_room_version("12")
    status, made = await fed(
        client, "GET", f"/_matrix/federation/v1/make_join/{room_id}/@new:remote.test?ver=12"
    )
    assert status == 200
    join = sign_template(made["event"], version)
    status, made = await fed(client, "GET", f"/_matrix/federation/v1/make_leave/{room_id}/{RITA}")
    leave = sign_template(made["event"], version)
    await _acl(client, room_id, DENY)
    for path, event in (
        (f"/_matrix/federation/v2/send_join/{room_id}/{join.event_id}", join),
        (f"/_matrix/federation/v1/send_join/{room_id}/{join.event_id}", join),
        (f"/_matrix/federation/v2/send_leave/{room_id}/{leave.event_id}", leave),
        (f"/_matrix/federation/v1/send_knock/{room_id}/{join.event_id}", join),
    ):
        status, body = await fed(client, "PUT", path, event.pdu)
        assert (status, body["errcode"]) == (403, "M_FORBIDDEN"), path
    stores = client.app[STORES]
    assert await stores.current_state.get_membership(room_id, "@new:remote.test") is None
    assert await stores.current_state.get_membership(room_id, RITA) == "join"
    await _acl(client, room_id, ALLOW)
    status, body = await fed(
        client, "PUT", f"/_matrix/federation/v2/send_leave/{room_id}/{leave.event_id}", leave.pdu
    )
    assert (status, body) == (200, {})


@pytest.mark.parametrize("invitee", ["@bob:test.local", "@nobody:test.local"])
async def test_acl_on_v2_invite_into_a_known_room(client, room, invitee):
    """The ACL comes first: a denied server learns nothing, not even whether the user
    exists (Synapse answers 403 for both)."""
    room_id = room["room_id"]
    if invitee == "@bob:test.local":
        await client.app[STORES].accounts.create_user(invitee, None)
    await _acl(client, room_id, DENY)
    invite = await remote_event(
        client, room_id, RITA, "m.room.member", {"membership": "invite"}, invitee
    )
    status, body = await fed(
        client,
        "PUT",
        f"/_matrix/federation/v2/invite/{room_id}/{invite.event_id}",
        {"room_version": "12", "event": invite.pdu, "invite_room_state": []},
    )
    assert (status, body["errcode"]) == (403, "M_FORBIDDEN")


async def _send(client, txn: str, pdus=(), edus=()) -> tuple[int, Any]:
    return await fed(
        client,
        "PUT",
        f"/_matrix/federation/v1/send/{txn}",
        {"origin": "remote.test", "origin_server_ts": 1, "pdus": list(pdus), "edus": list(edus)},
    )


def _typing(room_id: str, typing: bool) -> dict[str, Any]:
    return {
        "edu_type": "m.typing",
        "content": {"room_id": room_id, "user_id": RITA, "typing": typing, "timeout": 20_000},
    }


def _typing_service(client) -> TypingService:
    (service,) = [v for v in client.app.values() if isinstance(v, TypingService)]
    return service


async def _typing_users(client, room_id: str) -> list[str]:
    """Who is typing in the room: in process, the typing service's answer. Against a
    deployment (the service is in the main's memory), what Alice's /sync on a client
    reader shows once that reader heard of everything the main had before Alice's
    own typing (the main announces a room's whole list of typers in order), so a
    typing notification the main took in before is certainly shown."""
    if not hasattr(client.app, "request_as"):
        return _typing_service(client).typing_users(room_id)
    view = client.app
    room = quote(room_id, safe="")
    await view.request_as(
        ALICE,
        "PUT",
        f"/_matrix/client/v3/rooms/{room}/typing/{quote(ALICE, safe='')}",
        {"typing": True, "timeout": 30_000},
    )
    only_room = json.dumps({"room": {"rooms": [room_id], "timeline": {"limit": 1}}})
    query = urlencode({"timeout": "0", "filter": only_room})
    async with asyncio.timeout(10):
        while True:
            body = await view.request_as(ALICE, "GET", f"/_matrix/client/v3/sync?{query}", None)
            joined = body["rooms"]["join"].get(room_id, {})
            for event in joined.get("ephemeral", {}).get("events", []):
                typers = event["content"]["user_ids"] if event["type"] == "m.typing" else []
                if ALICE in typers:
                    return [user for user in typers if user != ALICE]
            await asyncio.sleep(0.05)


async def test_acl_on_send_pdus_and_edus_takes_effect_immediately(client, room):
    room_id = room["room_id"]
    stores = client.app[STORES]
    await _acl(client, room_id, DENY)
    denied = await remote_event(client, room_id, RITA, "m.room.message", {"body": "no"})
    status, body = await _send(client, "t1", [denied.pdu], [_typing(room_id, True)])
    assert status == 200
    assert "ACL" in body["pdus"][denied.event_id]["error"]
    assert not await stores.events.have_events([denied.event_id])
    assert RITA not in await _typing_users(client, room_id)

    await _acl(client, room_id, ALLOW)
    allowed = await remote_event(client, room_id, RITA, "m.room.message", {"body": "yes"})
    status, body = await _send(client, "t2", [allowed.pdu], [_typing(room_id, True)])
    assert (status, body) == (200, {"pdus": {allowed.event_id: {}}})
    assert await stores.events.have_events([allowed.event_id])
    assert RITA in await _typing_users(client, room_id)
