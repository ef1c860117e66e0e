"""Issue 15 across two of our servers: a message sent on server B reaches, on server A,
the appservice whose user is in the room (in a transaction) and the push gateway of
A's user (a notification), as a bridge and a phone see a federated conversation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.client.test_push_delivery import Gateway
from tests.federation.multiserver import eventually

AS_TOKEN = "as-token-" + "m" * 20
HS_TOKEN = "hs-token-" + "n" * 20


async def test_a_remote_message_reaches_the_local_bridge_and_phone(
    loopback: Any, tmp_path: Path
) -> None:
    received: list[dict[str, Any]] = []

    async def transaction(request: web.Request) -> web.Response:
        assert request.headers.get("Authorization") == f"Bearer {HS_TOKEN}"
        received.extend((await request.json())["events"])
        return web.json_response({})

    bridge_app = web.Application()
    bridge_app.router.add_put("/_matrix/app/v1/transactions/{txn}", transaction)
    bridge = TestServer(bridge_app, host="127.0.0.1")
    await bridge.start_server()
    gateway = Gateway()
    gateway_app = web.Application()
    gateway_app.router.add_post("/_matrix/push/v1/notify", gateway.handle)
    gateway.server = TestServer(gateway_app, host="127.0.0.1")
    await gateway.server.start_server()
    try:
        registration = tmp_path / "bridge.yaml"
        registration.write_text(
            yaml.safe_dump(
                {
                    "id": "bridge",
                    "url": str(bridge.make_url("")).rstrip("/"),
                    "as_token": AS_TOKEN,
                    "hs_token": HS_TOKEN,
                    "sender_localpart": "bridgebot",
                    "namespaces": {
                        "users": [{"exclusive": True, "regex": r"@bridge_.*:127\.0\.0\.1:\d+"}]
                    },
                }
            )
        )
        a = await loopback("a", app_service_config_files=[str(registration)])
        b = await loopback("b")
        alice = await a.register("alice")
        bob = await b.register("bob")
        puppet = f"@bridge_p:{a.name}"
        a.tokens[puppet] = AS_TOKEN
        room = await a.create_room(alice, name="Bridged")
        status, body = await a.call(
            "POST",
            "/register",
            puppet,
            {"type": "m.login.application_service", "username": "bridge_p"},
        )
        assert status == 200, body
        await a.ok("POST", f"/join/{room}", puppet, {}, user_id=puppet)
        await a.ok(
            "POST",
            "/pushers/set",
            alice,
            {
                "kind": "http",
                "app_id": "org.example.app",
                "pushkey": "ALICEPHONE",
                "app_display_name": "App",
                "device_display_name": "Phone",
                "lang": "en",
                "data": {"url": gateway.url},
            },
        )
        assert await b.join(bob, room, [a.name]) == room
        event_id = await b.send_text(bob, room, f"hello {alice}, from afar")

        async def bridge_has_it() -> bool:
            return any(e.get("event_id") == event_id for e in received)

        assert await eventually(bridge_has_it)
        note = (await gateway.wait_for(1))[-1]["notification"]
        assert note["event_id"] == event_id and note["sender"] == bob
        assert note["devices"][0]["pushkey"] == "ALICEPHONE"
    finally:
        await bridge.close()
        await gateway.server.close()
