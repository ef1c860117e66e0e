"""The appservice test kit (issue 15): a fake appservice (an aiohttp app started by the
test) that records transactions and answers pings and queries, its registration, and
the `bridge` fixture (our server with that registration; tests/client/conftest.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from homeserver.app import create_app
from tests.client.helpers import auth

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
