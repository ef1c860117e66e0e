"""Redactions take effect on their target whatever their origin (rooms.redactions,
applied centrally by the Persister): local ones, ones received over federation, and
ones that arrive before the event they redact - but only when the redaction's sender
may redact that target (same server, or the room's redact power level)."""

from __future__ import annotations

from typing import Any

import pytest

from homeserver.appstate import STORES
from tests.client.helpers import auth, make_user
from tests.federation.inbound_helpers import (
    RITA,
    create_room,
    fed,
    join_remote,
    remote_event,
    seed_remote_key,
)
from tests.federation.multiserver import LoopbackServer, eventually

# -- two of our servers on loopback ------------------------------------------------------


async def _message_on(
    server: LoopbackServer, user: str, room_id: str, event_id: str
) -> dict[str, Any] | None:
    page = await server.ok("GET", f"/rooms/{room_id}/messages", user, dir="b", limit="50")
    return next((e for e in page["chunk"] if e["event_id"] == event_id), None)


async def test_remote_redactions_hide_content_in_messages(pair) -> None:
    a, b = pair
    alice = await a.register("alice")
    bob = await b.register("bob")
    room_id = await a.create_room(alice)
    await b.join(bob, room_id, [a.name])
    own = await b.send_text(bob, room_id, "bob's secret")
    other = await b.send_text(bob, room_id, "bob's rude remark")

    async def on_a(event_id: str) -> dict[str, Any] | None:
        return await _message_on(a, alice, room_id, event_id)

    assert (await eventually(lambda: on_a(other)))["content"]["body"] == "bob's rude remark"

    # Bob (on B) redacts his own message: A receives the redaction over federation.
    red1 = (await b.ok("PUT", f"/rooms/{room_id}/redact/{own}/t1", bob, {"reason": "oops"}))[
        "event_id"
    ]

    async def redacted_on_a() -> dict[str, Any] | None:
        event = await on_a(own)
        return event if event is not None and event["content"] == {} else None

    seen = await eventually(redacted_on_a)
    assert seen["unsigned"]["redacted_because"]["event_id"] == red1
    assert seen["unsigned"]["redacted_because"]["content"]["reason"] == "oops"
    single = await a.ok("GET", f"/rooms/{room_id}/event/{own}", alice)
    assert single["content"] == {}

    # Alice (A, room admin) redacts Bob's other message: B applies it although the
    # senders are on different servers, because Alice has the redact power level.
    red2 = (await a.ok("PUT", f"/rooms/{room_id}/redact/{other}/t2", alice, {}))["event_id"]

    async def redacted_on_b() -> dict[str, Any] | None:
        event = await _message_on(b, bob, room_id, other)
        return event if event is not None and event["content"] == {} else None

    seen = await eventually(redacted_on_b)
    assert seen["unsigned"]["redacted_because"]["event_id"] == red2
    # The local redaction on A was applied too (one central place for both).
    assert (await on_a(other))["content"] == {}


# -- a fake peer, in process -------------------------------------------------------------


@pytest.fixture
async def client(app_client):
    await seed_remote_key(app_client)
    return app_client


async def _send(client, txn: str, pdus: list[dict]) -> dict:
    status, body = await fed(
        client,
        "PUT",
        f"/_matrix/federation/v1/send/{txn}",
        {"origin": "remote.test", "origin_server_ts": 1, "pdus": pdus, "edus": []},
    )
    assert status == 200, body
    return body


async def _read(client, token: str, room_id: str, event_id: str) -> dict[str, Any]:
    r = await client.get(
        f"/_matrix/client/v3/rooms/{room_id}/event/{event_id}", headers=auth(token)
    )
    assert r.status == 200, await r.text()
    return await r.json()


async def test_redaction_that_arrives_before_its_target(client) -> None:
    room_id = await create_room(client)
    _, token, _ = await make_user(client, "alice")
    await join_remote(client, room_id)
    stores = client.app[STORES]
    base = await stores.events.get_forward_extremities(room_id)
    target = await remote_event(
        client, room_id, RITA, "m.room.message", {"msgtype": "m.text", "body": "later"}
    )
    # The redaction does not build on its target (a fork), so it can arrive first.
    redaction = await remote_event(
        client, room_id, RITA, "m.room.redaction", {"redacts": target.event_id}, prev=base
    )
    assert (await _send(client, "r1", [redaction.pdu]))["pdus"] == {redaction.event_id: {}}
    assert (await _send(client, "r2", [target.pdu]))["pdus"] == {target.event_id: {}}
    event = await _read(client, token, room_id, target.event_id)
    assert event["content"] == {}
    assert event["unsigned"]["redacted_because"]["event_id"] == redaction.event_id


async def test_remote_user_without_power_cannot_redact_a_local_event(client) -> None:
    room_id = await create_room(client)
    alice, token, _ = await make_user(client, "alice")
    await join_remote(client, room_id)
    r = await client.put(
        f"/_matrix/client/v3/rooms/{room_id}/send/m.room.message/m1",
        json={"msgtype": "m.text", "body": "mine"},
        headers=auth(token),
    )
    mine = (await r.json())["event_id"]
    own_msg = await remote_event(
        client, room_id, RITA, "m.room.message", {"msgtype": "m.text", "body": "rita's"}
    )
    await _send(client, "m1", [own_msg.pdu])
    # The auth rules accept both redactions (v12); only Rita's own message is redacted.
    bad = await remote_event(client, room_id, RITA, "m.room.redaction", {"redacts": mine})
    assert (await _send(client, "r1", [bad.pdu]))["pdus"] == {bad.event_id: {}}
    good = await remote_event(
        client, room_id, RITA, "m.room.redaction", {"redacts": own_msg.event_id}
    )
    assert (await _send(client, "r2", [good.pdu]))["pdus"] == {good.event_id: {}}
    assert (await _read(client, token, room_id, mine))["content"]["body"] == "mine"
    assert (await _read(client, token, room_id, own_msg.event_id))["content"] == {}
    assert alice.endswith(":test.local")
