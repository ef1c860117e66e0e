"""The outbound transaction sender against a fake peer on 127.0.0.1.

The peer is a real aiohttp server that records each `PUT /send/{txnId}` it gets; the
sender talks to it through the real FederationClient (plain HTTP, loopback allowed),
with the durable outbox and retry state in a real SQLite database.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

import federation.sender as sender_module
from federation.client import FederationClient
from federation.sender import FederationSender, SenderSettings
from homeserver.events import Event
from homeserver.events.signing import generate_signing_key
from homeserver.ipfilter import IPFilter
from homeserver.rooms.creation import RoomCreator, RoomSpec
from homeserver.rooms.keyed_lock import KeyedLock
from homeserver.rooms.local_events import LocalEvents
from homeserver.rooms.persister import Persister
from homeserver.rooms.room_state import RoomState
from homeserver.storage import Database, Stores, open_database, open_stores

SERVER = "origin.test"
ALICE = f"@alice:{SERVER}"
FAST = SenderSettings(min_retry_interval_s=0.05, max_retry_interval_s=0.4, request_timeout_s=5)


@dataclass
class FakePeer:
    """Records transactions; `fail_next` answers 500 that many times; `gate` holds
    requests open so tests can observe concurrency."""

    txns: list[dict[str, Any]] = field(default_factory=list)
    txn_ids: list[str] = field(default_factory=list)
    fail_next: int = 0
    failures_served: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    gate: asyncio.Event | None = None
    # Awaited as each request arrives (tests look at our retry state then).
    on_arrival: Callable[[], Awaitable[None]] | None = None

    async def handle(self, request: web.Request) -> web.Response:
        assert request.headers["Authorization"].startswith("X-Matrix ")
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.on_arrival is not None:
                await self.on_arrival()
            if self.gate is not None:
                await self.gate.wait()
            if self.fail_next > 0:
                self.fail_next -= 1
                self.failures_served += 1
                return web.json_response({"errcode": "M_UNKNOWN", "error": "down"}, status=500)
            body = json.loads(await request.read())
            self.txns.append(body)
            self.txn_ids.append(request.match_info["txn"])
            return web.json_response({"pdus": {}})
        finally:
            self.in_flight -= 1

    def pdu_bodies(self) -> list[str]:
        return [p["content"]["body"] for t in self.txns for p in t["pdus"]]


async def start_peer(peer: FakePeer, port: int = 0) -> TestServer:
    app = web.Application()
    app.router.add_put("/_matrix/federation/v1/send/{txn}", peer.handle)
    server = TestServer(app, host="127.0.0.1", port=port)
    await server.start_server()
    return server


@dataclass
class Origin:
    db: Database
    stores: Stores
    events: LocalEvents
    room_id: str
    client: FederationClient
    key: Any


async def open_origin(path: Path) -> Origin:
    db = await open_database({"name": "sqlite3", "args": {"database": str(path / "hs.db")}})
    stores = await open_stores(db)
    room_state = RoomState(stores)
    persister = Persister(stores, room_state, SERVER)
    key = generate_signing_key("t1")
    events = LocalEvents(stores, room_state, persister, KeyedLock(), SERVER, key)
    room_id = await RoomCreator(events).create_room(
        ALICE, RoomSpec(room_version="10", preset="public_chat"), {}
    )
    client = FederationClient(
        SERVER, key, ip_filter=IPFilter(whitelist=["127.0.0.0/8"]), plain_http=True, timeout=5
    )
    return Origin(db, stores, events, room_id, client, key)


@pytest.fixture
async def origin(tmp_path: Path) -> AsyncIterator[Origin]:
    o = await open_origin(tmp_path)
    yield o
    await o.client.close()
    await o.db.close()


async def messages(origin: Origin, n: int, prefix: str = "m") -> list[Event]:
    return [
        await origin.events.send(
            origin.room_id, ALICE, "m.room.message", {"msgtype": "m.text", "body": f"{prefix}{i}"}
        )
        for i in range(n)
    ]


def new_sender(origin: Origin, settings: SenderSettings = FAST) -> FederationSender:
    return FederationSender(
        origin.stores.transactions, origin.stores.events, origin.client, SERVER, settings
    )


async def wait_for(predicate, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


async def test_one_event_is_delivered_as_a_transaction(origin: Origin) -> None:
    peer = FakePeer()
    server = await start_peer(peer)
    dest = f"127.0.0.1:{server.port}"
    sender = new_sender(origin)
    try:
        (event,) = await messages(origin, 1)
        await sender.send_event(event, [dest, SERVER])
        await wait_for(lambda: len(peer.txns) == 1)
        txn = peer.txns[0]
        assert txn["origin"] == SERVER
        assert isinstance(txn["origin_server_ts"], int)
        assert txn["pdus"] == [event.pdu]
        assert "event_id" not in txn["pdus"][0]  # v10: the ID is the hash
        await sender.wait_idle()
        assert not (await origin.stores.transactions.peek(dest)), "acked after the 200"
    finally:
        await sender.stop()
        await server.close()


async def test_batches_respect_50_pdus_and_100_edus_with_one_in_flight(origin: Origin) -> None:
    peer = FakePeer(gate=asyncio.Event())
    server = await start_peer(peer)
    dest = f"127.0.0.1:{server.port}"
    sender = new_sender(origin)
    try:
        events = await messages(origin, 120)
        for i in range(150):
            await origin.stores.transactions.enqueue_edu(
                dest, {"edu_type": "m.typing", "content": {"n": i}}
            )
        for event in events:
            await sender.send_event(event, [dest])
        await wait_for(lambda: peer.in_flight == 1)
        await asyncio.sleep(0.1)  # a second transaction would arrive now if allowed
        assert peer.in_flight == 1
        peer.gate.set()
        await wait_for(lambda: sum(len(t["pdus"]) for t in peer.txns) == 120)
        await wait_for(lambda: sum(len(t.get("edus", [])) for t in peer.txns) == 150)
        assert peer.max_in_flight == 1
        assert all(len(t["pdus"]) <= 50 and len(t.get("edus", [])) <= 100 for t in peer.txns)
        assert max(len(t["pdus"]) for t in peer.txns) == 50
        assert max(len(t.get("edus", [])) for t in peer.txns) == 100
        # Order is kept and nothing is sent twice; each transaction has its own ID.
        assert peer.pdu_bodies() == [f"m{i}" for i in range(120)]
        edu_ns = [e["content"]["n"] for t in peer.txns for e in t.get("edus", [])]
        assert edu_ns == list(range(150))
        assert len(set(peer.txn_ids)) == len(peer.txn_ids)
    finally:
        await sender.stop()
        await server.close()


async def test_retries_with_exponential_backoff_until_the_peer_recovers(origin: Origin) -> None:
    peer = FakePeer(fail_next=3)
    server = await start_peer(peer)
    dest = f"127.0.0.1:{server.port}"
    settings = SenderSettings(
        min_retry_interval_s=0.1, max_retry_interval_s=10, request_timeout_s=5
    )
    sender = new_sender(origin, settings)
    intervals: list[int | None] = []

    async def note_backoff() -> None:
        state = await origin.stores.transactions.get_retry_state(dest)
        intervals.append(None if state is None else state.retry_interval_ms)

    peer.on_arrival = note_backoff
    try:
        (event,) = await messages(origin, 1)
        await sender.send_event(event, [dest])
        await wait_for(lambda: peer.failures_served == 1)
        await wait_for(lambda: sender.is_backing_off(dest))
        await wait_for(lambda: len(peer.txns) == 1)
        assert peer.pdu_bodies() == ["m0"]
        # 4 attempts, each after the interval the previous failure recorded: 100 ms,
        # doubling (read from our retry state as each attempt arrives, no wall clock).
        assert intervals == [None, 100, 200, 400]
        await sender.wait_idle()
        assert await origin.stores.transactions.get_retry_state(dest) is None
        assert not sender.is_backing_off(dest)
    finally:
        await sender.stop()
        await server.close()


async def test_backoff_is_capped(origin: Origin) -> None:
    peer = FakePeer(fail_next=100)
    server = await start_peer(peer)
    dest = f"127.0.0.1:{server.port}"
    settings = SenderSettings(
        min_retry_interval_s=0.02, max_retry_interval_s=0.08, request_timeout_s=5
    )
    sender = new_sender(origin, settings)
    try:
        (event,) = await messages(origin, 1)
        await sender.send_event(event, [dest])
        await wait_for(lambda: peer.failures_served >= 6)
        state = await origin.stores.transactions.get_retry_state(dest)
        assert state is not None and state.retry_interval_ms == 80
    finally:
        await sender.stop()
        await server.close()


async def test_permanent_refusal_drops_the_batch(origin: Origin) -> None:
    async def refuse(request: web.Request) -> web.Response:
        return web.json_response({"errcode": "M_FORBIDDEN", "error": "no"}, status=403)

    app = web.Application()
    app.router.add_put("/_matrix/federation/v1/send/{txn}", refuse)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    dest = f"127.0.0.1:{server.port}"
    sender = new_sender(origin)
    try:
        (event,) = await messages(origin, 1)
        await sender.send_event(event, [dest])
        await asyncio.sleep(0.05)
        await sender.wait_idle()
        assert not await origin.stores.transactions.peek(dest)
        assert await origin.stores.transactions.get_retry_state(dest) is None
    finally:
        await sender.stop()
        await server.close()


async def test_notify_peer_up_cuts_the_backoff_short(origin: Origin) -> None:
    peer = FakePeer(fail_next=1)
    server = await start_peer(peer)
    dest = f"127.0.0.1:{server.port}"
    settings = SenderSettings(min_retry_interval_s=60, request_timeout_s=5)
    sender = new_sender(origin, settings)
    try:
        (event,) = await messages(origin, 1)
        await sender.send_event(event, [dest])
        await wait_for(lambda: sender.is_backing_off(dest))
        await asyncio.sleep(0.05)
        assert peer.txns == []
        sender.notify_peer_up(dest)
        await wait_for(lambda: len(peer.txns) == 1, timeout=2)
        assert peer.pdu_bodies() == ["m0"]
    finally:
        await sender.stop()
        await server.close()


async def test_reset_connection_reaches_the_process_that_delivers(origin: Origin) -> None:
    """An admin's reset_connection on a process that does not deliver to the destination
    (the main, with federation sender workers) clears the stored backoff and tells the
    owner to stop sleeping: it never saw the destination back off itself."""
    sender = new_sender(origin)
    told: list[tuple[str, bool]] = []
    sender.owns = lambda destination: False
    sender.elsewhere = lambda destination, up: told.append((destination, up))
    store = origin.stores.transactions
    await store.set_retry_state("peer.example", 1000, 2000, 600_000)
    await sender.reset_connection("peer.example")
    assert told == [("peer.example", True)]
    assert await store.get_retry_state("peer.example") is None


async def test_outbox_survives_a_restart_of_the_sender(tmp_path: Path) -> None:
    """Events queued before the peer went down are delivered by a new sender on the
    same DB, in order."""
    origin = await open_origin(tmp_path)
    # A port nothing listens on (yet): bind, note, release.
    probe = await start_peer(FakePeer())
    port = probe.port
    await probe.close()
    dest = f"127.0.0.1:{port}"
    events = await messages(origin, 3)
    for event in events:  # queued, then the process stopped before sending them
        await origin.stores.transactions.enqueue_pdus([dest], event.event_id)
    sender = new_sender(origin)
    await sender.start()
    await wait_for(lambda: sender.is_backing_off(dest))
    await sender.stop()
    await origin.client.close()
    await origin.db.close()

    # "Restart": a fresh process state over the same database file.
    origin = await open_origin_again(tmp_path, origin.room_id)
    peer = FakePeer()
    server = await start_peer(peer, port=port)
    sender = new_sender(origin)
    try:
        await sender.start()
        await wait_for(lambda: len(peer.pdu_bodies()) == 3)
        assert peer.pdu_bodies() == ["m0", "m1", "m2"]
        assert [p["content"]["body"] for p in peer.txns[0]["pdus"]] == ["m0", "m1", "m2"]
        await sender.wait_idle()
        assert not await origin.stores.transactions.peek(dest)
    finally:
        await sender.stop()
        await server.close()
        await origin.client.close()
        await origin.db.close()


async def open_origin_again(path: Path, room_id: str) -> Origin:
    db = await open_database({"name": "sqlite3", "args": {"database": str(path / "hs.db")}})
    stores = await open_stores(db)
    room_state = RoomState(stores)
    key = generate_signing_key("t1")
    events = LocalEvents(
        stores, room_state, Persister(stores, room_state, SERVER), KeyedLock(), SERVER, key
    )
    client = FederationClient(
        SERVER, key, ip_filter=IPFilter(whitelist=["127.0.0.0/8"]), plain_http=True, timeout=5
    )
    return Origin(db, stores, events, room_id, client, key)


async def test_persister_sends_room_pdus_to_joined_hosts_only(origin: Origin) -> None:
    """The sender is the Persister's OutboundEvents. A server whose user was only invited
    gets no room PDUs (its invite travels by /invite): not the invite event, not later
    messages. When the invite is withdrawn, that leave is sent to it (as Synapse does)."""
    peer = FakePeer()
    server = await start_peer(peer)
    dest = f"127.0.0.1:{server.port}"
    sender = new_sender(origin)
    room_state = RoomState(origin.stores)
    persister = Persister(origin.stores, room_state, SERVER, outbound=sender)
    events = LocalEvents(origin.stores, room_state, persister, KeyedLock(), SERVER, origin.key)
    try:
        remote_user = f"@bob:{dest}"
        await events.send(
            origin.room_id, ALICE, "m.room.member", {"membership": "invite"}, remote_user
        )
        await events.send(origin.room_id, ALICE, "m.room.message", {"body": "secret"})
        await asyncio.sleep(0.5)
        assert peer.txns == []
        # Rescinding the invite: the invitee's server is told of exactly that leave.
        await events.send(
            origin.room_id, ALICE, "m.room.member", {"membership": "leave"}, remote_user
        )
        await wait_for(lambda: len(peer.txns) == 1)
        pdus = peer.txns[0]["pdus"]
        assert [(p["type"], p["state_key"], p["content"]["membership"]) for p in pdus] == [
            ("m.room.member", remote_user, "leave")
        ]
        await events.send(origin.room_id, ALICE, "m.room.message", {"body": "later"})
        await asyncio.sleep(0.5)
        assert len(peer.txns) == 1
    finally:
        await sender.stop()
        await server.close()


async def test_a_peer_that_is_down_gets_the_newest_event_not_the_backlog(
    origin: Origin,
) -> None:
    """While a destination backs off, nothing more piles up for it: no PDU rows (the
    room's newest event waits as its catch-up event), no typing or presence. Back up,
    it gets what was queued before it failed and the newest event, in one transaction;
    the receipts and to-device messages queued meanwhile go too."""
    peer = FakePeer(fail_next=1)
    server = await start_peer(peer)
    dest = f"127.0.0.1:{server.port}"
    sender = new_sender(origin, SenderSettings(min_retry_interval_s=60, request_timeout_s=5))
    store = origin.stores.transactions
    try:
        (first,) = await messages(origin, 1)
        await sender.send_event(first, [dest])
        await wait_for(lambda: sender.is_backing_off(dest))
        for event in await messages(origin, 30, prefix="down"):
            await sender.send_event(event, [dest])
        await sender.send_edu([dest], "m.typing", {"room_id": origin.room_id, "typing": True})
        await sender.send_edu([dest], "m.presence", {"push": []})
        await sender.send_edu([dest], "m.receipt", {"n": 1})
        await sender.send_edu([dest], "m.direct_to_device", {"n": 2})
        rows = await origin.db.fetch(
            "SELECT event_id, edu_type FROM federation_outbox WHERE destination = $1 ORDER BY id",
            dest,
        )
        assert [(r[0], r[1]) for r in rows] == [
            (first.event_id, None),
            (None, "m.receipt"),
            (None, "m.direct_to_device"),
        ]
        assert await origin.db.fetchval("SELECT COUNT(*) FROM federation_catchup") == 1
        sender.notify_peer_up(dest)
        await wait_for(lambda: len(peer.txns) == 1)
        assert peer.pdu_bodies() == ["down29", "m0"]
        assert [e["edu_type"] for e in peer.txns[0]["edus"]] == ["m.receipt", "m.direct_to_device"]
        await sender.wait_idle()
        assert not await store.peek(dest)
        # Up again: queued as before.
        (after,) = await messages(origin, 1, prefix="up")
        await sender.send_event(after, [dest])
        await wait_for(lambda: len(peer.txns) == 2)
        assert peer.pdu_bodies()[-1] == "up0"
    finally:
        await sender.stop()
        await server.close()


async def test_a_slow_peer_s_backlog_is_folded_into_catch_up_events(origin: Origin) -> None:
    """A peer that answers, but slower than we send, never makes us hold more than the
    bounds: past them the queued PDUs become the room's newest event, the oldest
    receipts go, and device-list updates shrink to the newest per user."""
    peer = FakePeer(gate=asyncio.Event())
    server = await start_peer(peer)
    dest = f"127.0.0.1:{server.port}"
    settings = SenderSettings(
        max_pdus=5,
        max_queued_pdus=20,
        max_queued_trimmable_edus=10,
        max_queued_coalescable_edus=4,
        request_timeout_s=5,
    )
    sender = new_sender(origin, settings)
    try:
        events = await messages(origin, 60)
        await sender.send_event(events[0], [dest])
        await wait_for(lambda: peer.in_flight == 1)  # held open: a slow peer
        for event in events[1:]:
            await sender.send_event(event, [dest])
        for i in range(30):
            await sender.send_edu([dest], "m.receipt", {"n": i})
            user = f"@u{i % 2}:{SERVER}"
            await sender.send_edu([dest], "m.device_list_update", {"user_id": user, "n": i})
        peer.gate.set()
        await sender.wait_idle()
        assert peer.pdu_bodies() == ["m0", "m59"]
        edus = [e for t in peer.txns for e in t.get("edus", [])]
        receipts = [e["content"]["n"] for e in edus if e["edu_type"] == "m.receipt"]
        assert receipts == list(range(20, 30))
        device_lists = [e["content"]["n"] for e in edus if e["edu_type"] != "m.receipt"]
        assert device_lists == [28, 29]  # the newest per user
        assert not await origin.stores.transactions.peek(dest)
    finally:
        await sender.stop()
        await server.close()


async def test_to_device_messages_for_a_dead_server_stay_under_their_cap(
    origin: Origin, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server gone for good (or a local user flooding one) cannot make us keep
    to-device messages without end: while it backs off (retried only every hour),
    queueing enforces the cap every CAP_CHECK_EVERY messages, dropping the oldest;
    back up, the peer gets the newest, in order, and every receipt queued meanwhile."""
    monkeypatch.setattr(sender_module, "CAP_CHECK_EVERY", 10)
    peer = FakePeer(fail_next=1)
    server = await start_peer(peer)
    dest = f"127.0.0.1:{server.port}"
    settings = SenderSettings(
        min_retry_interval_s=3600, request_timeout_s=5, max_queued_to_device_edus=25
    )
    sender = new_sender(origin, settings)
    try:
        await sender.send_edu([dest], "m.direct_to_device", {"n": -1})
        await wait_for(lambda: sender.is_backing_off(dest))
        for n in range(100):
            await sender.send_edu([dest], "m.direct_to_device", {"n": n})
            if n % 20 == 0:
                await sender.send_edu([dest], "m.receipt", {"n": n})
            queued = await origin.db.fetchval(
                "SELECT COUNT(*) FROM federation_outbox WHERE destination = $1"
                " AND edu_type = 'm.direct_to_device'",
                dest,
            )
            assert queued <= 25 + 10
        sender.notify_peer_up(dest)
        await sender.wait_idle()
        edus = [e for t in peer.txns for e in t.get("edus", [])]
        to_device = [e["content"]["n"] for e in edus if e["edu_type"] == "m.direct_to_device"]
        assert to_device == list(range(100 - len(to_device), 100))
        assert 25 <= len(to_device) <= 35
        receipts = [e["content"]["n"] for e in edus if e["edu_type"] == "m.receipt"]
        assert receipts == [0, 20, 40, 60, 80]
    finally:
        await sender.stop()
        await server.close()
