"""A loopback federation of our own servers for tests.

Each `LoopbackServer` is the real `create_app` on its own 127.0.0.1 port, named
"127.0.0.1:PORT", federating over plain HTTP (federation_client_plain_http_for_tests)
with loopback allowed (ip_range_whitelist). Users are driven through the client API.

With HS_TEST_DEPLOYMENT=workers (tests/deployment_mode.py) each server is instead a
whole worker deployment (tests/deployment.py FULL_LAYOUT) whose nginx listens on that
port: federation arrives at its inbound worker and leaves from its federation sender.
`server.app` is then tests/deployment_view.py's view of the deployment (its database;
local sends through the client API); a test that reads anything else of a server's
memory is skipped there.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from homeserver.__main__ import registration_mac
from homeserver.app import create_app
from tests import deployment_mode
from tests.conftest import TEST_SHARED_SECRET, config_settings, make_config
from tests.ports import free_port

# A peer that was down is retried within a second (production: 10 s, up to an hour).
FAST_BACKOFF = {
    "destination_min_retry_interval": "200ms",
    "destination_max_retry_interval": "1s",
    "client_timeout": "10s",
}
# Ten minutes between retries: a delivery within a test comes from an admin's
# reset_connection (or the peer contacting us).
SLOW_BACKOFF = {
    "destination_min_retry_interval": "10m",
    "destination_max_retry_interval": "10m",
    "client_timeout": "3s",
}


class LoopbackServer:
    def __init__(
        self,
        base: Path,
        label: str,
        *,
        deployment: bool | None = None,
        deployment_settings: dict[str, Any] | None = None,
        media_workers: int = 0,
        **overrides: Any,
    ) -> None:
        """`overrides`: further top-level config keys (e.g. trusted_key_servers);
        `deployment`: a worker deployment (default: whether HS_TEST_DEPLOYMENT is set);
        `deployment_settings`: keys for the deployment's config only (worker settings,
        which a single process refuses); `media_workers`: the deployment's, besides
        FULL_LAYOUT."""
        self.as_deployment = bool(deployment_mode.MODE) if deployment is None else deployment
        self.port = free_port()
        self.name = f"127.0.0.1:{self.port}"
        self.dir = base / label
        self.dir.mkdir(parents=True, exist_ok=True)
        self.settings = config_settings(
            server_name=self.name,
            signing_key_path=f"{label}.signing.key",
            federation_client_plain_http_for_tests=True,
            ip_range_whitelist=["127.0.0.0/8"],
            password_hashing={"opslimit": 1, "memlimit": 8192},
            log_level="INFO",
            **{"federation": FAST_BACKOFF, **overrides},
        )
        self.config = make_config(self.dir, **self.settings)
        self.runner: web.AppRunner | None = None
        self.deployment: Any = None  # deployment mode: tests.deployment.Deployment
        self.view: Any = None  # deployment mode: its tests.deployment_view.DeploymentView
        self.http = aiohttp.ClientSession()
        self.tokens: dict[str, str] = {}
        self._deployment_settings = deployment_settings or {}
        self._media_workers = media_workers

    @property
    def app(self) -> Any:
        """The application; a deployment's view of it (tests/deployment_view.py)."""
        if self.as_deployment:
            if self.view is None:
                pytest.skip("reads a server's memory while its deployment is stopped")
            return self.view
        assert self.runner is not None
        return self.runner.app

    async def start(self) -> None:
        if self.as_deployment:
            await asyncio.to_thread(self._deployment().start)
            from tests.deployment_view import DeploymentView

            self.view = DeploymentView(self.deployment, self.config, self.tokens)
            await self.view.open()
            return
        self.runner = web.AppRunner(create_app(self.config))
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    def _deployment(self) -> Any:
        """This server's deployment (made on first start; later starts restart it on
        the same data)."""
        if self.deployment is None:
            from tests.deployment import FULL_LAYOUT, Deployment, missing_parts, require_parts

            if deployment_mode.MODE:
                why = missing_parts()
                if why is not None:
                    pytest.skip(f"HS_TEST_DEPLOYMENT needs a worker deployment: {why}")
            else:
                require_parts()
            self.deployment = Deployment(
                self.dir / "deployment",
                **FULL_LAYOUT,
                media_workers=self._media_workers,
                server_name=self.name,
                public_port=self.port,
                overrides={
                    **deployment_mode.settings_for_deployment(self.settings),
                    **self._deployment_settings,
                },
            )
        return self.deployment

    async def _close_view(self) -> None:
        if self.view is not None:
            view, self.view = self.view, None
            await view.close()

    async def stop(self) -> None:
        await self._close_view()
        if self.deployment is not None:
            await asyncio.to_thread(self.deployment.stop, keep_data=True)
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    async def close(self) -> None:
        await self._close_view()  # first: its connections are to the schema dropped next
        if self.deployment is not None:
            deployment, self.deployment = self.deployment, None
            await asyncio.to_thread(deployment.stop)
        await self.stop()
        await self.http.close()

    def url(self, path: str) -> str:
        return f"http://{self.name}/_matrix/client/v3{path}"

    async def call(
        self, method: str, path: str, user: str | None = None, body: Any = None, **params: Any
    ) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {self.tokens[user]}"} if user else {}
        async with self.http.request(
            method, self.url(path), json=body, headers=headers, params=params or None
        ) as resp:
            return resp.status, await resp.json(content_type=None)

    async def ok(
        self, method: str, path: str, user: str | None = None, body: Any = None, **params: Any
    ) -> Any:
        status, data = await self.call(method, path, user, body, **params)
        assert status == 200, f"{method} {path} on {self.name}: {status} {data}"
        return data

    async def register(self, localpart: str) -> str:
        body: dict[str, Any] = {"username": localpart, "password": "pw-" + localpart}
        status, first = await self.call("POST", "/register", body=body)
        assert status == 401, first
        body["auth"] = {"type": "m.login.dummy", "session": first["session"]}
        data = await self.ok("POST", "/register", body=body)
        self.tokens[data["user_id"]] = data["access_token"]
        return data["user_id"]

    async def register_admin(self, localpart: str) -> str:
        """A server admin, made the way an operator makes one: the shared-secret
        register API (`homeserver register-user --admin`)."""
        url = f"http://{self.name}/_synapse/admin/v1/register"
        async with self.http.get(url) as resp:
            nonce = (await resp.json())["nonce"]
        password = "pw-" + localpart
        mac = registration_mac(TEST_SHARED_SECRET, nonce, localpart, password, True)
        body = {"nonce": nonce, "username": localpart, "password": password, "admin": True}
        async with self.http.post(url, json={**body, "mac": mac}) as resp:
            data = await resp.json()
            assert resp.status == 200, data
        self.tokens[data["user_id"]] = data["access_token"]
        return data["user_id"]

    async def admin(self, user: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """A call to the admin API (`path` after /_synapse/admin)."""
        url = f"http://{self.name}/_synapse/admin{path}"
        headers = {"Authorization": f"Bearer {self.tokens[user]}"}
        async with self.http.request(method, url, headers=headers, json=body) as resp:
            return resp.status, await resp.json(content_type=None)

    async def create_room(self, user: str, **body: Any) -> str:
        body.setdefault("preset", "public_chat")
        return (await self.ok("POST", "/createRoom", user, body))["room_id"]

    async def join(self, user: str, room_id: str, via: list[str]) -> str:
        path = f"/join/{room_id}"
        status, data = await self.call("POST", path, user, {}, server_name=via)
        assert status == 200, f"join on {self.name}: {status} {data}"
        return data["room_id"]

    async def send_text(self, user: str, room_id: str, text: str) -> str:
        txn = uuid.uuid4().hex
        data = await self.ok(
            "PUT",
            f"/rooms/{room_id}/send/m.room.message/{txn}",
            user,
            {"msgtype": "m.text", "body": text},
        )
        return data["event_id"]

    async def put_state(self, user: str, room_id: str, event_type: str, content: dict) -> str:
        return (await self.ok("PUT", f"/rooms/{room_id}/state/{event_type}", user, content))[
            "event_id"
        ]

    async def state(self, user: str, room_id: str, event_type: str) -> tuple[int, Any]:
        return await self.call("GET", f"/rooms/{room_id}/state/{event_type}", user)

    async def sync_texts(self, user: str, room_id: str) -> list[str]:
        """Bodies of the m.room.message events in the room's timeline from a full sync."""
        data = await self.ok("GET", "/sync", user, timeout="0")
        room = data.get("rooms", {}).get("join", {}).get(room_id, {})
        return [
            e["content"].get("body")
            for e in room.get("timeline", {}).get("events", [])
            if e["type"] == "m.room.message"
        ]

    async def sync(self, user: str) -> dict[str, Any]:
        return await self.ok("GET", "/sync", user, timeout="0")


async def eventually(check, timeout: float = 15.0, interval: float = 0.1) -> Any:
    """Poll an async `check()` until it returns a truthy value; return it."""
    last: Any = None
    async with asyncio.timeout(timeout):
        while True:
            last = await check()
            if last:
                return last
            await asyncio.sleep(interval)


@asynccontextmanager
async def started(
    a: LoopbackServer, b: LoopbackServer
) -> AsyncIterator[tuple[LoopbackServer, LoopbackServer]]:
    """Two servers started in order, both closed on the way out (after a failed start
    too): a test fixture's `async with started(...) as pair: yield pair`."""
    try:
        await a.start()
        await b.start()
        yield a, b
    finally:
        await a.close()
        await b.close()


async def post_to(
    http: aiohttp.ClientSession, base: str, token: str, path: str, body: Any
) -> tuple[int, Any]:
    """POST a client API request (`path` after /_matrix/client/v3) to one process of a
    deployment (`base`: its URL), as the user whose access token is `token`."""
    url = f"{base}/_matrix/client/v3{path}"
    headers = {"Authorization": f"Bearer {token}"}
    async with http.post(url, json=body, headers=headers) as resp:
        return resp.status, await resp.json(content_type=None)


# The client readers of tests/deployment.py's deployments.
READERS = ["client_reader1", "client_reader2"]


@asynccontextmanager
async def writers_and_peer(
    tmp_path: Path, stream_writers: dict[str, list[str]], **peer_settings: Any
) -> AsyncIterator[tuple[LoopbackServer, LoopbackServer]]:
    """Server A: the README's seven-process deployment with these `stream_writers`
    (streams its client readers write); server B: one process federating with it
    (`peer_settings`: more of B's config)."""
    a = LoopbackServer(
        tmp_path, "a", deployment=True, deployment_settings={"stream_writers": stream_writers}
    )
    b = LoopbackServer(tmp_path, "b", deployment=False, **peer_settings)
    async with started(a, b) as pair:
        yield pair


async def room_of_three(a: LoopbackServer, b: LoopbackServer) -> tuple[str, str, str, str]:
    """alice and carol on A and bob on B, joined to a room of alice's:
    (alice, carol, bob, room ID)."""
    alice, carol, bob = (
        await a.register("alice"),
        await a.register("carol"),
        await b.register("bob"),
    )
    room_id = await a.create_room(alice)
    await a.join(carol, room_id, [a.name])
    await b.join(bob, room_id, [a.name])
    return alice, carol, bob, room_id
