"""Outbound federation never reaches blocked IP ranges with the default config: a server
name resolving to 127.0.0.1 is refused before any connection is made (requests and key
fetches alike), and a redirect to a blocked IP literal is refused too."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from federation.appkeys import FED_CLIENT, KEYRING
from federation.client import FederationClient
from federation.keyring import KeyNotFound
from homeserver.app import create_app
from homeserver.ipfilter import IPBlockedError, IPFilter


class Listener:
    """A TCP listener on 127.0.0.1 that only counts connection attempts."""

    def __init__(self) -> None:
        self.connections = 0
        self.server: asyncio.Server | None = None

    async def _on_connect(self, _r: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        writer.close()

    async def start(self, host: str = "127.0.0.1") -> int:
        self.server = await asyncio.start_server(self._on_connect, host, 0)
        return self.server.sockets[0].getsockname()[1]


@pytest.fixture
async def listener() -> AsyncIterator[Listener]:
    lst = Listener()
    yield lst
    if lst.server is not None:
        lst.server.close()
        await lst.server.wait_closed()


async def test_default_config_refuses_loopback_names_without_connecting(
    aiohttp_client, tmp_config, listener
) -> None:
    port = await listener.start()
    client = await aiohttp_client(create_app(tmp_config()))  # default ip_range_blacklist
    fed = client.app[FED_CLIENT]
    for name in (f"localhost:{port}", f"127.0.0.1:{port}"):
        with pytest.raises(Exception, match="blocked"):
            await fed.get_json(name, "/_matrix/federation/v1/version")
        with pytest.raises(KeyNotFound):
            await client.app[KEYRING].get_verify_key(name, "ed25519:x", int(time.time() * 1000))
    # The notary endpoint cannot be used to make us probe loopback either.
    resp = await client.post("/_matrix/key/v2/query", json={"server_keys": {f"[::1]:{port}": {}}})
    assert await resp.json() == {"server_keys": []}
    assert listener.connections == 0


async def test_redirect_to_a_blocked_ip_literal_is_refused(aiohttp_server, listener) -> None:
    """aiohttp does not resolve IP literals, so the resolver filter alone would miss a
    redirect to one; the request trace guard refuses it before connecting."""
    target = await listener.start("127.0.0.2")

    async def redirect(_request: web.Request) -> web.Response:
        raise web.HTTPFound(f"http://127.0.0.2:{target}/.well-known/matrix/server")

    app = web.Application()
    app.router.add_get("/.well-known/matrix/server", redirect)
    first = await aiohttp_server(app, host="127.0.0.1")
    from signedjson.key import generate_signing_key

    client = FederationClient(
        "us.test", generate_signing_key("k"), ip_filter=IPFilter(blacklist=["127.0.0.2/32"])
    )
    try:
        session = client._get_session()
        with pytest.raises(IPBlockedError, match="127.0.0.2"):
            await session.get(f"http://127.0.0.1:{first.port}/.well-known/matrix/server")
    finally:
        await client.close()
    assert listener.connections == 0
