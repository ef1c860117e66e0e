"""Application services, the later parts (issue 15): timestamp massaging, what a bridge
that encrypts receives (to-device messages, MSC3202 key counts and device lists), and
appservice network room lists. The `bridge` fixture: tests/client/conftest.py."""

from __future__ import annotations

import asyncio
from typing import Any

from homeserver.appstate import STORES
from homeserver.storage.to_device import ToDeviceStore
from tests.client.appservice_kit import C, FakeAppService, as_request
from tests.client.helpers import auth, eventually, register_user


async def test_timestamp_massaging_for_appservice_senders_only(bridge: Any) -> None:
    """`?ts=` (application service API): a bridged message keeps its original time."""
    client, _ = bridge
    status, _ = await as_request(
        client,
        "POST",
        "/register",
        {"type": "m.login.application_service", "username": "bridge_ts", "inhibit_login": True},
    )
    assert status == 200
    user = "@bridge_ts:test.local"
    status, body = await as_request(
        client, "POST", "/createRoom", {"preset": "public_chat"}, user_id=user
    )
    room = body["room_id"]
    old = 1_500_000_000_000
    status, body = await as_request(
        client,
        "PUT",
        f"/rooms/{room}/send/m.room.message/ts1",
        {"msgtype": "m.text", "body": "from 2017"},
        user_id=user,
        ts=str(old),
    )
    assert status == 200, body
    status, event = await as_request(
        client, "GET", f"/rooms/{room}/event/{body['event_id']}", user_id=user
    )
    assert event["origin_server_ts"] == old
    status, body = await as_request(
        client, "PUT", f"/rooms/{room}/state/m.room.topic/", {"topic": "t"}, user_id=user, ts="42"
    )
    status, event = await as_request(
        client, "GET", f"/rooms/{room}/event/{body['event_id']}", user_id=user
    )
    assert event["origin_server_ts"] == 42
    status, body = await as_request(
        client, "PUT", f"/rooms/{room}/send/m.room.message/ts2", {"body": "x"}, ts="soon"
    )
    assert (status, body["errcode"]) == (400, "M_INVALID_PARAM")
    # Anyone else's ?ts= is ignored.
    human = await register_user(client, "tshuman")
    token = human["access_token"]
    resp = await client.post(f"{C}/join/{room}", headers=auth(token))
    assert resp.status == 200
    resp = await client.put(
        f"{C}/rooms/{room}/send/m.room.message/h1?ts=1",
        json={"msgtype": "m.text", "body": "now"},
        headers=auth(token),
    )
    event_id = (await resp.json())["event_id"]
    event = await (
        await client.get(f"{C}/rooms/{room}/event/{event_id}", headers=auth(token))
    ).json()
    assert event["origin_server_ts"] > old


async def _field(fake: FakeAppService, key: str, predicate: Any, timeout: float = 10) -> Any:
    async with asyncio.timeout(timeout):
        while True:
            for body in fake.bodies:
                if key in body and predicate(body[key]):
                    return body[key]
            await asyncio.sleep(0.05)


async def test_to_device_and_device_data_reach_an_encrypting_bridge(bridge: Any) -> None:
    """MSC2409 to-device messages and MSC3202 key counts and device-list changes for an
    appservice's own devices: what a bridge that encrypts (mautrix with appservice
    encryption) reads from its transactions instead of syncing."""
    client, fake = bridge
    user = "@bridge_e:test.local"
    await as_request(
        client,
        "POST",
        "/register",
        {"type": "m.login.application_service", "username": "bridge_e", "inhibit_login": True},
    )
    status, _ = await as_request(client, "PUT", "/devices/BRIDGEDEV", {}, user_id=user)
    assert status == 201
    otks = {f"signed_curve25519:K{i}": {"key": f"k{i}", "signatures": {}} for i in range(3)}
    status, body = await as_request(
        client, "POST", "/keys/upload", {"one_time_keys": otks}, user_id=user, device_id="BRIDGEDEV"
    )
    assert status == 200 and body["one_time_key_counts"]["signed_curve25519"] == 3, body
    human = await register_user(client, "encrypter")
    h = auth(human["access_token"])

    # A to-device message to the bridge's device arrives in a transaction ...
    resp = await client.put(
        f"{C}/sendToDevice/m.room_key_request/td1",
        json={"messages": {user: {"BRIDGEDEV": {"ask": 1}}}},
        headers=h,
    )
    assert resp.status == 200
    messages = await _field(fake, "de.sorunome.msc2409.to_device", lambda m: len(m) > 0)
    assert messages == [
        {
            "type": "m.room_key_request",
            "sender": human["user_id"],
            "content": {"ask": 1},
            "to_user_id": user,
            "to_device_id": "BRIDGEDEV",
        }
    ]
    # ... and is gone from the queue once delivered.
    store = ToDeviceStore(client.server.app[STORES].db)
    async with asyncio.timeout(5):
        while await store.get_messages_limited(user, "BRIDGEDEV", 2**62, 10):
            await asyncio.sleep(0.05)

    # Someone claims a key: the bridge hears its new count.
    resp = await client.post(
        f"{C}/keys/claim",
        json={"one_time_keys": {user: {"BRIDGEDEV": "signed_curve25519"}}},
        headers=h,
    )
    assert resp.status == 200
    counts = await _field(
        fake, "org.matrix.msc3202.device_one_time_keys_count", lambda c: user in c
    )
    assert counts[user]["BRIDGEDEV"]["signed_curve25519"] == 2
    body = next(b for b in fake.bodies if "org.matrix.msc3202.device_one_time_keys_count" in b)
    assert body["org.matrix.msc3202.device_unused_fallback_key_types"][user]["BRIDGEDEV"] == []

    # A user sharing a room with the bridge's user changes devices.
    resp = await client.post(f"{C}/createRoom", json={"preset": "public_chat"}, headers=h)
    room = (await resp.json())["room_id"]
    await as_request(client, "POST", f"/join/{room}", {}, user_id=user)
    keys = {
        "user_id": human["user_id"],
        "device_id": human["device_id"],
        "algorithms": ["m.olm.v1.curve25519-aes-sha2"],
        "keys": {f"curve25519:{human['device_id']}": "abc"},
        "signatures": {},
    }
    resp = await client.post(f"{C}/keys/upload", json={"device_keys": keys}, headers=h)
    lists = await _field(
        fake, "org.matrix.msc3202.device_lists", lambda d: human["user_id"] in d["changed"]
    )
    assert lists["left"] == []


async def test_an_appservice_publishes_rooms_in_its_network_list(bridge: Any) -> None:
    """PUT /directory/list/appservice/{networkId}/{roomId}: only with the as_token; the
    room shows in /publicRooms for that third_party_instance_id or with
    include_all_networks, not in the server's own list."""
    client, _ = bridge
    human = await register_user(client, "lister")
    h = auth(human["access_token"])
    resp = await client.post(f"{C}/createRoom", json={"preset": "public_chat"}, headers=h)
    room = (await resp.json())["room_id"]
    path = f"/directory/list/appservice/irc/{room}"
    resp = await client.put(C + path, json={"visibility": "public"}, headers=h)
    assert resp.status == 403 and (await resp.json())["errcode"] == "M_FORBIDDEN"
    status, body = await as_request(client, "PUT", path, {"visibility": "sideways"})
    assert (status, body["errcode"]) == (400, "M_BAD_JSON")
    status, _ = await as_request(client, "PUT", path, {"visibility": "public"})
    assert status == 200

    async def listed(**body: Any) -> list[str]:
        resp = await client.post(f"{C}/publicRooms", json=body, headers=h)
        assert resp.status == 200
        return [r["room_id"] for r in (await resp.json())["chunk"]]

    assert room not in await listed()
    assert room in await listed(third_party_instance_id="bridge|irc")
    assert room not in await listed(third_party_instance_id="bridge|slack")
    assert room in await listed(include_all_networks=True)
    status, _ = await as_request(client, "PUT", path, {"visibility": "private"})
    assert status == 200
    rooms = await eventually(  # a worker deployment: the readers hear of it over Redis
        client,
        lambda: listed(third_party_instance_id="bridge|irc"),
        lambda rooms: room not in rooms,
    )
    assert room not in rooms
    status, body = await as_request(
        client,
        "PUT",
        "/directory/list/appservice/irc/!nowhere:test.local",
        {"visibility": "public"},
    )
    assert status == 404
