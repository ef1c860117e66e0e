"""Policy Servers (spec v1.18): a room whose state names a joined Policy Server has
every event signed by it before the event goes anywhere.

The Policy Server here is a fake port that signs with its own key (the room's
`m.room.policy` names our own server as `via`, which has a joined user: the spec lets a
Policy Server share a name with event origins). It refuses bodies containing "spam".
"""

from __future__ import annotations

import json
import time
from typing import Any

from signedjson.key import encode_verify_key_base64

from homeserver.app import create_app
from homeserver.appstate import LOCAL_EVENTS, STORES
from homeserver.composition_federation import Overrides
from homeserver.errors import MatrixError
from homeserver.events import get_room_version
from homeserver.events.builder import build_event
from homeserver.events.policy import POLICY_KEY_ID
from homeserver.events.signing import generate_signing_key, sign_event
from tests.client.helpers import SERVER_NAME, auth, make_user
from tests.federation.inbound_helpers import REMOTE_KEY


class FakePolicyServer:
    def __init__(self) -> None:
        self.key = generate_signing_key("policy_server")
        self.asked: list[dict[str, Any]] = []
        self.mode = "sign"

    @property
    def public_key(self) -> str:
        return encode_verify_key_base64(self.key.verify_key)

    async def ask_to_sign(self, via: str, pdu: dict[str, Any]) -> Any:
        self.asked.append(pdu)
        if self.mode == "down":
            raise OSError("connection refused")
        if "spam" in json.dumps(pdu.get("content")):
            raise MatrixError(400, "M_FORBIDDEN", "This looks like spam")
        key = self.key if self.mode == "sign" else generate_signing_key("policy_server")
        copy = {k: v for k, v in pdu.items() if k != "signatures"}
        sign_event(copy, get_room_version("12"), via, key)
        return {via: {POLICY_KEY_ID: copy["signatures"][via][POLICY_KEY_ID]}}


async def _setup(aiohttp_client, tmp_config, via: str = SERVER_NAME):
    fake = FakePolicyServer()
    client = await aiohttp_client(
        create_app(tmp_config(), overrides=Overrides(policy_servers=fake))
    )
    alice, token, _ = await make_user(client, "alice")
    resp = await client.post(
        "/_matrix/client/v3/createRoom", json={"room_version": "12"}, headers=auth(token)
    )
    room = (await resp.json())["room_id"]
    resp = await client.put(
        f"/_matrix/client/v3/rooms/{room}/state/m.room.policy/",
        json={"via": via, "public_keys": {"ed25519": fake.public_key}},
        headers=auth(token),
    )
    assert resp.status == 200, await resp.text()
    assert fake.asked == []  # the policy state event itself is never sent to it
    return client, fake, alice, token, room


async def _send(client, token: str, room: str, body: str) -> tuple[int, dict]:
    resp = await client.put(
        f"/_matrix/client/v3/rooms/{room}/send/m.room.message/t{time.monotonic_ns()}",
        json={"msgtype": "m.text", "body": body},
        headers=auth(token),
    )
    return resp.status, await resp.json()


async def test_local_events_are_signed_or_refused(aiohttp_client, tmp_config) -> None:
    client, fake, alice, token, room = await _setup(aiohttp_client, tmp_config)
    status, body = await _send(client, token, room, "hello")
    assert status == 200, body
    stored = await client.server.app[STORES].events.get_event(body["event_id"])
    ours = stored.pdu["signatures"][SERVER_NAME]
    assert POLICY_KEY_ID in ours and len(ours) == 2  # our key's signature kept too
    assert len(fake.asked) == 1

    resp = await client.put(
        f"/_matrix/client/v3/rooms/{room}/state/m.room.topic/",
        json={"topic": "state events too"},
        headers=auth(token),
    )
    assert resp.status == 200 and len(fake.asked) == 2

    # A refusal reaches the client verbatim, and the event goes nowhere.
    status, body = await _send(client, token, room, "buy spam now")
    assert (status, body) == (400, {"errcode": "M_FORBIDDEN", "error": "This looks like spam"})
    messages = await (
        await client.get(
            f"/_matrix/client/v3/rooms/{room}/messages",
            params={"dir": "b", "limit": "50"},
            headers=auth(token),
        )
    ).json()
    bodies = [e["content"].get("body") for e in messages["chunk"]]
    assert "hello" in bodies and "buy spam now" not in bodies

    for mode in ("down", "wrong_key"):  # no answer, or a signature that does not verify
        fake.mode = mode
        status, body = await _send(client, token, room, f"while {mode}")
        assert status == 502 and body["errcode"] == "M_UNKNOWN", (mode, body)
    assert alice


async def test_a_policy_server_without_joined_users_is_not_asked(
    aiohttp_client, tmp_config
) -> None:
    client, fake, _, token, room = await _setup(aiohttp_client, tmp_config, via="elsewhere.test")
    status, _ = await _send(client, token, room, "spam is fine here")
    assert status == 200 and fake.asked == []


async def test_events_of_other_servers_need_a_valid_signature(aiohttp_client, tmp_config) -> None:
    client, fake, _, _, room = await _setup(aiohttp_client, tmp_config)
    app = client.server.app
    current = await app[STORES].current_state.get_current_state_ids(room)
    version = get_room_version("12")
    create_id = current[("m.room.create", "")]

    def remote_event(body: str) -> Any:
        return build_event(
            version,
            room_id=room,
            sender="@rita:remote.test",
            type="m.room.message",
            content={"msgtype": "m.text", "body": body},
            prev_event_ids=[create_id],
            auth_event_ids=[],  # v12: the create event is implied
            depth=5,
            origin_server_ts=int(time.time() * 1000),
            server_name="remote.test",
            signing_key=REMOTE_KEY,
        )

    policy = app[LOCAL_EVENTS]._policy
    event = remote_event("from afar")
    fake.mode = "down"
    assert await policy.recommended(event, current) is False  # soft failed
    fake.mode = "sign"
    asked = len(fake.asked)
    # Not asked again while remembered as down (a peer cannot hold the room's lock
    # for a timeout per unsigned event it sends) ...
    assert await policy.recommended(event, current) is False
    assert len(fake.asked) == asked
    policy._down_until.clear()  # ... until DOWN_FOR_S passed
    assert await policy.recommended(event, current) is True  # asked again, signed now
    assert await policy.recommended(remote_event("spam from afar"), current) is False
    # An event that already carries a valid signature is not asked about again.
    signed = await policy.cosign(remote_event("pre-signed"), current)
    asked = len(fake.asked)
    assert await policy.recommended(signed, current) is True
    assert len(fake.asked) == asked
