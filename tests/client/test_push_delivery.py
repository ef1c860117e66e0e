"""Notifications reach push gateways (issue 15, Push Gateway API): a fake gateway gets
each notifying event with names, counts and tweaks (or only IDs for event_id_only), a
gateway that fails is retried, a rejected pushkey removes the pusher, and nothing is
pushed for the user's own messages or to gateways on blocked addresses."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from homeserver.app import create_app
from homeserver.appstate import PUSH_STORE
from tests.client.helpers import auth, eventually, register_user

C = "/_matrix/client/v3"


class Gateway:
    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.fail_next = 0
        self.reject: set[str] = set()
        self.server: TestServer | None = None

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        if self.fail_next:
            self.fail_next -= 1
            return web.json_response({"error": "busy"}, status=503)
        self.received.append(body)
        keys = [d["pushkey"] for d in body["notification"]["devices"]]
        return web.json_response({"rejected": [k for k in keys if k in self.reject]})

    @property
    def url(self) -> str:
        assert self.server is not None
        return str(self.server.make_url("/_matrix/push/v1/notify"))

    async def wait_for(self, count: int, timeout: float = 10) -> list[dict[str, Any]]:
        async with asyncio.timeout(timeout):
            while len(self.received) < count:
                await asyncio.sleep(0.05)
        return self.received


@pytest.fixture
async def gateway() -> AsyncIterator[Gateway]:
    gw = Gateway()
    app = web.Application()
    app.router.add_post("/_matrix/push/v1/notify", gw.handle)
    gw.server = TestServer(app, host="127.0.0.1")
    await gw.server.start_server()
    try:
        yield gw
    finally:
        await gw.server.close()


@pytest.fixture
async def client(aiohttp_client: Any, tmp_config: Any) -> TestClient:
    # The gateway runs on loopback, which the outbound policy blocks unless allowed.
    return await aiohttp_client(create_app(tmp_config(ip_range_whitelist=["127.0.0.0/8"])))


async def setup_pair(client: TestClient, gw: Gateway, **data: Any) -> tuple[Any, Any, str]:
    alice = await register_user(client, "alice")
    bob = await register_user(client, "bob")
    a, b = auth(alice["access_token"]), auth(bob["access_token"])
    await client.put(
        f"{C}/profile/{bob['user_id']}/displayname", json={"displayname": "Bob B"}, headers=b
    )
    resp = await client.post(
        f"{C}/createRoom", json={"preset": "public_chat", "name": "Tea"}, headers=a
    )
    room = (await resp.json())["room_id"]
    await client.post(f"{C}/join/{room}", json={}, headers=b)
    resp = await client.post(
        f"{C}/pushers/set",
        json={
            "kind": "http",
            "app_id": "org.example.app",
            "pushkey": "KEY1",
            "app_display_name": "App",
            "device_display_name": "Phone",
            "lang": "en",
            "data": {"url": gw.url, **data},
        },
        headers=a,
    )
    assert resp.status == 200, await resp.text()
    return (alice, a), (bob, b), room


async def say(client: TestClient, headers: dict[str, str], room: str, text: str) -> str:
    resp = await client.put(
        f"{C}/rooms/{room}/send/m.room.message/{uuid.uuid4().hex}",
        json={"msgtype": "m.text", "body": text},
        headers=headers,
    )
    return (await resp.json())["event_id"]


async def test_a_message_is_pushed_with_names_counts_and_tweaks(
    client: TestClient, gateway: Gateway
) -> None:
    (alice, a), (bob, b), room = await setup_pair(client, gateway)
    await say(client, a, room, "my own words")  # never pushed to myself
    event_id = await say(client, b, room, "hello alice")
    (body,) = await gateway.wait_for(1)
    n = body["notification"]
    assert n["event_id"] == event_id and n["room_id"] == room
    assert n["type"] == "m.room.message" and n["sender"] == bob["user_id"]
    assert n["sender_display_name"] == "Bob B" and n["room_name"] == "Tea"
    assert n["content"] == {"msgtype": "m.text", "body": "hello alice"}
    assert n["counts"] == {"unread": 1} and n["prio"] == "high"
    (device,) = n["devices"]
    assert device["app_id"] == "org.example.app" and device["pushkey"] == "KEY1"
    assert "url" not in device["data"] and device["pushkey_ts"] > 1_600_000_000
    # A two-person room: the one-to-one rule notifies with a sound.
    assert device["tweaks"].get("sound") == "default"
    await asyncio.sleep(0.3)
    assert len(gateway.received) == 1


async def test_event_id_only_pushers_get_no_content(client: TestClient, gateway: Gateway) -> None:
    (alice, a), (bob, b), room = await setup_pair(client, gateway, format="event_id_only")
    event_id = await say(client, b, room, "secret words")
    (body,) = await gateway.wait_for(1)
    n = body["notification"]
    assert n["event_id"] == event_id and n["room_id"] == room
    assert "content" not in n and "sender_display_name" not in n and "room_name" not in n
    assert n["devices"][0]["data"] == {"format": "event_id_only"}


async def test_a_failing_gateway_is_retried_in_order(client: TestClient, gateway: Gateway) -> None:
    (alice, a), (bob, b), room = await setup_pair(client, gateway)
    gateway.fail_next = 2
    first = await say(client, b, room, "one")
    second = await say(client, b, room, "two")
    received = await gateway.wait_for(2, timeout=15)
    assert [r["notification"]["event_id"] for r in received] == [first, second]


async def test_a_rejected_pushkey_removes_the_pusher(client: TestClient, gateway: Gateway) -> None:
    (alice, a), (bob, b), room = await setup_pair(client, gateway)
    gateway.reject.add("KEY1")
    await say(client, b, room, "anyone there?")
    await gateway.wait_for(1)
    store = client.server.app[PUSH_STORE]
    async with asyncio.timeout(5):
        while await store.get_pushers(alice["user_id"]):
            await asyncio.sleep(0.05)
    await say(client, b, room, "gone")
    await asyncio.sleep(0.5)
    assert len(gateway.received) == 1


async def test_no_delivery_to_a_blocked_address(
    aiohttp_client: Any, tmp_config: Any, gateway: Gateway
) -> None:
    """Without the loopback allowance a gateway on 127.0.0.1 is refused at /pushers/set
    (names are checked where they resolve, by the same resolver as federation's)."""
    client = await aiohttp_client(create_app(tmp_config()))
    alice = await register_user(client, "alice")
    resp = await client.post(
        f"{C}/pushers/set",
        json={
            "kind": "http",
            "app_id": "a",
            "pushkey": "k",
            "app_display_name": "A",
            "device_display_name": "D",
            "lang": "en",
            "data": {"url": gateway.url},
        },
        headers=auth(alice["access_token"]),
    )
    assert resp.status == 400


async def test_reading_sends_a_badge_update(client: TestClient, gateway: Gateway) -> None:
    (alice, a), (bob, b), room = await setup_pair(client, gateway)
    event_id = await say(client, b, room, "unread")
    await gateway.wait_for(1)
    resp = await client.post(f"{C}/rooms/{room}/receipt/m.read/{event_id}", json={}, headers=a)
    assert resp.status == 200
    received = await gateway.wait_for(2)
    badge = received[1]["notification"]
    assert badge["id"] == "" and badge["counts"] == {"unread": 0}
    assert badge["devices"][0]["pushkey"] == "KEY1"


async def test_muted_rooms_and_quiet_events_are_not_pushed_with_high_priority(
    client: TestClient, gateway: Gateway
) -> None:
    (alice, a), (bob, b), room = await setup_pair(client, gateway)
    resp = await client.put(f"{C}/pushrules/global/room/{room}", json={"actions": []}, headers=a)
    assert resp.status == 200, await resp.text()
    await say(client, b, room, "muted")
    await asyncio.sleep(0.5)
    assert gateway.received == []


async def test_a_deactivated_account_loses_its_pushers(
    client: TestClient, gateway: Gateway
) -> None:
    """As Synapse: deactivation deletes every pusher of the account."""
    (alice, a), (bob, b), room = await setup_pair(client, gateway)
    pushers = await (await client.get(f"{C}/pushers", headers=a)).json()
    assert [p["pushkey"] for p in pushers["pushers"]] == ["KEY1"]
    resp = await client.post(
        f"{C}/account/deactivate",
        json={
            "auth": {
                "type": "m.login.password",
                "user": alice["user_id"],
                "password": "correct horse",
            }
        },
        headers=a,
    )
    assert resp.status == 200, await resp.text()
    store = client.server.app[PUSH_STORE]
    assert await store.get_pushers(alice["user_id"]) == []


async def test_a_logged_out_device_loses_its_pushers(client: TestClient, gateway: Gateway) -> None:
    """As Synapse: a device's logout deletes the pushers it set up (its phone must not
    keep showing the user's messages), not those of the user's other devices."""
    (alice, a), (bob, b), room = await setup_pair(client, gateway)
    resp = await client.post(
        f"{C}/login",
        json={"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"},
              "password": "correct horse", "device_id": "PHONE"},
    )  # fmt: skip
    assert resp.status == 200, await resp.text()
    phone = auth((await resp.json())["access_token"])
    resp = await client.post(
        f"{C}/pushers/set",
        json={"kind": "http", "app_id": "org.example.app", "pushkey": "PHONEKEY",
              "app_display_name": "App", "device_display_name": "Phone", "lang": "en",
              "data": {"url": gateway.url}},
        headers=phone,
    )  # fmt: skip
    assert resp.status == 200, await resp.text()
    pushers = (await (await client.get(f"{C}/pushers", headers=a)).json())["pushers"]
    assert sorted(p["pushkey"] for p in pushers) == ["KEY1", "PHONEKEY"]

    assert (await client.post(f"{C}/logout", json={}, headers=phone)).status == 200
    pushers = (await (await client.get(f"{C}/pushers", headers=a)).json())["pushers"]
    assert [p["pushkey"] for p in pushers] == ["KEY1"]
    await say(client, b, room, "after the logout")
    received = await gateway.wait_for(1)
    await asyncio.sleep(0.3)  # nothing more comes
    assert [[d["pushkey"] for d in n["notification"]["devices"]] for n in received] == [["KEY1"]]


async def test_a_pusher_switched_off_gets_nothing_until_switched_on(
    client: TestClient, gateway: Gateway
) -> None:
    """MSC3881 (Element's session manager: "Receive push notifications on this
    session"): a pusher set with org.matrix.msc3881.enabled false is kept, listed with
    the session that set it up, and gets nothing; set on again, it gets what follows."""
    (alice, a), (bob, b), room = await setup_pair(client, gateway)
    versions = await (await client.get("/_matrix/client/versions")).json()
    assert versions["unstable_features"]["org.matrix.msc3881"] is True
    listed = (await (await client.get(f"{C}/pushers", headers=a)).json())["pushers"]
    body = {k: v for k, v in listed[0].items() if not k.startswith("org.matrix.msc3881")}
    assert listed[0]["org.matrix.msc3881.enabled"] is True
    assert listed[0]["org.matrix.msc3881.device_id"] == alice["device_id"]

    async def switch(on: Any) -> Any:
        return await client.post(
            f"{C}/pushers/set", json={**body, "org.matrix.msc3881.enabled": on}, headers=a
        )

    assert (await switch(False)).status == 200

    async def states() -> list[bool]:
        listed = (await (await client.get(f"{C}/pushers", headers=a)).json())["pushers"]
        return [p["org.matrix.msc3881.enabled"] for p in listed]

    # (A deployment: the reader answering hears of the main's write a moment later.)
    assert await eventually(client, states, lambda got: got == [False]) == [False]
    await say(client, b, room, "while it is off")
    await asyncio.sleep(0.5)
    assert gateway.received == []
    assert (await switch("no")).status == 400
    assert (await switch(True)).status == 200
    event_id = await say(client, b, room, "on again")
    (pushed,) = await gateway.wait_for(1)
    assert pushed["notification"]["event_id"] == event_id
