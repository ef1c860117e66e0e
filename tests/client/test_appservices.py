"""Application services (issue 15) through the real interfaces: a registration file,
an appservice (an aiohttp app started by the test) that registers and logs in its
users, acts as them with `?user_id=`, receives transactions of its rooms' events with
its hs_token, answers a ping and an alias query; and what others may not do in an
exclusive namespace."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestServer

from homeserver.app import create_app
from homeserver.config import ConfigError
from tests.client.appservice_kit import (
    AS_TOKEN,
    HS_TOKEN,
    C,
    FakeAppService,
    as_request,
    registration,
)
from tests.client.helpers import auth, register_user


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
