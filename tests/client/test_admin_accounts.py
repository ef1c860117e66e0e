"""Shared-secret registration (Synapse's scheme), whois, and the register-user CLI."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from aiohttp.test_utils import TestClient

from homeserver.__main__ import registration_mac
from homeserver.accounts.admin_register import expected_mac
from homeserver.app import create_app
from homeserver.appstate import STORES
from tests.client.helpers import auth, deployed, eventually, register_user
from tests.conftest import TEST_SHARED_SECRET

ADMIN_REGISTER = "/_synapse/admin/v1/register"


async def _nonce(client: TestClient) -> str:
    response = await client.get(ADMIN_REGISTER)
    assert response.status == 200
    nonce = (await response.json())["nonce"]
    assert isinstance(nonce, str) and len(nonce) >= 32
    return nonce


def _body(nonce: str, user: str, password: str, admin: bool = False, **extra: Any) -> dict:
    mac = expected_mac(TEST_SHARED_SECRET, nonce, user, password, admin, extra.get("user_type"))
    return {
        "nonce": nonce,
        "username": user,
        "password": password,
        "admin": admin,
        "mac": mac,
        **extra,
    }


def test_mac_matches_cli_and_known_vector() -> None:
    # Computed independently: hmac.new(b"secret", b"abc\0bob\0pw\0notadmin", sha1).
    assert expected_mac("secret", "abc", "bob", "pw", False, None) == registration_mac(
        "secret", "abc", "bob", "pw", False
    )
    assert expected_mac("secret", "abc", "bob", "pw", True, "bot") == registration_mac(
        "secret", "abc", "bob", "pw", True, "bot"
    )
    import hashlib
    import hmac

    want = hmac.new(b"secret", b"abc\x00bob\x00pw\x00admin\x00bot", hashlib.sha1).hexdigest()
    assert expected_mac("secret", "abc", "bob", "pw", True, "bot") == want


async def test_shared_secret_register(app_client: TestClient) -> None:
    nonce = await _nonce(app_client)
    response = await app_client.post(
        ADMIN_REGISTER, json=_body(nonce, "root", "pw", admin=True, displayname="Root")
    )
    assert response.status == 200
    body = await response.json()
    assert set(body) == {"user_id", "home_server", "access_token", "device_id"}
    assert body["user_id"] == "@root:test.local"
    stores = app_client.server.app[STORES]
    assert (await stores.accounts.get_user("@root:test.local")).is_admin
    assert (await stores.accounts.get_profile("@root:test.local")).displayname == "Root"
    # Single-use nonce.
    again = await app_client.post(ADMIN_REGISTER, json=_body(nonce, "root2", "pw"))
    assert again.status == 400
    assert await again.json() == {"errcode": "M_UNKNOWN", "error": "unrecognised nonce"}


async def test_shared_secret_bad_mac_and_input(app_client: TestClient) -> None:
    nonce = await _nonce(app_client)
    body = _body(nonce, "x", "pw")
    body["admin"] = True  # MAC was for notadmin
    response = await app_client.post(ADMIN_REGISTER, json=body)
    assert response.status == 403
    assert await response.json() == {"errcode": "M_FORBIDDEN", "error": "HMAC incorrect"}
    assert await app_client.server.app[STORES].accounts.get_user("@x:test.local") is None
    for bad in (
        {"nonce": 1, "username": "a", "password": "b", "mac": "c"},
        {"nonce": "n", "username": True, "password": "b", "mac": "c"},
        {"nonce": "n", "username": "a", "password": ["b"], "mac": "c"},
        {"nonce": "n", "username": "a", "password": "b", "mac": "c", "admin": "yes"},
        {"nonce": "n", "username": "a", "password": "b"},
    ):
        response = await app_client.post(ADMIN_REGISTER, json=bad)
        assert response.status == 400, bad
    # Username rules still apply to admin registration.
    nonce = await _nonce(app_client)
    invalid = await app_client.post(ADMIN_REGISTER, json=_body(nonce, "bad name", "pw"))
    assert (await invalid.json())["errcode"] == "M_INVALID_USERNAME"


async def test_shared_secret_disabled(aiohttp_client: Any, tmp_config: Any) -> None:
    client = await aiohttp_client(create_app(tmp_config(registration_shared_secret=None)))
    response = await client.get(ADMIN_REGISTER)
    assert response.status == 400
    assert (await response.json())["error"] == "Shared secret registration is not enabled"


async def test_whois(app_client: TestClient) -> None:
    nonce = await _nonce(app_client)
    admin = await (
        await app_client.post(ADMIN_REGISTER, json=_body(nonce, "op", "pw", True))
    ).json()
    user = await register_user(app_client, "alice", device_id="ALICEDEV")
    # A request records where alice's device was seen.
    await app_client.get(
        "/_matrix/client/v3/account/whoami",
        headers={**auth(user["access_token"]), "User-Agent": "Element/1.11.88 test"},
    )
    url = "/_matrix/client/v3/admin/whois/@alice:test.local"

    async def whois(token: str) -> dict[str, Any]:
        response = await app_client.get(url, headers=auth(token))
        assert response.status == 200
        return dict(await response.json())

    def seen(body: dict[str, Any]) -> bool:
        return bool(body["devices"]["ALICEDEV"]["sessions"][0]["connections"])

    for token in (admin["access_token"], user["access_token"]):
        # A worker deployment: the reader that served whoami writes it behind, within 2 s.
        body = await eventually(app_client, lambda: whois(token), seen)  # noqa: B023
        assert body["user_id"] == "@alice:test.local"
        connections = body["devices"]["ALICEDEV"]["sessions"][0]["connections"]
        assert connections[0]["ip"] == "127.0.0.1"
        assert isinstance(connections[0]["last_seen"], int)
        assert connections[0]["user_agent"] == "Element/1.11.88 test"
    other = await register_user(app_client, "bob")
    refused = await app_client.get(url, headers=auth(other["access_token"]))
    assert refused.status == 403 and (await refused.json())["errcode"] == "M_FORBIDDEN"
    bad = await app_client.get(
        "/_matrix/client/v3/admin/whois/not-a-user", headers=auth(admin["access_token"])
    )
    assert bad.status == 400
    unknown = await app_client.get(
        "/_matrix/client/v3/admin/whois/@ghost:test.local", headers=auth(admin["access_token"])
    )
    assert unknown.status == 404


async def test_register_user_cli_end_to_end(aiohttp_server: Any, tmp_config: Any) -> None:
    """`python -m homeserver register-user` against a live (in-process) server, then login."""
    server = await aiohttp_server(create_app(tmp_config()))
    url = f"http://127.0.0.1:{server.port}"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "homeserver",
        "register-user",
        "-k",
        TEST_SHARED_SECRET,
        "-u",
        "cliuser",
        "-p",
        "cli password",
        "--admin",
        url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL,
    )
    stdout, stderr = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 0, stderr.decode()
    assert stdout.decode().strip() == "Registered @cliuser:test.local (admin)"
    client = TestClient(server)
    await client.start_server()
    try:
        login = await client.post(
            "/_matrix/client/v3/login",
            json={"type": "m.login.password", "user": "cliuser", "password": "cli password"},
        )
        assert login.status == 200
        assert (await login.json())["user_id"] == "@cliuser:test.local"
    finally:
        await client.close()


async def test_nonce_flood_cannot_evict_an_admins_nonce(app_client: TestClient) -> None:
    """Anonymous GETs hand out nonces without storing anything, so a flood of them
    (here 200 over HTTP and 50,000 more straight from the service the GET calls)
    cannot push out the nonce an admin fetched first; a spent nonce is not replayable;
    a forged or expired-looking nonce is refused."""
    from homeserver.appstate import SHARED_SECRET_REGISTRATION

    mine = await _nonce(app_client)
    for _ in range(200):
        await _nonce(app_client)
    if not deployed(app_client):  # (the service is in the main's memory there)
        service = app_client.app[SHARED_SECRET_REGISTRATION]
        for _ in range(50_000):
            service.new_nonce()
    ok = await app_client.post(ADMIN_REGISTER, json=_body(mine, "opadmin", "pw", True))
    assert ok.status == 200, await ok.text()
    assert (await ok.json())["user_id"] == "@opadmin:test.local"
    replay = await app_client.post(ADMIN_REGISTER, json=_body(mine, "opadmin2", "pw", True))
    assert replay.status == 400 and (await replay.json())["error"] == "unrecognised nonce"
    expiry, rand, tag = (await _nonce(app_client)).split(".")
    for forged in (f"{int(expiry) + 10**6}.{rand}.{tag}", f"{expiry}.{rand}.{'0' * 32}", "x"):
        r = await app_client.post(ADMIN_REGISTER, json=_body(forged, "opadmin3", "pw", True))
        assert r.status == 400, forged
