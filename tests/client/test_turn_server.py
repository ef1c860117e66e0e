"""GET /voip/turnServer (homeserver/client/voip.py) against a real TURN server: coturn
with `use-auth-secret` on loopback accepts the credentials we hand out (its own client,
turnutils_uclient, allocates a relay with them) and refuses them altered. Skips without
coturn, unless TURN_REQUIRED=1 (set by .ci/run once coturn is installed)."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from homeserver.app import create_app
from homeserver.client.voip import turn_credentials
from homeserver.config import Config
from homeserver.config.accounts_model import TurnConfig
from tests.client.helpers import auth, register_user
from tests.ports import free_port

V3 = "/_matrix/client/v3"
SECRET = "coturn-static-auth-secret"


@pytest.fixture
async def coturn(tmp_path: Any) -> AsyncIterator[int]:
    if not (shutil.which("turnserver") and shutil.which("turnutils_uclient")):
        if os.environ.get("TURN_REQUIRED") == "1":
            pytest.fail("TURN_REQUIRED=1 but coturn is not installed")
        pytest.skip("coturn (turnserver, turnutils_uclient) is not installed")
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        "turnserver",
        "--use-auth-secret",
        f"--static-auth-secret={SECRET}",
        "--realm=test.local",
        "--listening-ip=127.0.0.1",
        "--relay-ip=127.0.0.1",
        f"--listening-port={port}",
        "--no-tls",
        "--no-dtls",
        "--no-cli",
        "--allow-loopback-peers",
        "--log-file=stdout",
        "--simple-log",
        f"--pidfile={tmp_path}/turnserver.pid",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    await asyncio.sleep(0.5)
    try:
        yield port
    finally:
        proc.terminate()
        await proc.wait()


async def allocate(port: int, username: str, password: str) -> int:
    """turnutils_uclient's exit status: 0 when coturn let it allocate and relay."""
    proc = await asyncio.create_subprocess_exec(
        "turnutils_uclient",
        "-u",
        username,
        "-w",
        password,
        "-p",
        str(port),
        "-n",
        "1",
        "-m",
        "1",
        "-y",
        "-c",
        "127.0.0.1",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    async with asyncio.timeout(30):
        return await proc.wait()


async def test_coturn_accepts_the_credentials_we_hand_out(
    aiohttp_client: Any, tmp_config: Callable[..., Config], coturn: int
) -> None:
    settings = {
        "turn_uris": [f"turn:127.0.0.1:{coturn}?transport=udp"],
        "turn_shared_secret": SECRET,
        "turn_user_lifetime": "1h",
    }
    client = await aiohttp_client(create_app(tmp_config(**settings)))
    alice = await register_user(client, "alice")
    resp = await client.get(f"{V3}/voip/turnServer", headers=auth(alice["access_token"]))
    assert resp.status == 200
    creds = await resp.json()
    assert creds["uris"] == settings["turn_uris"] and creds["ttl"] == 3600
    expiry, _, user_id = creds["username"].partition(":")
    assert user_id == alice["user_id"] and int(expiry) > 0
    assert await allocate(coturn, creds["username"], creds["password"]) == 0
    # Another user's name with alice's password, or a password guessed: refused.
    other = creds["username"].replace(alice["user_id"], "@mallory:test.local")
    assert await allocate(coturn, other, creds["password"]) != 0


def test_credentials_without_a_secret_or_without_turn() -> None:
    fixed = TurnConfig(uris=("turn:t.example",), username="u", password="p")
    assert turn_credentials(fixed, "@a:b", 0) == {
        "username": "u",
        "password": "p",
        "uris": ["turn:t.example"],
        "ttl": 3600,
    }
    assert turn_credentials(TurnConfig(), "@a:b", 0) == {}
    # The TURN REST API scheme: <expiry seconds>:<user>, HMAC-SHA1 in padded base64.
    signed = turn_credentials(
        TurnConfig(uris=("turn:t",), shared_secret="s", user_lifetime_ms=60_000), "@a:b", 1_000
    )
    assert signed["username"] == "61:@a:b"
    assert signed["password"] == "vIwWBBO6vhsXTTxz2mjzhmqvesY="


async def test_guests_may_be_kept_off_the_turn_server(
    aiohttp_client: Any, tmp_config: Callable[..., Config]
) -> None:
    settings = {
        "turn_uris": ["turn:t.example"],
        "turn_shared_secret": "s",
        "turn_allow_guests": False,
        "allow_guest_access": True,
    }
    client = await aiohttp_client(create_app(tmp_config(**settings)))
    resp = await client.post(f"{V3}/register?kind=guest", json={})
    guest = await resp.json()
    resp = await client.get(f"{V3}/voip/turnServer", headers=auth(guest["access_token"]))
    assert (resp.status, (await resp.json())["errcode"]) == (403, "M_GUEST_ACCESS_FORBIDDEN")
