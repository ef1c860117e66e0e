"""A federation inbound worker receives transactions itself (issue 16).

The seven-process deployment (tests/deployment.py FULL_LAYOUT) and a signed fake peer
sending through nginx: the inbound worker checks each PDU and hands it to the event
persister writing its room; the main gets only the EDUs. What a peer and our users see:
- with the main dead, a transaction's PDUs are still written (by the persisters) and
  read by our users on the client readers; a transaction that also carries EDUs is
  answered 503 and not remembered, so the peer's retry after the main is back
  delivers them, once, and the PDUs again only as duplicates;
- so are other servers' joins (make_join/send_join go to the room's persister);
- with a room's persister dead, the main writes that room's PDUs and joins;
- the writers' endpoints are not reachable from outside, nor without the secret;
- with two inbound workers, a peer's transactions sent to both at once (a retry landing
  on the other worker while the first attempt runs) are written once: every message
  and every to-device message arrives exactly once;
- with the client readers writing typing, receipts, to-device messages and device
  lists (`stream_writers`), a transaction carrying all of those EDUs (and presence,
  which only the main holds) is written with the main dead: our users see the
  typing, the receipt, the to-device message and the device-list change; the
  presence update is dropped rather than the transaction refused.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest

from federation.auth import sign_request
from homeserver.appstate import STORES
from homeserver.config.workers import shard
from homeserver.replication.federation import EDUS_PATH, EVENTS_PATH
from homeserver.replication.forward import SECRET_HEADER
from tests.conftest import make_config
from tests.deployment import FULL_LAYOUT, Deployment, require_parts
from tests.deployment_mode import READER_WRITERS, DeploymentServer
from tests.federation.inbound_helpers import (
    ALICE,
    OUR,
    REMOTE,
    REMOTE_KEY,
    RITA,
    create_room,
    fed,
    join_remote,
    remote_event,
    seed_remote_key,
)
from tests.federation.multiserver import eventually

ROB = "@rob:remote.test"
PERSISTERS = ["event_persister1", "event_persister2"]  # FULL_LAYOUT's, in config order


@pytest.fixture
async def client(aiohttp_client: Any, tmp_path: Path) -> AsyncIterator[Any]:
    require_parts()
    client = await aiohttp_client(DeploymentServer(make_config(tmp_path)))
    await seed_remote_key(client)
    yield client


@pytest.fixture
async def rooms(client: Any) -> dict[str, str]:
    """A room written by each event persister (persister name -> room ID), joined by
    the fake peer's user."""
    found: dict[str, str] = {}
    while len(found) < len(PERSISTERS):
        room_id = await create_room(client)
        found.setdefault(PERSISTERS[shard(room_id, len(PERSISTERS))], room_id)
    for room_id in found.values():
        await join_remote(client, room_id)
    return found


def deployment(client: Any) -> Deployment:
    return client.server.deployment  # type: ignore[no-any-return]


async def send(client: Any, txn: str, pdus: list[Any], edus: tuple[Any, ...] = ()) -> Any:
    body = {"origin": REMOTE, "origin_server_ts": 1, "pdus": pdus, "edus": list(edus)}
    return await asyncio.wait_for(
        fed(client, "PUT", f"/_matrix/federation/v1/send/{txn}", body), timeout=60
    )


async def shows(client: Any, token: str, room_id: str, wanted: list[str]) -> bool:
    """Whether the room's message bodies, as a user reads them on a client reader,
    are `wanted` (each once, in order)."""
    resp = await client.get(
        f"/_matrix/client/v3/rooms/{quote(room_id)}/messages?dir=b&limit=50",
        headers={"Authorization": f"Bearer {token}"},
    )
    assert resp.status == 200, await resp.text()
    chunk = (await resp.json())["chunk"]
    return [
        e["content"]["body"] for e in reversed(chunk) if e["type"] == "m.room.message"
    ] == wanted


async def register(client: Any) -> dict[str, Any]:
    """A new local user with a device (to-device messages go to devices), through nginx."""
    resp = await client.post(
        "/_matrix/client/v3/register",
        json={"username": f"bob{secrets.token_hex(3)}", "password": "pw",
              "auth": {"type": "m.login.dummy"}},
    )  # fmt: skip
    body = await resp.json()
    assert resp.status == 200, body
    return body  # type: ignore[no-any-return]


async def members(client: Any, room_id: str) -> set[str]:
    """Who the room's current state says is joined (read from the database)."""
    state = await client.app[STORES].current_state.get_current_state_ids(room_id)
    joined = set()
    for (etype, user), event_id in state.items():
        event = await client.app.event(event_id)
        if etype == "m.room.member" and event.content.get("membership") == "join":
            joined.add(user)
    return joined


async def message(client: Any, room_id: str, body: str) -> Any:
    return await remote_event(client, room_id, RITA, "m.room.message", {"body": body})


async def test_the_persisters_write_a_transaction_while_the_main_is_dead(
    client: Any, rooms: dict[str, str]
) -> None:
    d = deployment(client)
    alice = await client.app.token_for(ALICE)
    bob_login = await register(client)
    d.kill("main")

    # PDUs only: written by the rooms' persisters, read by Alice on a client reader.
    first = [await message(client, room, f"while the main is dead {i}") for i, room in
             enumerate(rooms.values())]  # fmt: skip
    status, body = await send(client, "pdus", [e.pdu for e in first])
    assert (status, body) == (200, {"pdus": {e.event_id: {} for e in first}})
    for i, room in enumerate(rooms.values()):
        wanted = [f"while the main is dead {i}"]
        assert await eventually(lambda room=room, w=wanted: shows(client, alice, room, w))

    # Another user of the peer joins each room: the handshake is the room's writer's.
    for room in rooms.values():
        await join_remote(client, room, ROB)
        assert await members(client, room) == {ALICE, RITA, ROB}

    # A PDU and a to-device message: the EDU has no writer, so the transaction is
    # refused whole and not remembered (the PDU was written: a duplicate later).
    room = rooms[PERSISTERS[0]]
    second = await message(client, room, "with an EDU")
    edu = {
        "edu_type": "m.direct_to_device",
        "content": {
            "sender": RITA,
            "type": "m.room_key_request",
            "message_id": "k1",
            "messages": {bob_login["user_id"]: {bob_login["device_id"]: {"n": 1}}},
        },
    }
    status, body = await send(client, "mixed", [second.pdu], (edu,))
    assert status == 503 and body["errcode"] == "M_UNKNOWN", body
    # An expected state while the main restarts: no traceback in the operator's log.
    assert "background task" not in d.logs("federation_inbound1")

    # The main is back; the peer retries the same transaction.
    await asyncio.to_thread(d.start_process, "main")
    status, body = await send(client, "mixed", [second.pdu], (edu,))
    assert (status, body) == (200, {"pdus": {second.event_id: {}}})
    wanted = [f"while the main is dead {list(rooms.values()).index(room)}", "with an EDU"]
    assert await eventually(lambda: shows(client, alice, room, wanted))
    sync = await client.get(
        "/_matrix/client/v3/sync?timeout=0",
        headers={"Authorization": f"Bearer {bob_login['access_token']}"},
    )
    to_device = (await sync.json())["to_device"]["events"]
    assert to_device == [{"sender": RITA, "type": "m.room_key_request", "content": {"n": 1}}]
    # Remembered now: the same transaction again is answered from the record.
    assert await send(client, "mixed", [second.pdu], (edu,)) == (200, body)


async def test_the_main_writes_the_rooms_of_a_dead_persister(
    client: Any, rooms: dict[str, str]
) -> None:
    d = deployment(client)
    alice = await client.app.token_for(ALICE)
    d.kill(PERSISTERS[1])
    events = {room: await message(client, room, "one persister down") for room in rooms.values()}
    status, body = await send(client, "half", [e.pdu for e in events.values()])
    assert (status, body) == (200, {"pdus": {e.event_id: {} for e in events.values()}})
    for room in rooms.values():
        wanted = ["one persister down"]
        assert await eventually(lambda room=room, w=wanted: shows(client, alice, room, w))
        await join_remote(client, room, ROB)
        assert await members(client, room) == {ALICE, RITA, ROB}
    assert f"{d.instance_url(PERSISTERS[1])} unreachable" in d.logs("federation_inbound1")


async def test_the_writers_endpoints_need_the_replication_secret(client: Any) -> None:
    d = deployment(client)
    body = {"origin": REMOTE, "room_version": "12", "pdu": {}}
    async with aiohttp.ClientSession() as session:
        for path in (EVENTS_PATH, EDUS_PATH):
            async with session.post(d.url + path, json=body) as resp:  # nginx: not routed
                assert resp.status == 404, path
        main = d.processes["main"]
        async with session.post(f"http://127.0.0.1:{main.port}{EVENTS_PATH}", json=body) as resp:
            assert resp.status == 404  # the public listener does not serve it
            assert (await resp.json())["errcode"] == "M_UNRECOGNIZED"
        for name in ("main", *PERSISTERS):
            url = f"{d.instance_url(name)}{EVENTS_PATH}"
            async with session.post(url, json=body) as resp:
                assert resp.status == 403, name  # no secret
                assert (await resp.json())["errcode"] == "M_FORBIDDEN"
            # With the secret (a worker of another version, a bug): a malformed
            # request is a clean 400, never a 500 or a write.
            secret = {SECRET_HEADER: d.secret}
            for bad in (body, {**body, "pdus": [{}], "event_ids": []}, {"origin": 1}):
                async with session.post(url, json=bad, headers=secret) as resp:
                    assert resp.status == 400, (name, bad)
                    assert (await resp.json())["errcode"] == "M_BAD_JSON"
        async with session.post(
            f"{d.instance_url(PERSISTERS[0])}{EDUS_PATH}", json={}, headers=secret
        ) as resp:
            assert resp.status == 404  # EDUs are the main's


async def test_two_inbound_workers_take_the_same_transactions_at_once(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    require_parts()
    layout = {**FULL_LAYOUT, "federation_inbound": 2}
    client = await aiohttp_client(DeploymentServer(make_config(tmp_path), **layout))
    await seed_remote_key(client)
    d = deployment(client)
    rooms: list[str] = []
    for _ in range(2):
        rooms.append(await create_room(client))
        await join_remote(client, rooms[-1])
    alice = await client.app.token_for(ALICE)
    bob = await register(client)
    workers = [f"http://127.0.0.1:{d.processes[f'federation_inbound{i}'].port}" for i in (1, 2)]

    async def to(worker: str, txn: str, body: dict[str, Any]) -> tuple[int, Any]:
        path = f"/_matrix/federation/v1/send/{txn}"
        auth = sign_request("PUT", path, REMOTE, OUR, body, REMOTE_KEY)
        async with session.put(worker + path, json=body, headers={"Authorization": auth}) as r:
            return r.status, await r.json()

    # Ten transactions, each a message in each room (on the tips the last one made)
    # and a to-device message; each sent to both workers at the same moment.
    async with aiohttp.ClientSession() as session:
        for t in range(10):
            events = [await message(client, room, f"m{t}") for room in rooms]
            edu = {
                "edu_type": "m.direct_to_device",
                "content": {"sender": RITA, "type": "m.x", "message_id": f"td{t}",
                            "messages": {bob["user_id"]: {bob["device_id"]: {"t": t}}}},
            }  # fmt: skip
            body = {"origin": REMOTE, "origin_server_ts": 1, "pdus": [e.pdu for e in events],
                    "edus": [edu]}  # fmt: skip
            answers = await asyncio.gather(*(to(w, f"twice{t}", body) for w in workers))
            wanted = {e.event_id: {} for e in events}
            assert answers == [(200, {"pdus": wanted})] * 2, answers

    texts = [f"m{t}" for t in range(10)]
    for room in rooms:
        assert await eventually(lambda room=room: shows(client, alice, room, texts))
    sync = await client.get(
        "/_matrix/client/v3/sync?timeout=0",
        headers={"Authorization": f"Bearer {bob['access_token']}"},
    )
    got = [e["content"]["t"] for e in (await sync.json())["to_device"]["events"]]
    assert sorted(got) == list(range(10))


async def test_the_readers_write_a_transactions_edus_while_the_main_is_dead(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    require_parts()
    settings = {"stream_writers": READER_WRITERS}
    client = await aiohttp_client(DeploymentServer(make_config(tmp_path), settings))
    await seed_remote_key(client)
    d = deployment(client)
    room = await create_room(client)
    await join_remote(client, room)
    alice = await client.app.token_for(ALICE)
    bob = await register(client)

    async def sync(token: str, since: str | None = None) -> dict[str, Any]:
        params = {"timeout": "0", **({"since": since} if since else {})}
        resp = await client.get(
            "/_matrix/client/v3/sync", params=params, headers={"Authorization": f"Bearer {token}"}
        )
        assert resp.status == 200, await resp.text()
        return await resp.json()  # type: ignore[no-any-return]

    since = (await sync(alice))["next_batch"]
    bob_since = (await sync(bob["access_token"]))["next_batch"]
    d.kill("main")
    event = await message(client, room, "with every EDU")
    edus = (
        {"edu_type": "m.typing",
         "content": {"room_id": room, "user_id": RITA, "typing": True, "timeout": 25_000}},
        {"edu_type": "m.receipt",
         "content": {room: {"m.read": {RITA: {"event_ids": [event.event_id],
                                              "data": {"ts": 1}}}}}},
        {"edu_type": "m.direct_to_device",
         "content": {"sender": RITA, "type": "m.room_key_request", "message_id": "r1",
                     "messages": {bob["user_id"]: {bob["device_id"]: {"n": 2}}}}},
        {"edu_type": "m.device_list_update",
         "content": {"user_id": RITA, "device_id": "RITADEV", "stream_id": 7,
                     "prev_id": [], "deleted": False}},
        {"edu_type": "m.presence",
         "content": {"push": [{"user_id": RITA, "presence": "online",
                               "last_active_ago": 0}]}},
    )  # fmt: skip
    # Before the readers took EDUs, this was 503: the main alone wrote them.
    status, body = await send(client, "every-edu", [event.pdu], edus)
    assert (status, body) == (200, {"pdus": {event.event_id: {}}})

    seen: dict[str, Any] = {}

    async def alice_sees_all() -> bool:
        nonlocal since
        got = await sync(alice, since)
        since = got["next_batch"]
        joined = got.get("rooms", {}).get("join", {}).get(room, {})
        for edu in joined.get("ephemeral", {}).get("events", []):
            seen[edu["type"]] = edu["content"]
        changed = got.get("device_lists", {}).get("changed", [])
        seen["changed"] = seen.get("changed", False) or RITA in changed
        return {"m.typing", "m.receipt"} <= seen.keys() and seen["changed"]

    try:
        await eventually(alice_sees_all, timeout=15)
    except TimeoutError:
        raise AssertionError(f"alice saw {seen}") from None
    assert seen["m.typing"] == {"user_ids": [RITA]}
    assert seen["m.receipt"] == {event.event_id: {"m.read": {RITA: {"ts": 1}}}}
    got = await sync(bob["access_token"], bob_since)
    assert got["to_device"]["events"] == [
        {"sender": RITA, "type": "m.room_key_request", "content": {"n": 2}}
    ]
    # The EDUs were written by the readers (the inbound worker never fell back to the
    # main, which is down, and no transaction was refused).
    log = d.logs("federation_inbound1")
    assert "no writer" not in log and "unavailable" not in log, log[-2000:]

    # A stream writer's replication listener takes nothing without the secret.
    async with aiohttp.ClientSession() as session:
        url = f"{d.instance_url('client_reader1')}{EDUS_PATH}"
        async with session.post(url, json={"origin": REMOTE, "edus": list(edus)}) as resp:
            assert resp.status == 403 and (await resp.json())["errcode"] == "M_FORBIDDEN"

    # The reader taking this server's to-device messages dies too: the other one does.
    first = READER_WRITERS["to_device"][shard(REMOTE, len(READER_WRITERS["to_device"]))]
    d.kill(first)
    edu = {
        "edu_type": "m.direct_to_device",
        "content": {"sender": RITA, "type": "m.room_key_request", "message_id": "r2",
                    "messages": {bob["user_id"]: {bob["device_id"]: {"n": 3}}}},
    }  # fmt: skip
    assert await send(client, "one-reader-left", [], (edu,)) == (200, {"pdus": {}})
    bob_since = got["next_batch"]

    async def bob_gets_it() -> bool:
        body = await sync(bob["access_token"], bob_since)
        return [e["content"] for e in body["to_device"]["events"]] == [{"n": 3}]

    assert await eventually(bob_gets_it, timeout=15)
    assert f"to_device writer {d.instance_url(first)} unavailable" in d.logs("federation_inbound1")
