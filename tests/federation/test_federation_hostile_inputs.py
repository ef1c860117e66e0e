"""Hostile input across every federation and key route, with properly signed requests.

Routes come from create_app's router (/_matrix/federation and /_matrix/key). Each is sent
hostile path parameters, raw bodies, one-field-at-a-time body mutations and hostile
query strings, all signed by the fake peer remote.test (which is joined to the room,
so requests get past ACL and visibility checks to the handlers), plus junk X-Matrix
headers. Every answer must be < 500, JSON, with an `errcode` when >= 400, within a few
seconds; afterwards the server still answers /version, its key document and a signed
state read of the room, and a local user can still send into it.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable
from typing import Any

from aiohttp.test_utils import TestClient

from federation.auth import sign_request
from homeserver.app import create_app
from homeserver.appstate import LOCAL_EVENTS, STORES
from homeserver.config import Config
from homeserver.events import get_room_version
from homeserver.events.hashing import add_content_hash
from homeserver.events.signing import sign_event
from tests.client.hostile import (
    HOSTILE_PATH_VALUES,
    HOSTILE_QUERIES,
    RAW_BODIES,
    Route,
    Sender,
    enumerate_routes,
    field_mutations,
    fill_path,
)
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

PREFIXES = ("/_matrix/federation", "/_matrix/key")


def _signer(method: str, path: str, data: bytes | None) -> dict[str, str]:
    """X-Matrix for the exact bytes sent; bodies that are not JSON are signed as absent."""
    content: Any = None
    if data:
        try:
            content = json.loads(data)
            json.dumps(content).encode("utf-8")  # lone surrogates cannot be signed
        except (ValueError, RecursionError):
            content = None
    try:
        return {"Authorization": sign_request(method, path, REMOTE, OUR, content, REMOTE_KEY)}
    except (ValueError, TypeError):
        return {"Authorization": sign_request(method, path, REMOTE, OUR, None, REMOTE_KEY)}


def _pdu(room_id: str, prev: str) -> dict[str, Any]:
    return {
        "type": "m.room.message",
        "room_id": room_id,
        "sender": RITA,
        "content": {"msgtype": "m.text", "body": "x"},
        "depth": 5,
        "prev_events": [prev],
        "auth_events": [prev],
        "origin_server_ts": 1_700_000_000_000,
        "hashes": {"sha256": "aGFzaA"},
        "signatures": {REMOTE: {"ed25519:r1": "c2ln"}},
    }


def _bodies(room_id: str, event_id: str) -> list[tuple[str, dict[str, Any]]]:
    pdu = _pdu(room_id, event_id)
    return [
        (
            r"/send/",
            {
                "origin": REMOTE,
                "origin_server_ts": 1_700_000_000_000,
                "pdus": [pdu],
                "edus": [
                    {
                        "edu_type": "m.typing",
                        "content": {"room_id": room_id, "user_id": RITA, "typing": True},
                    },
                    {
                        "edu_type": "m.receipt",
                        "content": {
                            room_id: {
                                "m.read": {RITA: {"event_ids": [event_id], "data": {"ts": 1}}}
                            }
                        },
                    },
                    {
                        "edu_type": "m.presence",
                        "content": {"push": [{"user_id": RITA, "presence": "online"}]},
                    },
                    {
                        "edu_type": "m.device_list_update",
                        "content": {
                            "user_id": RITA,
                            "device_id": "D",
                            "stream_id": 1,
                            "prev_id": [],
                            "deleted": False,
                            "keys": {"user_id": RITA, "device_id": "D"},
                        },
                    },
                    {
                        "edu_type": "m.direct_to_device",
                        "content": {
                            "sender": RITA,
                            "type": "m.x",
                            "message_id": "m",
                            "messages": {ALICE: {"*": {"a": 1}}},
                        },
                    },
                    {
                        "edu_type": "m.signing_key_update",
                        "content": {"user_id": RITA, "master_key": {"user_id": RITA}},
                    },
                ],
            },
        ),
        (r"/invite/", {"event": pdu, "room_version": "12", "invite_room_state": [pdu]}),
        (r"/send_(join|leave|knock)/", pdu),
        (
            r"/get_missing_events/",
            {
                "earliest_events": [event_id],
                "latest_events": [event_id],
                "limit": 10,
                "min_depth": 0,
            },
        ),
        (
            r"/publicRooms$",
            {"limit": 10, "since": "s", "filter": {"generic_search_term": "x"}},
        ),
        (r"/user/keys/query$", {"device_keys": {ALICE: ["D"]}}),
        (r"/user/keys/claim$", {"one_time_keys": {ALICE: {"D": "signed_curve25519"}}}),
    ]


async def _fuzz(send: Sender, route: Route, params: dict[str, str], bodies: Any) -> None:
    body = next((b for pattern, b in bodies if re.search(pattern, route.path)), {})
    has_body = route.method in ("POST", "PUT")
    data = json.dumps(body).encode() if has_body else None
    path = fill_path(route.path, params)
    for name in route.params:
        for value in HOSTILE_PATH_VALUES:
            bad = fill_path(route.path, {**params, name: value}, raw={name})
            await send(route.method, bad, data, {})
    if has_body:
        for raw in RAW_BODIES:
            await send(route.method, path, raw, {})
        for mutated in field_mutations(body, random.Random(route.path), max_mutations=24):
            await send(route.method, path, json.dumps(mutated).encode(), {})
    for query in HOSTILE_QUERIES:
        await send(route.method, f"{path}?{query}", data, {})


def _resigned(pdu: dict[str, Any], version: Any) -> dict[str, Any] | None:
    """A mutated PDU with fresh hashes and remote.test's signature (None if unsignable)."""
    pdu = dict(pdu)
    pdu.pop("signatures", None)
    pdu.pop("hashes", None)
    try:
        add_content_hash(pdu)
        sign_event(pdu, version, REMOTE, REMOTE_KEY)
    except Exception:  # noqa: BLE001 - garbage the signer cannot handle is skipped
        return None
    return pdu


async def _fuzz_signed_pdus(send: Sender, client: TestClient, room_id: str) -> None:
    """Correctly hashed and signed PDUs with hostile fields, so they pass the signature
    check and reach the auth rules, state handling and storage."""
    version = get_room_version(await client.app[STORES].rooms.get_room_version(room_id))
    base = await remote_event(
        client, room_id, RITA, "m.room.message", {"msgtype": "m.text", "body": "x"}
    )
    state = await remote_event(client, room_id, RITA, "m.room.topic", {"topic": "t"}, "")
    member = await remote_event(
        client, room_id, RITA, "m.room.member", {"membership": "join", "displayname": "r"}, RITA
    )
    rng = random.Random(7)
    for n, template in enumerate((base.pdu, state.pdu, member.pdu)):
        for i, mutated in enumerate(field_mutations(template, rng, max_mutations=40)):
            pdu = _resigned(mutated, version) if isinstance(mutated, dict) else None
            if pdu is None:
                continue
            txn = {"origin": REMOTE, "origin_server_ts": 1_700_000_000_000, "pdus": [pdu]}
            path = f"/_matrix/federation/v1/send/pdu{n}-{i}"
            status, body = await send("PUT", path, json.dumps(txn).encode(), {})
            assert status == 200, body


JUNK_AUTH = [
    "X-Matrix",
    "X-Matrix origin=",
    'X-Matrix origin="remote.test",key="ed25519:r1",sig="bm9wZQ"',
    'X-Matrix origin="remote.test",destination="test.local",key="ed25519:r1",sig="%%%"',
    'X-Matrix origin="[::1",key="ed25519:r1",sig="x"',
    'X-Matrix origin="..",key="ed25519:r1",sig="x"',
    'X-Matrix origin="' + "a" * 300 + '",key="ed25519:r1",sig="x"',
    'X-Matrix origin="remote.test",destination="elsewhere.test",key="ed25519:r1",sig="x"',
    'X-Matrix origin="remote.test",key="ed25519:nope",sig="x"',
    'X-Matrix origin="remote.test",key="ed25519:r1",sig="x",sig="y"',
    "X-Matrix origin=remote.test,key=ed25519:r1,sig=x,,,",
    'X-Matrix origin="rem\u00f6te.test",key="ed25519:r1",sig="x"',
    "Bearer token",
]


async def test_every_federation_route_survives_hostile_input(
    database_settings: dict[str, Any], aiohttp_client: Any, tmp_config: Callable[..., Config]
) -> None:
    client = await aiohttp_client(create_app(tmp_config(**database_settings)))
    await seed_remote_key(client)
    room_id = await create_room(client)
    await join_remote(client, room_id)
    event = await client.app[LOCAL_EVENTS].send(
        room_id, ALICE, "m.room.message", {"msgtype": "m.text", "body": "hello"}
    )
    params = {
        "room_id": room_id,
        "event_id": event.event_id,
        "user_id": "@newcomer:remote.test",
        "txn_id": "txn1",
        "key_id": "ed25519:a_key",
    }
    routes = enumerate_routes(client.app, PREFIXES)
    assert len(routes) > 20
    bodies = _bodies(room_id, event.event_id)

    signed = Sender(client, sign=_signer)
    for route in routes:
        await _fuzz(signed, route, params, bodies)
    await _fuzz_signed_pdus(signed, client, room_id)

    unsigned = Sender(client)
    for route in routes:
        path = fill_path(route.path, params)
        for header in JUNK_AUTH:
            await unsigned(route.method, path, None, {"Authorization": header})
        await unsigned(route.method, path, None, {})

    failures = signed.failures + unsigned.failures
    assert not failures, "\n".join(failures[:60]) + f"\n({len(failures)} total)"
    assert signed.count > 1500

    # Still healthy and consistent.
    status, body = await fed(client, "GET", "/_matrix/federation/v1/version")
    assert status == 200 and "server" in body
    resp = await client.get("/_matrix/key/v2/server")
    assert resp.status == 200 and (await resp.json())["server_name"] == OUR
    status, body = await fed(
        client, "GET", f"/_matrix/federation/v1/state_ids/{room_id}?event_id={event.event_id}"
    )
    assert status == 200, body
    assert len(body["pdu_ids"]) >= 5
    after = await client.app[LOCAL_EVENTS].send(
        room_id, ALICE, "m.room.message", {"msgtype": "m.text", "body": "still here"}
    )
    stored = await client.app[STORES].events.get_event(after.event_id)
    assert stored is not None and stored.content["body"] == "still here"
