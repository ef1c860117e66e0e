"""How long logins last (Synapse's keys): session_lifetime ends every token of a login,
refreshes included; refreshable_access_token_lifetime and refresh_token_lifetime bound
each token; nonrefreshable_access_token_lifetime the others. Both backends; the clock
is the sessions module's, moved on by the test."""

from __future__ import annotations

import time
from typing import Any

import pytest

from homeserver.accounts import sessions as sessions_module
from homeserver.app import create_app
from homeserver.client import auth as auth_module
from tests import deployment_mode
from tests.client.helpers import auth, register_user
from tests.client.test_accounts_login import LOGIN, password_login

C = "/_matrix/client/v3"
MIN = 60_000


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """The time tokens are issued and checked at, moved on by `clock["offset"]` ms."""
    if deployment_mode.MODE:
        pytest.skip("moves the server's clock, which a deployment's processes keep their own")
    state = {"offset": 0}

    def now_ms() -> int:
        return int(time.time() * 1000) + state["offset"]

    monkeypatch.setattr(sessions_module, "_now_ms", now_ms)
    monkeypatch.setattr(auth_module, "_now_ms", now_ms)
    return state


async def _whoami(client: Any, token: str) -> tuple[int, dict[str, Any]]:
    resp = await client.get(f"{C}/account/whoami", headers=auth(token))
    return resp.status, await resp.json()


async def _refresh(client: Any, token: str) -> tuple[int, dict[str, Any]]:
    resp = await client.post(f"{C}/refresh", json={"refresh_token": token})
    return resp.status, await resp.json()


async def test_a_session_ends_at_its_lifetime_refreshes_included(
    database_settings: dict[str, Any], aiohttp_client: Any, tmp_config: Any, clock: Any
) -> None:
    config = tmp_config(
        **database_settings,
        session_lifetime="60m",
        refreshable_access_token_lifetime="10m",
        refresh_token_lifetime="50m",
    )
    client = await aiohttp_client(create_app(config))
    await register_user(client, "kim")
    resp = await client.post(LOGIN, json=password_login("kim", refresh_token=True))
    login = await resp.json()
    assert login["expires_in_ms"] == 10 * MIN
    clock["offset"] = 11 * MIN  # the access token has expired: a soft logout
    status, body = await _whoami(client, login["access_token"])
    assert (status, body["errcode"], body["soft_logout"]) == (401, "M_UNKNOWN_TOKEN", True)
    status, renewed = await _refresh(client, login["refresh_token"])
    assert status == 200 and renewed["expires_in_ms"] == 10 * MIN
    assert (await _whoami(client, renewed["access_token"]))[0] == 200
    # Near the session's end the new access token lives only until it.
    clock["offset"] = 55 * MIN
    status, late = await _refresh(client, renewed["refresh_token"])
    assert status == 200 and 5 * MIN - 2_000 < late["expires_in_ms"] <= 5 * MIN
    clock["offset"] = 61 * MIN  # the session is over: no refresh keeps it going
    status, body = await _refresh(client, late["refresh_token"])
    assert (status, body["errcode"]) == (401, "M_UNKNOWN_TOKEN")
    assert (await _whoami(client, late["access_token"]))[0] == 401


async def test_a_refresh_token_expires_by_itself(
    aiohttp_client: Any, tmp_config: Any, clock: Any
) -> None:
    client = await aiohttp_client(create_app(tmp_config(refresh_token_lifetime="30m")))
    await register_user(client, "lee")
    resp = await client.post(LOGIN, json=password_login("lee", refresh_token=True))
    login = await resp.json()
    assert login["expires_in_ms"] == 5 * MIN  # Synapse's default for refreshable tokens
    clock["offset"] = 31 * MIN
    status, body = await _refresh(client, login["refresh_token"])
    assert (status, body["error"]) == (401, "The refresh token has expired")


async def test_tokens_without_refresh_expire_at_their_lifetime(
    aiohttp_client: Any, tmp_config: Any, clock: Any
) -> None:
    config = tmp_config(nonrefreshable_access_token_lifetime="1d", session_lifetime="90d")
    client = await aiohttp_client(create_app(config))
    token = (await register_user(client, "max"))["access_token"]
    clock["offset"] = 23 * 60 * MIN
    assert (await _whoami(client, token))[0] == 200
    clock["offset"] = 25 * 60 * MIN
    assert (await _whoami(client, token))[0] == 401


async def test_without_lifetimes_tokens_last(
    aiohttp_client: Any, tmp_config: Any, clock: Any
) -> None:
    client = await aiohttp_client(create_app(tmp_config()))
    token = (await register_user(client, "nel"))["access_token"]
    clock["offset"] = 400 * 24 * 60 * MIN
    assert (await _whoami(client, token))[0] == 200
