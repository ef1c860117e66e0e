"""Application services (issue 15) through the real interfaces: a registration file,
an appservice (an aiohttp app started by the test) that registers and logs in its
users, acts as them with `?user_id=`, receives transactions of its rooms' events with
its hs_token, answers a ping and an alias query; and what others may not do in an
exclusive namespace."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from homeserver.app import create_app
from homeserver.appstate import TO_DEVICE
from homeserver.config import ConfigError
from tests.client.helpers import auth, register_user

C = "/_matrix/client/v3"
AS_TOKEN = "as-token-" + "x" * 20
HS_TOKEN = "hs-token-" + "y" * 20


class FakeAppService:
    def __init__(self) -> None:
        self.transactions: dict[str, list[dict[str, Any]]] = {}
        self.ephemerals: dict[str, list[dict[str, Any]]] = {}
        self.bodies: list[dict[str, Any]] = []
        self.pings: list[dict[str, Any]] = []
        self.fail_next = 0
        self.bad_auth = 0
        self.client: TestClient | None = None
        self.server = TestServer(self._app(), host="127.0.0.1")

    def _app(self) -> web.Application:
        app = web.Application()
        app.router.add_put("/_matrix/app/v1/transactions/{txn}", self.transaction)
        app.router.add_post("/_matrix/app/v1/ping", self.ping)
        app.router.add_get("/_matrix/app/v1/rooms/{alias}", self.alias_query)
        app.router.add_get("/_matrix/app/v1/users/{user_id}", self.user_query)
        return app

    def _authorised(self, request: web.Request) -> bool:
        ok = request.headers.get("Authorization") == f"Bearer {HS_TOKEN}"
        self.bad_auth += 0 if ok else 1
        return ok

    async def transaction(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return web.json_response({"errcode": "M_FORBIDDEN"}, status=403)
        if self.fail_next:
            self.fail_next -= 1
            return web.json_response({}, status=500)
        body = await request.json()
        self.bodies.append(body)
        self.transactions[request.match_info["txn"]] = body["events"]
        self.ephemerals[request.match_info["txn"]] = body.get("ephemeral", [])
        assert body.get("ephemeral") == body.get("de.sorunome.msc2409.ephemeral")
        return web.json_response({})

    async def ping(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return web.json_response({"errcode": "M_FORBIDDEN"}, status=403)
        self.pings.append(await request.json())
        return web.json_response({})

    async def alias_query(self, request: web.Request) -> web.Response:
        """Make #bridge_*:test.local on demand, as a bridge does."""
        alias = request.match_info["alias"]
        assert self.client is not None
        resp = await self.client.post(
            f"{C}/createRoom", json={"preset": "public_chat"}, headers=auth(AS_TOKEN)
        )
        room_id = (await resp.json())["room_id"]
        resp = await self.client.put(
            f"{C}/directory/room/{quote(alias, safe='')}",
            json={"room_id": room_id},
            headers=auth(AS_TOKEN),
        )
        assert resp.status == 200, await resp.text()
        return web.json_response({})

    async def user_query(self, request: web.Request) -> web.Response:
        """Make @bridge_*:test.local on demand, as a bridge does for puppets."""
        if not self._authorised(request):
            return web.json_response({"errcode": "M_FORBIDDEN"}, status=403)
        user_id = request.match_info["user_id"]
        assert self.client is not None
        resp = await self.client.post(
            f"{C}/register",
            json={"type": "m.login.application_service", "username": user_id[1:].split(":")[0]},
            headers=auth(AS_TOKEN),
        )
        assert resp.status == 200, await resp.text()
        return web.json_response({})

    def events(self) -> list[dict[str, Any]]:
        return [e for events in self.transactions.values() for e in events]

    def ephemeral(self) -> list[dict[str, Any]]:
        return [e for events in self.ephemerals.values() for e in events]

    async def wait_for(self, predicate: Any, timeout: float = 10) -> Any:
        async with asyncio.timeout(timeout):
            while True:
                found = [e for e in self.events() if predicate(e)]
                if found:
                    return found
                await asyncio.sleep(0.05)


def registration(url: str | None) -> dict[str, Any]:
    return {
        "id": "bridge",
        "url": url,
        "as_token": AS_TOKEN,
        "hs_token": HS_TOKEN,
        "sender_localpart": "bridgebot",
        "namespaces": {
            "users": [{"exclusive": True, "regex": "@bridge_.*:test.local"}],
            "aliases": [{"exclusive": True, "regex": "#bridge_.*:test.local"}],
            "rooms": [],
        },
        "rate_limited": False,
        "receive_ephemeral": True,
        "org.matrix.msc3202": True,
    }


@pytest.fixture
async def bridge(
    aiohttp_client: Any, tmp_config: Any, tmp_path: Path
) -> AsyncIterator[tuple[TestClient, FakeAppService]]:
    fake = FakeAppService()
    await fake.server.start_server()
    path = tmp_path / "bridge.yaml"
    path.write_text(yaml.safe_dump(registration(str(fake.server.make_url("")).rstrip("/"))))
    client = await aiohttp_client(create_app(tmp_config(app_service_config_files=[str(path)])))
    fake.client = client
    try:
        yield client, fake
    finally:
        await fake.server.close()


async def as_request(
    client: TestClient, method: str, path: str, body: Any = None, **params: str
) -> tuple[int, Any]:
    resp = await client.request(method, C + path, json=body, headers=auth(AS_TOKEN), params=params)
    return resp.status, await resp.json()


async def test_register_act_as_users_and_receive_transactions(bridge: Any) -> None:
    client, fake = bridge
    # Register a namespace user (no password, no UIA).
    status, body = await as_request(
        client,
        "POST",
        "/register",
        {"type": "m.login.application_service", "username": "bridge_alice"},
    )
    assert status == 200, body
    assert body["user_id"] == "@bridge_alice:test.local" and body["access_token"]
    # Outside the namespace: refused.
    status, body = await as_request(
        client, "POST", "/register", {"type": "m.login.application_service", "username": "carol"}
    )
    assert (status, body["errcode"]) == (400, "M_EXCLUSIVE")

    human = await register_user(client, "human")
    h = auth(human["access_token"])
    resp = await client.post(f"{C}/createRoom", json={"preset": "public_chat"}, headers=h)
    room = (await resp.json())["room_id"]
    # The appservice joins as its user and speaks as them.
    status, body = await as_request(
        client, "POST", f"/join/{room}", {}, user_id="@bridge_alice:test.local"
    )
    assert status == 200, body
    status, body = await as_request(
        client,
        "PUT",
        f"/rooms/{room}/send/m.room.message/{uuid.uuid4().hex}",
        {"msgtype": "m.text", "body": "from the bridge"},
        user_id="@bridge_alice:test.local",
    )
    assert status == 200, body
    resp = await client.get(f"{C}/rooms/{room}/event/{body['event_id']}", headers=h)
    assert (await resp.json())["sender"] == "@bridge_alice:test.local"

    # A human's message in a room its user is in reaches the appservice.
    resp = await client.put(
        f"{C}/rooms/{room}/send/m.room.message/{uuid.uuid4().hex}",
        json={"msgtype": "m.text", "body": "hello bridge"},
        headers=h,
    )
    sent = (await resp.json())["event_id"]
    (event,) = await fake.wait_for(lambda e: e.get("event_id") == sent)
    assert event["content"]["body"] == "hello bridge" and event["room_id"] == room
    assert fake.bad_auth == 0

    # Acting as a user outside the namespace, or one never registered: refused.
    status, body = await as_request(client, "GET", "/account/whoami", user_id=human["user_id"])
    assert (status, body["errcode"]) == (403, "M_EXCLUSIVE")
    status, body = await as_request(
        client, "GET", "/account/whoami", user_id="@bridge_nobody:test.local"
    )
    assert status == 403
    status, body = await as_request(client, "GET", "/account/whoami")
    assert body["user_id"] == "@bridgebot:test.local"
    status, body = await as_request(
        client, "GET", "/account/whoami", user_id="@bridge_alice:test.local", device_id="NOPE"
    )
    assert (status, body["errcode"]) == (400, "M_UNKNOWN_DEVICE")

    # Login as a namespace user with the appservice token.
    status, body = await as_request(
        client,
        "POST",
        "/login",
        {
            "type": "m.login.application_service",
            "identifier": {"type": "m.id.user", "user": "bridge_alice"},
        },
    )
    assert status == 200 and body["user_id"] == "@bridge_alice:test.local", body


async def test_exclusive_namespaces_keep_others_out(bridge: Any) -> None:
    client, fake = bridge
    resp = await client.get(f"{C}/register/available", params={"username": "bridge_bob"})
    assert (resp.status, (await resp.json())["errcode"]) == (400, "M_EXCLUSIVE")
    resp = await client.post(
        f"{C}/register", json={"username": "bridge_bob", "password": "pw-123456"}
    )
    assert (resp.status, (await resp.json())["errcode"]) == (400, "M_EXCLUSIVE")
    human = await register_user(client, "human")
    h = auth(human["access_token"])
    resp = await client.post(f"{C}/createRoom", json={}, headers=h)
    room = (await resp.json())["room_id"]
    resp = await client.put(
        f"{C}/directory/room/%23bridge_x:test.local", json={"room_id": room}, headers=h
    )
    assert (resp.status, (await resp.json())["errcode"]) == (400, "M_EXCLUSIVE")


async def test_ping_and_alias_query(bridge: Any) -> None:
    client, fake = bridge
    resp = await client.post(
        "/_matrix/client/v1/appservice/bridge/ping",
        json={"transaction_id": "t1"},
        headers=auth(AS_TOKEN),
    )
    body = await resp.json()
    assert resp.status == 200 and isinstance(body["duration_ms"], int), body
    assert fake.pings == [{"transaction_id": "t1"}]
    human = await register_user(client, "human")
    resp = await client.post(
        "/_matrix/client/v1/appservice/bridge/ping", json={}, headers=auth(human["access_token"])
    )
    assert resp.status == 403
    # An alias nobody made yet: the appservice is asked, makes it, and it resolves.
    resp = await client.get(
        f"{C}/directory/room/%23bridge_irc:test.local", headers=auth(human["access_token"])
    )
    body = await resp.json()
    assert resp.status == 200 and body["room_id"].startswith("!"), body
    resp = await client.get(
        f"{C}/directory/room/%23other:test.local", headers=auth(human["access_token"])
    )
    assert resp.status == 404


async def test_a_failing_appservice_gets_the_same_transaction_again(bridge: Any) -> None:
    client, fake = bridge
    fake.fail_next = 1
    human = await register_user(client, "human")
    h = auth(human["access_token"])
    await as_request(
        client, "POST", "/register", {"type": "m.login.application_service", "username": "bridge_x"}
    )
    resp = await client.post(
        f"{C}/createRoom", json={"invite": ["@bridge_x:test.local"]}, headers=h
    )
    room = (await resp.json())["room_id"]
    events = await fake.wait_for(lambda e: e["type"] == "m.room.member" and e["room_id"] == room)
    assert events


async def test_ping_failures(aiohttp_client: Any, tmp_config: Any, tmp_path: Path) -> None:
    path = tmp_path / "down.yaml"
    path.write_text(yaml.safe_dump(registration("http://127.0.0.1:9")))
    client = await aiohttp_client(create_app(tmp_config(app_service_config_files=[str(path)])))
    resp = await client.post(
        "/_matrix/client/v1/appservice/bridge/ping", json={}, headers=auth(AS_TOKEN)
    )
    assert (resp.status, (await resp.json())["errcode"]) == (502, "M_CONNECTION_FAILED")


def test_a_bad_registration_file_stops_the_server(tmp_config: Any, tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    bad = registration(None)
    del bad["hs_token"]
    bad["namespaces"]["users"][0]["regex"] = "@bridge_(.*"
    path.write_text(yaml.safe_dump(bad))
    with pytest.raises(ConfigError) as info:
        tmp_config(app_service_config_files=[str(path)])
    text = str(info.value)
    assert "hs_token" in text and "regex" in text and "bad.yaml" in text


async def test_typing_and_receipts_reach_an_appservice_that_asked(bridge: Any) -> None:
    client, fake = bridge
    await as_request(
        client, "POST", "/register", {"type": "m.login.application_service", "username": "bridge_t"}
    )
    human = await register_user(client, "human")
    h = auth(human["access_token"])
    resp = await client.post(f"{C}/createRoom", json={"preset": "public_chat"}, headers=h)
    room = (await resp.json())["room_id"]
    await as_request(client, "POST", f"/join/{room}", {}, user_id="@bridge_t:test.local")
    resp = await client.put(
        f"{C}/rooms/{room}/typing/{human['user_id']}",
        json={"typing": True, "timeout": 20000},
        headers=h,
    )
    assert resp.status == 200
    async with asyncio.timeout(10):
        while not any(
            e["type"] == "m.typing" and e.get("room_id") == room for e in fake.ephemeral()
        ):
            await asyncio.sleep(0.05)
    typing = [e for e in fake.ephemeral() if e["type"] == "m.typing"][-1]
    assert typing["content"]["user_ids"] == [human["user_id"]]
    resp = await client.put(
        f"{C}/rooms/{room}/send/m.room.message/{uuid.uuid4().hex}",
        json={"msgtype": "m.text", "body": "x"},
        headers=h,
    )
    event_id = (await resp.json())["event_id"]
    await client.post(f"{C}/rooms/{room}/receipt/m.read/{event_id}", json={}, headers=h)
    async with asyncio.timeout(10):
        while not any(
            e["type"] == "m.receipt" and event_id in e["content"] for e in fake.ephemeral()
        ):
            await asyncio.sleep(0.05)


async def test_rate_limits_skip_users_of_an_unlimited_appservice(
    aiohttp_client: Any, tmp_config: Any, tmp_path: Path
) -> None:
    path = tmp_path / "bridge.yaml"
    path.write_text(yaml.safe_dump(registration(None)))
    client = await aiohttp_client(
        create_app(
            tmp_config(
                app_service_config_files=[str(path)],
                rc_enabled=True,
                rc_message={"per_second": 0.001, "burst_count": 2},
            )
        )
    )
    await as_request(
        client,
        "POST",
        "/register",
        {"type": "m.login.application_service", "username": "bridge_fast"},
    )
    human = await register_user(client, "human")
    h = auth(human["access_token"])
    resp = await client.post(f"{C}/createRoom", json={"preset": "public_chat"}, headers=h)
    room = (await resp.json())["room_id"]
    await as_request(client, "POST", f"/join/{room}", {}, user_id="@bridge_fast:test.local")
    for i in range(6):
        status, body = await as_request(
            client,
            "PUT",
            f"/rooms/{room}/send/m.room.message/b{i}",
            {"msgtype": "m.text", "body": str(i)},
            user_id="@bridge_fast:test.local",
        )
        assert status == 200, body
    statuses = []
    for i in range(4):
        resp = await client.put(
            f"{C}/rooms/{room}/send/m.room.message/h{i}",
            json={"msgtype": "m.text", "body": "x"},
            headers=h,
        )
        statuses.append(resp.status)
    assert 429 in statuses


async def test_events_queued_for_a_down_appservice_survive_our_restart(
    aiohttp_client: Any, tmp_config: Any, tmp_path: Path
) -> None:
    fake = FakeAppService()
    await fake.server.start_server()
    try:
        path = tmp_path / "bridge.yaml"
        path.write_text(yaml.safe_dump(registration(str(fake.server.make_url("")).rstrip("/"))))
        config = tmp_config(app_service_config_files=[str(path)])
        first = await aiohttp_client(create_app(config))
        await as_request(
            first,
            "POST",
            "/register",
            {"type": "m.login.application_service", "username": "bridge_r"},
        )
        human = await register_user(first, "human")
        h = auth(human["access_token"])
        resp = await first.post(f"{C}/createRoom", json={"preset": "public_chat"}, headers=h)
        room = (await resp.json())["room_id"]
        await as_request(first, "POST", f"/join/{room}", {}, user_id="@bridge_r:test.local")
        await fake.wait_for(
            lambda e: e["type"] == "m.room.member" and e["state_key"] == "@bridge_r:test.local"
        )
        fake.fail_next = 10**6  # the appservice is down from now on
        sent = []
        for i in range(3):
            resp = await first.put(
                f"{C}/rooms/{room}/send/m.room.message/r{i}",
                json={"msgtype": "m.text", "body": f"while down {i}"},
                headers=h,
            )
            sent.append((await resp.json())["event_id"])
        await asyncio.sleep(0.3)
        await first.close()  # we stop with those events undelivered

        fake.fail_next = 0  # the appservice is back
        second = await aiohttp_client(create_app(config))
        got = await fake.wait_for(lambda e: e.get("event_id") == sent[-1], timeout=15)
        assert got
        delivered = [e.get("event_id") for e in fake.events()]
        assert all(eid in delivered for eid in sent)
        await second.close()
    finally:
        await fake.server.close()


async def test_an_appservice_manages_its_users_devices(bridge: Any) -> None:
    """MSC4190 (spec v1.17): devices created and deleted without logins or UIA."""
    client, fake = bridge
    status, body = await as_request(
        client,
        "POST",
        "/register",
        {"type": "m.login.application_service", "username": "bridge_d", "inhibit_login": True},
    )
    assert status == 200 and "access_token" not in body
    user = "@bridge_d:test.local"
    status, body = await as_request(
        client, "PUT", "/devices/PUPPET1", {"display_name": "Puppet"}, user_id=user
    )
    assert status == 201, body
    status, body = await as_request(
        client, "PUT", "/devices/PUPPET1", {"display_name": "Renamed"}, user_id=user
    )
    assert status == 200, body
    status, body = await as_request(
        client, "GET", "/account/whoami", user_id=user, device_id="PUPPET1"
    )
    assert status == 200 and body["device_id"] == "PUPPET1", body
    status, body = await as_request(client, "DELETE", "/devices/PUPPET1", {}, user_id=user)
    assert status == 200, body
    status, body = await as_request(
        client, "GET", "/account/whoami", user_id=user, device_id="PUPPET1"
    )
    assert (status, body["errcode"]) == (400, "M_UNKNOWN_DEVICE")
    human = await register_user(client, "human")
    resp = await client.put(f"{C}/devices/NEWONE", json={}, headers=auth(human["access_token"]))
    assert resp.status == 404


async def test_third_party_lookups_reach_the_bridge_of_the_protocol(
    aiohttp_client: Any, tmp_config: Any, tmp_path: Path
) -> None:
    asked: list[tuple[str, dict[str, str]]] = []

    async def protocol(request: web.Request) -> web.Response:
        assert request.headers["Authorization"] == f"Bearer {HS_TOKEN}"
        return web.json_response({"user_fields": ["network", "nickname"], "instances": []})

    async def lookup(request: web.Request) -> web.Response:
        asked.append((request.path, dict(request.query)))
        if request.path.startswith("/_matrix/app/v1/thirdparty/user"):
            return web.json_response(
                [{"userid": "@bridge_nick:test.local", "protocol": "irc", "fields": {}}]
            )
        return web.json_response(
            [{"alias": "#bridge_chan:test.local", "protocol": "irc", "fields": {}}]
        )

    app = web.Application()
    app.router.add_get("/_matrix/app/v1/thirdparty/protocol/irc", protocol)
    app.router.add_get("/_matrix/app/v1/thirdparty/{kind}/irc", lookup)
    app.router.add_get("/_matrix/app/v1/thirdparty/{kind}", lookup)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        reg = registration(str(server.make_url("")).rstrip("/"))
        reg["protocols"] = ["irc"]
        path = tmp_path / "irc.yaml"
        path.write_text(yaml.safe_dump(reg))
        client = await aiohttp_client(create_app(tmp_config(app_service_config_files=[str(path)])))
        human = await register_user(client, "human")
        h = auth(human["access_token"])
        resp = await client.get(f"{C}/thirdparty/protocols", headers=h)
        assert await resp.json() == {
            "irc": {"user_fields": ["network", "nickname"], "instances": []}
        }
        resp = await client.get(f"{C}/thirdparty/protocol/irc", headers=h)
        assert resp.status == 200
        resp = await client.get(f"{C}/thirdparty/protocol/xmpp", headers=h)
        assert resp.status == 404
        resp = await client.get(f"{C}/thirdparty/user/irc", params={"nickname": "bob"}, headers=h)
        assert [u["userid"] for u in await resp.json()] == ["@bridge_nick:test.local"]
        resp = await client.get(
            f"{C}/thirdparty/location", params={"alias": "#bridge_chan:test.local"}, headers=h
        )
        assert [loc["alias"] for loc in await resp.json()] == ["#bridge_chan:test.local"]
        assert ("/_matrix/app/v1/thirdparty/user/irc", {"nickname": "bob"}) in asked
        resp = await client.get(f"{C}/thirdparty/user/xmpp", headers=h)
        assert await resp.json() == []
    finally:
        await server.close()


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
    store = client.server.app[TO_DEVICE]
    async with asyncio.timeout(5):
        while await store.queued(user, "BRIDGEDEV", 2**62, 10):
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
    assert room not in await listed(third_party_instance_id="bridge|irc")
    status, body = await as_request(
        client,
        "PUT",
        "/directory/list/appservice/irc/!nowhere:test.local",
        {"visibility": "public"},
    )
    assert status == 404
