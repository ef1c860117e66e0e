"""mautrix-python (a real appservice library, what the mautrix bridges are built on)
runs a bot appservice against our server (issue 15): it pings itself through us,
registers a namespace user, joins a room it was invited to, receives a human's
message in a transaction and replies as its user, and gets typing notifications
(it asked for ephemeral events)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import yaml
from aiohttp.test_utils import TestServer
from mautrix.appservice import AppService
from mautrix.types import Event, EventType, MessageEvent

from homeserver.app import create_app
from tests.client.helpers import auth, register_user
from tests.ports import free_port

C = "/_matrix/client/v3"
AS_TOKEN = "mautrix-as-token-0123456789"
HS_TOKEN = "mautrix-hs-token-0123456789"


async def test_a_mautrix_bot_answers_in_a_room(
    aiohttp_client: Any, tmp_config: Any, tmp_path: Path
) -> None:
    port = free_port()
    path = tmp_path / "mautrix.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "id": "echo",
                "url": f"http://127.0.0.1:{port}",
                "as_token": AS_TOKEN,
                "hs_token": HS_TOKEN,
                "sender_localpart": "echobot",
                "namespaces": {"users": [{"exclusive": True, "regex": "@echo_.*:test.local"}]},
                "rate_limited": False,
                "receive_ephemeral": True,
            }
        )
    )
    server = TestServer(
        create_app(tmp_config(app_service_config_files=[str(path)])), host="127.0.0.1"
    )
    client = await aiohttp_client(server)
    base = f"http://127.0.0.1:{client.server.port}"

    appservice = AppService(
        server=base,
        domain="test.local",
        as_token=AS_TOKEN,
        hs_token=HS_TOKEN,
        bot_localpart="echobot",
        id="echo",
        ephemeral_events=True,
    )
    seen: list[str] = []
    typing_seen: list[Any] = []
    echo_user = "@echo_parrot:test.local"

    @appservice.matrix_event_handler
    async def on_event(evt: Event) -> None:
        if evt.type == EventType.TYPING:
            typing_seen.append(evt)
        if isinstance(evt, MessageEvent) and evt.type == EventType.ROOM_MESSAGE:
            seen.append(evt.content.body)
            if evt.sender != echo_user and evt.content.body.startswith("!echo "):
                await appservice.intent.user(echo_user).send_text(evt.room_id, evt.content.body[6:])

    await appservice.start("127.0.0.1", port)
    try:
        assert isinstance(await appservice.ping_self("first"), int)
        parrot = appservice.intent.user(echo_user)
        await parrot.ensure_registered()

        human = await register_user(client, "human")
        h = auth(human["access_token"])
        resp = await client.post(f"{C}/createRoom", json={"invite": [echo_user]}, headers=h)
        room = (await resp.json())["room_id"]
        await parrot.join_room(room)
        resp = await client.put(
            f"{C}/rooms/{room}/send/m.room.message/t1",
            json={"msgtype": "m.text", "body": "!echo hello there"},
            headers=h,
        )
        assert resp.status == 200

        async with asyncio.timeout(15):
            while True:
                resp = await client.get(
                    f"{C}/rooms/{room}/messages", params={"dir": "b", "limit": "10"}, headers=h
                )
                chunk = (await resp.json())["chunk"]
                replies = [
                    e
                    for e in chunk
                    if e["sender"] == echo_user and e["content"].get("body") == "hello there"
                ]
                if replies:
                    break
                await asyncio.sleep(0.1)
        assert "!echo hello there" in seen

        # It asked for ephemeral events: the human typing reaches it.
        await client.put(
            f"{C}/rooms/{room}/typing/{human['user_id']}",
            json={"typing": True, "timeout": 20000},
            headers=h,
        )
        async with asyncio.timeout(10):
            while not typing_seen:
                await asyncio.sleep(0.05)
        assert human["user_id"] in typing_seen[-1].content.user_ids
    finally:
        await appservice.stop()
