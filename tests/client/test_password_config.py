"""Synapse's password_config through the client API: a policy new passwords must meet
(registration, changing, resetting; Synapse's error codes, GET /password_policy), and
`enabled: false` for servers whose users sign in only through an identity provider
(no password login, change or UIA stage; SSO takes their place)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from homeserver.app import create_app
from homeserver.config import Config
from tests.client.helpers import auth, register_user
from tests.client.test_accounts_account import _password_auth

V3 = "/_matrix/client/v3"
POLICY = {
    "policy": {
        "enabled": True,
        "minimum_length": 10,
        "require_digit": True,
        "require_symbol": True,
        "require_lowercase": True,
        "require_uppercase": True,
    }
}


async def test_new_passwords_meet_the_policy(
    aiohttp_client: Any, tmp_config: Callable[..., Config]
) -> None:
    client = await aiohttp_client(create_app(tmp_config(password_config=POLICY)))
    resp = await client.get(f"{V3}/password_policy")
    assert await resp.json() == {
        "m.minimum_length": 10,
        "m.require_digit": True,
        "m.require_symbol": True,
        "m.require_lowercase": True,
        "m.require_uppercase": True,
    }
    for password, errcode in (
        ("Sh0rt!", "M_PASSWORD_TOO_SHORT"),
        ("NoDigitsHere!", "M_PASSWORD_NO_DIGIT"),
        ("N0SymbolsHere", "M_PASSWORD_NO_SYMBOL"),
        ("UPPER0NLY!!", "M_PASSWORD_NO_LOWERCASE"),
        ("lower0nly!!", "M_PASSWORD_NO_UPPERCASE"),
    ):
        # Refused before any UIA session is made.
        resp = await client.post(f"{V3}/register", json={"username": "a", "password": password})
        assert (resp.status, (await resp.json())["errcode"]) == (400, errcode), password
    good = "Correct-H0rse"
    alice = await register_user(client, "alice", password=good)
    body = {"new_password": "weak", "auth": _password_auth(alice["user_id"], good)}
    resp = await client.post(
        f"{V3}/account/password", json=body, headers=auth(alice["access_token"])
    )
    assert (resp.status, (await resp.json())["errcode"]) == (400, "M_PASSWORD_TOO_SHORT")
    body["new_password"] = "Better-H0rse"
    resp = await client.post(
        f"{V3}/account/password", json=body, headers=auth(alice["access_token"])
    )
    assert resp.status == 200, await resp.text()


async def test_passwords_switched_off(
    aiohttp_client: Any, tmp_config: Callable[..., Config]
) -> None:
    from tests.client.test_sso_oidc import login_token_in, login_with, sign_in, sso_settings
    from tests.oidc_provider import FakeProvider

    idp = await FakeProvider().start()
    try:
        settings = {**sso_settings(idp), "password_config": {"enabled": False}}
        client = await aiohttp_client(create_app(tmp_config(**settings)))
        flows = [f["type"] for f in (await (await client.get(f"{V3}/login")).json())["flows"]]
        assert "m.login.password" not in flows and "m.login.sso" in flows
        # A registration's password is not kept: it cannot sign in with one.
        await register_user(client, "bob", password="whatever pw")
        resp = await client.post(f"{V3}/login", json=_password_auth("bob", "whatever pw"))
        assert (resp.status, (await resp.json())["errcode"]) == (400, "M_UNKNOWN")

        _, page = await sign_in(client)
        alice = await login_with(client, login_token_in(page))
        token = alice["access_token"]
        caps = await (await client.get(f"{V3}/capabilities", headers=auth(token))).json()
        assert caps["capabilities"]["m.change_password"] == {"enabled": False}
        resp = await client.post(
            f"{V3}/account/password", json={"new_password": "x"}, headers=auth(token)
        )
        assert (resp.status, (await resp.json())["errcode"]) == (403, "M_FORBIDDEN")
        resp = await client.post(
            f"{V3}/delete_devices", json={"devices": ["X"]}, headers=auth(token)
        )
        assert (await resp.json())["flows"] == [{"stages": ["m.login.sso"]}]
    finally:
        await idp.close()
