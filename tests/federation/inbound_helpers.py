"""A fake peer, `remote.test`, talking to our app through the in-process test client.

Its signing key is seeded into our key store, so no network is needed. Requests are
signed with federation.auth.sign_request over the exact raw path that is sent.
"""

from __future__ import annotations

import json
import time
from typing import Any

from aiohttp.test_utils import TestClient
from signedjson.key import encode_verify_key_base64, get_verify_key

from federation.auth import sign_request
from homeserver.appstate import ROOM_CREATOR, STORES
from homeserver.events import Event
from homeserver.events.builder import build_event
from homeserver.events.hashing import add_content_hash
from homeserver.events.signing import generate_signing_key, sign_event
from homeserver.graph.auth_rules import auth_types_for_event
from homeserver.rooms.creation import RoomSpec

OUR = "test.local"
REMOTE = "remote.test"
REMOTE_KEY = generate_signing_key("r1")
ALICE = "@alice:test.local"
RITA = "@rita:remote.test"


async def seed_remote_key(client: TestClient, server: str = REMOTE, key: Any = REMOTE_KEY) -> None:
    stores = client.app[STORES]
    now = int(time.time() * 1000)
    vk = get_verify_key(key)
    await stores.server_keys.store_server_keys(
        server,
        [(f"{key.alg}:{key.version}", encode_verify_key_base64(vk), now + 86_400_000, None)],
        now,
    )


async def fed(
    client: TestClient,
    method: str,
    path: str,
    body: Any = None,
    *,
    origin: str = REMOTE,
    destination: str = OUR,
    key: Any = REMOTE_KEY,
    sign: bool = True,
) -> tuple[int, Any]:
    """Send a signed federation request; `path` is the raw path (already encoded)."""
    headers = {}
    if sign:
        headers["Authorization"] = sign_request(method, path, origin, destination, body, key)
    data = json.dumps(body).encode() if body is not None else None
    if data is not None:
        headers["Content-Type"] = "application/json"
    resp = await client.request(method, path, data=data, headers=headers)
    try:
        payload = await resp.json()
    except Exception:
        payload = await resp.text()
    return resp.status, payload


async def create_room(
    client: TestClient, version: str = "12", preset: str = "public_chat", creator: str = ALICE
) -> str:
    return await client.app[ROOM_CREATOR].create_room(
        creator, RoomSpec(room_version=version, preset=preset), {}
    )


async def remote_event(
    client: TestClient,
    room_id: str,
    sender: str,
    etype: str,
    content: dict[str, Any],
    state_key: str | None = None,
    *,
    prev: list[str] | None = None,
    auth: list[str] | None = None,
    key: Any = REMOTE_KEY,
    ts: int | None = None,
) -> Event:
    """An event built and signed by the fake peer on our current state (or `prev`)."""
    stores = client.app[STORES]
    version = await _version(client, room_id)
    prev_ids = prev or await stores.events.get_forward_extremities(room_id)
    state = await stores.current_state.get_current_state_ids(room_id)
    keys = auth_types_for_event(version, etype, sender, state_key, content)
    prevs = await stores.events.get_events(prev_ids)
    return build_event(
        version,
        room_id=room_id,
        sender=sender,
        type=etype,
        content=content,
        state_key=state_key,
        prev_event_ids=prev_ids,
        auth_event_ids=auth if auth is not None else [state[k] for k in sorted(keys) if k in state],
        depth=max((e.depth for e in prevs.values()), default=0) + 1,
        origin_server_ts=ts or int(time.time() * 1000),
        server_name=REMOTE,
        signing_key=key,
    )


async def _version(client: TestClient, room_id: str):
    from homeserver.events import get_room_version

    return get_room_version(await client.app[STORES].rooms.get_room_version(room_id))


def sign_template(template: dict[str, Any], version: Any, key: Any = REMOTE_KEY) -> Event:
    """What the joining server does with a make_* template: hash, sign, compute the ID."""
    pdu = dict(template)
    add_content_hash(pdu)
    sign_event(pdu, version, REMOTE, key)
    return Event(pdu, version)


async def join_remote(client: TestClient, room_id: str, user: str = RITA) -> dict[str, Any]:
    """make_join + send_join for `user`; returns the send_join body."""
    status, made = await fed(
        client, "GET", f"/_matrix/federation/v1/make_join/{room_id}/{user}?ver=12&ver=11&ver=10"
    )
    assert status == 200, made
    version = await _version(client, room_id)
    event = sign_template(made["event"], version)
    status, body = await fed(
        client, "PUT", f"/_matrix/federation/v2/send_join/{room_id}/{event.event_id}", event.pdu
    )
    assert status == 200, body
    return body
