"""PUT /send: each receiving check exercised with a PDU built to fail it, idempotency,
EDUs, and per-PDU results that never reject the rest of a transaction."""

from __future__ import annotations

import pytest

from homeserver.appstate import LOCAL_EVENTS, STORES
from homeserver.events.signing import generate_signing_key
from tests.federation.inbound_helpers import (
    ALICE,
    RITA,
    create_room,
    fed,
    join_remote,
    remote_event,
    seed_remote_key,
)


@pytest.fixture
async def client(app_client):
    await seed_remote_key(app_client)
    return app_client


@pytest.fixture
async def room(client):
    room_id = await create_room(client)
    await join_remote(client, room_id)
    return room_id


async def send(client, txn, pdus, edus=()):
    return await fed(
        client,
        "PUT",
        f"/_matrix/federation/v1/send/{txn}",
        {"origin": "remote.test", "origin_server_ts": 1, "pdus": list(pdus), "edus": list(edus)},
    )


async def test_good_pdu_is_accepted_and_visible(client, room):
    ev = await remote_event(
        client, room, RITA, "m.room.message", {"body": "hi", "msgtype": "m.text"}
    )
    status, body = await send(client, "t1", [ev.pdu])
    assert status == 200
    assert body == {"pdus": {ev.event_id: {}}}
    stores = client.app[STORES]
    assert await stores.events.get_forward_extremities(room) == [ev.event_id]
    assert (await stores.events.get_event(ev.event_id)).content["body"] == "hi"


async def test_forged_signature_is_dropped(client, room):
    ev = await remote_event(
        client, room, RITA, "m.room.message", {"body": "x"}, key=generate_signing_key("r1")
    )
    status, body = await send(client, "t2", [ev.pdu])
    assert status == 200
    assert "signature" in body["pdus"][ev.event_id]["error"]
    assert not await client.app[STORES].events.have_events([ev.event_id])


async def test_wrong_content_hash_is_stored_redacted(client, room):
    ev = await remote_event(client, room, RITA, "m.room.message", {"body": "original"})
    pdu = dict(ev.pdu)
    pdu["content"] = {"body": "tampered"}  # not covered by the signature, only the hash
    status, body = await send(client, "t3", [pdu])
    assert body["pdus"] == {ev.event_id: {}}
    stored = await client.app[STORES].events.get_event(ev.event_id)
    assert stored.content == {}


async def test_auth_violation_is_rejected(client, room):
    # Rita (power 0) may not change the power levels.
    ev = await remote_event(client, room, RITA, "m.room.power_levels", {"users": {RITA: 100}}, "")
    status, body = await send(client, "t4", [ev.pdu])
    assert body["pdus"][ev.event_id]["error"].startswith("Rejected")
    stores = client.app[STORES]
    assert await stores.events.get_rejected(ev.event_id) is not None
    assert ev.event_id not in await stores.events.get_forward_extremities(room)


async def test_soft_failed_event(client, room):
    stores = client.app[STORES]
    before_ban = await stores.events.get_forward_extremities(room)
    await client.app[LOCAL_EVENTS].send(room, ALICE, "m.room.member", {"membership": "ban"}, RITA)
    # Allowed by the state before it (Rita joined), not by the current state (banned).
    state_before = await stores.state.get_state_ids_for_event(before_ban[0])
    keys = [("m.room.power_levels", ""), ("m.room.member", RITA)]
    ev_auth = await remote_event(
        client,
        room,
        RITA,
        "m.room.message",
        {"body": "sneaky"},
        prev=before_ban,
        auth=[state_before[k] for k in sorted(keys) if k in state_before],
    )
    status, body = await send(client, "t5", [ev_auth.pdu])
    assert body["pdus"] == {ev_auth.event_id: {}}
    assert await stores.events.is_soft_failed(ev_auth.event_id)


async def test_oversized_event_is_dropped(client, room):
    ev = await remote_event(client, room, RITA, "m.room.message", {"body": "x"})
    pdu = dict(ev.pdu, content={"body": "x" * 70_000})  # same event ID, too large
    status, body = await send(client, "t6", [pdu])
    assert "65536" in body["pdus"][ev.event_id]["error"]
    assert not await client.app[STORES].events.have_events([ev.event_id])


async def test_auth_event_from_another_room_is_rejected(client, room):
    other = await create_room(client)
    stores = client.app[STORES]
    good = await remote_event(client, room, RITA, "m.room.message", {"body": "x"})
    other_pl = (await stores.current_state.get_current_state_ids(other))[
        ("m.room.power_levels", "")
    ]
    bad = await remote_event(
        client,
        room,
        RITA,
        "m.room.message",
        {"body": "x"},
        auth=[*good.auth_event_ids, other_pl],
    )
    status, body = await send(client, "t7", [bad.pdu])
    assert "room" in body["pdus"][bad.event_id]["error"]
    assert bad.event_id not in await stores.events.get_forward_extremities(room)


async def test_one_bad_pdu_does_not_reject_the_rest_and_unknown_room(client, room):
    good = await remote_event(client, room, RITA, "m.room.message", {"body": "ok"})
    forged = await remote_event(
        client, room, RITA, "m.room.message", {"body": "f"}, key=generate_signing_key("r1")
    )
    unknown = dict(good.pdu, room_id="!unknown:remote.test")
    status, body = await send(client, "t8", [forged.pdu, good.pdu, unknown])
    results = body["pdus"]
    assert results[good.event_id] == {}
    assert "error" in results[forged.event_id]
    assert any("Unknown room" in r.get("error", "") for r in results.values())


async def test_transaction_is_idempotent(client, room):
    ev = await remote_event(client, room, RITA, "m.room.message", {"body": "once"})
    first = await send(client, "same", [ev.pdu])
    other = await remote_event(client, room, RITA, "m.room.message", {"body": "twice"})
    second = await send(client, "same", [other.pdu])
    assert first == second == (200, {"pdus": {ev.event_id: {}}})
    assert not await client.app[STORES].events.have_events([other.event_id])


async def test_too_many_pdus_is_400(client, room):
    status, body = await send(client, "big", [{}] * 51)
    assert (status, body["errcode"]) == (400, "M_BAD_JSON")


async def test_acl_denies_pdus_in_send(client, room):
    await client.app[LOCAL_EVENTS].send(
        room, ALICE, "m.room.server_acl", {"allow": ["*"], "deny": ["remote.test"]}, ""
    )
    ev = await remote_event(client, room, RITA, "m.room.message", {"body": "x"})
    status, body = await send(client, "acl", [ev.pdu])
    assert "ACL" in body["pdus"][ev.event_id]["error"]


async def test_to_device_edu_is_delivered_once(client, room):
    stores = client.app[STORES]
    await stores.accounts.create_user("@bob:test.local", None)
    await stores.accounts.upsert_device("@bob:test.local", "DEV1", None)
    edu = {
        "edu_type": "m.direct_to_device",
        "content": {
            "sender": RITA,
            "type": "m.room_key_request",
            "message_id": "m1",
            "messages": {"@bob:test.local": {"*": {"k": 1}}},
        },
    }
    forged = {
        "edu_type": "m.direct_to_device",
        "content": {
            "sender": "@mallory:elsewhere.test",
            "type": "x",
            "message_id": "m2",
            "messages": {"@bob:test.local": {"DEV1": {"k": 2}}},
        },
    }
    await send(client, "e1", [], [edu, forged])
    await send(client, "e2", [], [edu])
    from homeserver.storage.to_device import ToDeviceStore

    msgs = await ToDeviceStore(stores.db).get_messages("@bob:test.local", "DEV1", 0, 10**9)
    assert [(m.sender, m.content) for _, m in msgs] == [(RITA, {"k": 1})]


async def test_to_device_edu_for_devices_that_do_not_exist_is_not_queued(client, room):
    """Inbound to-device takes the local delivery path: only existing devices get
    messages, so a peer cannot fill our queue for made-up device IDs (or leave messages
    waiting for a device that logs in later)."""
    from homeserver.storage.to_device import ToDeviceStore

    stores = client.app[STORES]
    bob = "@bob:test.local"
    await stores.accounts.create_user(bob, None)
    await stores.accounts.upsert_device(bob, "DEV1", None)
    messages = {bob: {f"GHOST{i}": {"n": i} for i in range(20)} | {"DEV1": {"n": "real"}}}
    edu = {
        "edu_type": "m.direct_to_device",
        "content": {"sender": RITA, "type": "m.x", "message_id": "g1", "messages": messages},
    }
    await send(client, "ghosts", [], [edu])
    store = ToDeviceStore(stores.db)
    real = await store.get_messages(bob, "DEV1", 0, 10**9)
    assert [m.content for _, m in real] == [{"n": "real"}]
    await stores.accounts.upsert_device(bob, "GHOST3", None)  # logs in later
    assert await store.get_messages(bob, "GHOST3", 0, 10**9) == []
