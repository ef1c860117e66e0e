"""A remote PDU whose state we must fetch never holds the room's write lock (security
issue, item 6).

A hostile peer (a real HTTP server on loopback, with a signing key we trust) sends a
PDU citing a prev_event we lack, then answers `state_ids` with hundreds of event IDs and
holds every `/event` request open. Our local users must keep sending in that room while
the fetches hang; the fetches run in parallel but at most FETCH_CONCURRENCY at a time;
and with a total deadline the PDU is given up (rejected) instead of waiting for ever.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from homeserver.app import create_app
from homeserver.appstate import STORES
from homeserver.composition import Overrides
from homeserver.events import Event, get_room_version
from homeserver.events.builder import build_event
from homeserver.events.hashing import add_content_hash
from homeserver.events.signing import generate_signing_key, sign_event
from homeserver.graph.auth_rules import auth_types_for_event
from homeserver.rooms.remote_state import FETCH_CONCURRENCY, FetchLimits
from tests.client.helpers import auth, make_room, make_user
from tests.federation.inbound_helpers import fed, seed_remote_key

PEER_KEY = generate_signing_key("p1")
STATE_IDS = 300
HANG_GUARD_S = 20  # only guards against a hang; no timing is asserted


class HostilePeer:
    """Answers what our server asks while it fetches missing state: no missing events,
    STATE_IDS made-up state IDs, and /event requests held until `release` is set."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.event_requests = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.name = ""

    async def get_missing_events(self, request: web.Request) -> web.Response:
        return web.json_response({"events": []})

    async def state_ids(self, request: web.Request) -> web.Response:
        ids = [f"${i:043d}" for i in range(STATE_IDS)]
        return web.json_response({"pdu_ids": ids, "auth_chain_ids": []})

    async def event(self, request: web.Request) -> web.Response:
        self.event_requests += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await self.release.wait()
        finally:
            self.in_flight -= 1
        return web.json_response({"errcode": "M_NOT_FOUND", "error": "no"}, status=404)

    async def send(self, request: web.Request) -> web.Response:
        return web.json_response({"pdus": {}})  # our own events, announced to the peer

    def app(self) -> web.Application:
        app = web.Application()
        fed_api = "/_matrix/federation/v1"
        app.router.add_post(fed_api + "/get_missing_events/{room}", self.get_missing_events)
        app.router.add_get(fed_api + "/state_ids/{room}", self.state_ids)
        app.router.add_get(fed_api + "/event/{event_id}", self.event)
        app.router.add_put(fed_api + "/send/{txn}", self.send)
        return app


@pytest.fixture
async def peer() -> AsyncIterator[tuple[HostilePeer, TestServer]]:
    hostile = HostilePeer()
    server = TestServer(hostile.app(), host="127.0.0.1", port=0)
    await server.start_server()
    hostile.name = f"127.0.0.1:{server.port}"
    yield hostile, server
    hostile.release.set()
    await server.close()


Start = Callable[..., Awaitable[TestClient]]


@pytest.fixture
def start_ours(aiohttp_client: Any, tmp_config: Any) -> Start:
    async def start(peer_name: str, overrides: Overrides = Overrides()) -> TestClient:
        config = tmp_config(
            federation_client_plain_http_for_tests=True, ip_range_whitelist=["127.0.0.0/8"]
        )
        client = await aiohttp_client(create_app(config, overrides=overrides))
        await seed_remote_key(client, server=peer_name, key=PEER_KEY)
        return client

    return start


async def _peer_event(
    client: TestClient,
    peer: str,
    room_id: str,
    sender: str,
    content: dict[str, Any],
    *,
    event_type: str = "m.room.message",
    state_key: str | None = None,
    prev: list[str] | None = None,
) -> Event:
    stores = client.app[STORES]
    version = get_room_version(await stores.rooms.get_room_version(room_id))
    state = await stores.current_state.get_current_state_ids(room_id)
    keys = auth_types_for_event(version, event_type, sender, state_key, content)
    extremities = await stores.events.get_forward_extremities(room_id)
    depth = max(e.depth for e in (await stores.events.get_events(extremities)).values())
    return build_event(
        version,
        room_id=room_id,
        sender=sender,
        type=event_type,
        content=content,
        state_key=state_key,
        prev_event_ids=prev or extremities,
        auth_event_ids=[state[k] for k in sorted(keys) if k in state],
        depth=depth + 1,
        origin_server_ts=1_700_000_000_000,
        server_name=peer,
        signing_key=PEER_KEY,
    )


async def _peer_user_joins(client: TestClient, peer: str, room_id: str) -> str:
    user = f"@mallory:{peer}"
    status, made = await fed(
        client,
        "GET",
        f"/_matrix/federation/v1/make_join/{room_id}/{user}?ver=10",
        origin=peer,
        key=PEER_KEY,
    )
    assert status == 200, made
    pdu = dict(made["event"])
    version = get_room_version(made["room_version"])
    add_content_hash(pdu)
    sign_event(pdu, version, peer, PEER_KEY)
    join = Event(pdu, version)
    status, body = await fed(
        client,
        "PUT",
        f"/_matrix/federation/v2/send_join/{room_id}/{join.event_id}",
        join.pdu,
        origin=peer,
        key=PEER_KEY,
    )
    assert status == 200, body
    return user


async def _attack(client: TestClient, peer: HostilePeer, room_id: str) -> asyncio.Task[Any]:
    """The peer's user sends a message citing a prev_event nobody has: we must fetch the
    state after it from the peer. Returns the task of the /send request."""
    mallory = await _peer_user_joins(client, peer.name, room_id)
    attack = await _peer_event(
        client, peer.name, room_id, mallory, {"body": "hi"}, prev=["$" + "Z" * 43]
    )
    body = {"origin": peer.name, "origin_server_ts": 1, "pdus": [attack.pdu], "edus": []}
    return asyncio.ensure_future(
        fed(
            client,
            "PUT",
            "/_matrix/federation/v1/send/attack",
            body,
            origin=peer.name,
            key=PEER_KEY,
        )
    )


async def _until(predicate: Callable[[], bool]) -> None:
    async with asyncio.timeout(HANG_GUARD_S):
        while not predicate():
            await asyncio.sleep(0.01)


async def test_local_sends_go_on_while_a_peer_holds_state_fetches(peer, start_ours) -> None:
    hostile, _server = peer
    client = await start_ours(hostile.name)
    alice, alice_token, _ = await make_user(client, "alice")
    room_id = await make_room(client, alice)
    sending = await _attack(client, hostile, room_id)
    await _until(lambda: hostile.in_flight >= 1)

    # The PDU's state is being fetched (and hangs); local users are not held up by it.
    async with asyncio.timeout(HANG_GUARD_S):
        for i in range(3):
            response = await client.put(
                f"/_matrix/client/v3/rooms/{room_id}/send/m.room.message/t{i}",
                json={"msgtype": "m.text", "body": f"local {i}"},
                headers=auth(alice_token),
            )
            assert response.status == 200, await response.text()
        response = await client.put(
            f"/_matrix/client/v3/rooms/{room_id}/state/m.room.topic",
            json={"topic": "still writable"},
            headers=auth(alice_token),
        )
        assert response.status == 200
    assert not sending.done()
    # Parallel, but bounded: never more than FETCH_CONCURRENCY requests at once.
    await _until(lambda: hostile.in_flight == FETCH_CONCURRENCY)
    assert hostile.max_in_flight == FETCH_CONCURRENCY

    hostile.release.set()
    async with asyncio.timeout(HANG_GUARD_S):
        status, body = await sending
    assert status == 200
    (result,) = body["pdus"].values()
    assert "error" in result  # its state could not be learnt: rejected, not accepted
    assert hostile.event_requests == STATE_IDS + 1  # and the missing prev event itself


async def test_a_total_deadline_gives_the_pdu_up(peer, start_ours) -> None:
    hostile, _server = peer
    limits = FetchLimits(deadline_s=0.5)
    client = await start_ours(hostile.name, Overrides(fetch_limits=limits))
    alice, _, _ = await make_user(client, "alice")
    room_id = await make_room(client, alice)
    sending = await _attack(client, hostile, room_id)
    # The peer never answers a single /event: the deadline ends the fetching.
    async with asyncio.timeout(HANG_GUARD_S):
        status, body = await sending
    assert status == 200
    (result,) = body["pdus"].values()
    assert "could not determine the state" in result["error"]
    assert hostile.event_requests < STATE_IDS
    await _until(lambda: hostile.in_flight == 0)  # the held requests were abandoned
