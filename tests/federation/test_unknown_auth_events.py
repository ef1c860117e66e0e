"""A PDU citing auth events we never received: they are fetched before the PDU is
checked, from /event_auth, or one by one from /event when the peer does not serve
/event_auth (older or minimal servers), as Synapse does. Without them the PDU would
be rejected for a missing auth event."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from homeserver.appstate import STORES
from homeserver.events import Event
from homeserver.events.hashing import add_content_hash
from homeserver.events.signing import sign_event
from tests.client.helpers import auth, make_room, make_user
from tests.federation.inbound_helpers import fed
from tests.federation.test_missing_state_fetch import (
    PEER_KEY,
    Start,
    _peer_event,
    _peer_user_joins,
    start_ours,  # noqa: F401 (fixture)
)


class MinimalPeer:
    """Serves single events it holds, and nothing else (no /event_auth)."""

    def __init__(self) -> None:
        self.name = ""
        self.events: dict[str, Event] = {}
        self.asked: list[str] = []

    async def event(self, request: web.Request) -> web.Response:
        event_id = request.match_info["event_id"]
        self.asked.append(event_id)
        event = self.events.get(event_id)
        if event is None:
            return web.json_response({"errcode": "M_NOT_FOUND", "error": "no"}, status=404)
        return web.json_response({"origin": self.name, "origin_server_ts": 1, "pdus": [event.pdu]})

    async def send(self, request: web.Request) -> web.Response:
        return web.json_response({"pdus": {}})

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/_matrix/federation/v1/event/{event_id}", self.event)
        app.router.add_put("/_matrix/federation/v1/send/{txn}", self.send)
        return app


@pytest.fixture
async def minimal_peer() -> AsyncIterator[MinimalPeer]:
    peer = MinimalPeer()
    server = TestServer(peer.app(), host="127.0.0.1", port=0)
    await server.start_server()
    peer.name = f"127.0.0.1:{server.port}"
    yield peer
    await server.close()


async def test_missing_auth_event_is_fetched_with_event(
    minimal_peer: MinimalPeer,
    start_ours: Start,  # noqa: F811
) -> None:
    peer = minimal_peer
    client = await start_ours(peer.name)
    alice, token, _ = await make_user(client, "alice")
    room = await make_room(client, alice)
    mallory = await _peer_user_joins(client, peer.name, room)

    # The peer renames mallory (an event we never receive), then sends a message
    # whose auth events cite that membership (its prev events are ones we hold).
    rename = await _peer_event(
        client,
        peer.name,
        room,
        mallory,
        {"membership": "join", "displayname": "Mal"},
        event_type="m.room.member",
        state_key=mallory,
    )
    peer.events[rename.event_id] = rename
    message = await _peer_event(
        client, peer.name, room, mallory, {"msgtype": "m.text", "body": "hi"}
    )
    pdu: dict[str, Any] = dict(message.pdu)
    assert rename.event_id not in pdu["auth_events"]
    pdu["auth_events"] = [
        a for a in pdu["auth_events"] if a != await _join_of(client, room, mallory)
    ] + [rename.event_id]
    pdu.pop("hashes", None)
    pdu.pop("signatures", None)
    add_content_hash(pdu)
    sign_event(pdu, message.room_version, peer.name, PEER_KEY)
    message = Event(pdu, message.room_version)
    peer.events[message.event_id] = message

    body = {"origin": peer.name, "origin_server_ts": 1, "pdus": [message.pdu], "edus": []}
    status, answer = await fed(
        client, "PUT", "/_matrix/federation/v1/send/t1", body, origin=peer.name, key=PEER_KEY
    )
    assert status == 200
    assert answer["pdus"][message.event_id] == {}, answer
    assert rename.event_id in peer.asked
    response = await client.get(
        f"/_matrix/client/v3/rooms/{room}/messages",
        params={"dir": "b", "limit": "5"},
        headers=auth(token),
    )
    bodies = [e["content"].get("body") for e in (await response.json())["chunk"]]
    assert "hi" in bodies


async def _join_of(client: Any, room: str, user: str) -> str:
    state = client.app[STORES].current_state
    event_id = await state.get_current_state_event_id(room, "m.room.member", user)
    assert event_id is not None
    return event_id
