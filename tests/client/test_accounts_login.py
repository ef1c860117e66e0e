"""GET/POST /login, login tokens, /logout, /logout/all, /refresh, token edge cases."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from homeserver.app import create_app
from homeserver.appstate import STORES
from tests.client.helpers import auth, eventually, register_user

LOGIN = "/_matrix/client/v3/login"
WHOAMI = "/_matrix/client/v3/account/whoami"


def password_login(user: str, password: str = "correct horse", **extra: Any) -> dict[str, Any]:
    return {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": user},
        "password": password,
        **extra,
    }


async def test_login_flows(app_client: TestClient) -> None:
    for prefix in ("v3", "r0"):
        response = await app_client.get(f"/_matrix/client/{prefix}/login")
        assert response.status == 200
        assert await response.json() == {
            "flows": [
                {"type": "m.login.password"},
                {"type": "m.login.token", "get_login_token": True},
                {"type": "m.login.application_service"},  # as Synapse: always listed
            ]
        }


async def test_password_login_localpart_full_id_and_legacy(app_client: TestClient) -> None:
    await register_user(app_client, "alice")
    bodies = [
        password_login("alice"),
        password_login("@alice:test.local"),
        password_login("ALICE"),
        {"type": "m.login.password", "user": "alice", "password": "correct horse"},
    ]
    for body in bodies:
        response = await app_client.post(LOGIN, json=body)
        assert response.status == 200, body
        result = await response.json()
        assert set(result) == {"user_id", "access_token", "device_id", "home_server"}
        assert result["user_id"] == "@alice:test.local"
        assert result["home_server"] == "test.local"
        whoami = await app_client.get(WHOAMI, headers=auth(result["access_token"]))
        assert (await whoami.json())["device_id"] == result["device_id"]


async def test_wrong_password_and_unknown_user(app_client: TestClient) -> None:
    await register_user(app_client, "bob")
    for body in (password_login("bob", "wrong"), password_login("nobody")):
        response = await app_client.post(LOGIN, json=body)
        assert response.status == 403
        assert await response.json() == {
            "errcode": "M_FORBIDDEN",
            "error": "Invalid username or password",
        }


async def test_device_id_reuse_invalidates_old_token(app_client: TestClient) -> None:
    await register_user(app_client, "carol")
    first = await (
        await app_client.post(LOGIN, json=password_login("carol", device_id="DEV"))
    ).json()
    second = await (
        await app_client.post(
            LOGIN, json=password_login("carol", device_id="DEV", initial_device_display_name="x")
        )
    ).json()
    assert first["device_id"] == second["device_id"] == "DEV"
    old = await app_client.get(WHOAMI, headers=auth(first["access_token"]))
    assert old.status == 401
    assert (await old.json())["errcode"] == "M_UNKNOWN_TOKEN"
    new = await app_client.get(WHOAMI, headers=auth(second["access_token"]))
    assert new.status == 200


async def test_well_known_in_login_response(aiohttp_client: Any, tmp_config: Any) -> None:
    client = await aiohttp_client(create_app(tmp_config(public_baseurl="https://hs.example/")))
    await register_user(client, "dora")
    result = await (await client.post(LOGIN, json=password_login("dora"))).json()
    assert result["well_known"] == {"m.homeserver": {"base_url": "https://hs.example/"}}


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"type": True},
        {
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": True},
            "password": "x",
        },
        {"type": "m.login.password", "identifier": "alice", "password": "x"},
        {
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": "a"},
            "password": ["x"],
        },
        {"type": "m.login.password", "user": "a", "password": "x", "device_id": {"a": 1}},
        {"type": "m.login.password", "user": "a", "password": "x", "refresh_token": "yes"},
        {"type": "m.login.password", "user": "x" * 70_000, "password": "x"},
        {"type": "m.login.password", "password": "x"},
        {"type": "m.login.token", "token": 5},
    ],
)
async def test_login_bad_input(app_client: TestClient, body: dict[str, Any]) -> None:
    response = await app_client.post(LOGIN, json=body)
    assert response.status == 400, await response.text()
    assert (await response.json())["errcode"] in (
        "M_BAD_JSON",
        "M_MISSING_PARAM",
        "M_INVALID_PARAM",
    )


async def test_unknown_login_and_identifier_types(app_client: TestClient) -> None:
    response = await app_client.post(LOGIN, json={"type": "m.login.sso"})
    assert response.status == 400
    assert await response.json() == {"errcode": "M_UNKNOWN", "error": "Unknown login type"}
    third = await app_client.post(
        LOGIN,
        json={
            "type": "m.login.password",
            "identifier": {"type": "m.id.thirdparty", "medium": "email", "address": "a@b"},
            "password": "x",
        },
    )
    # An address no account holds fails as a wrong password does (no enumeration).
    assert (third.status, (await third.json())["errcode"]) == (403, "M_FORBIDDEN")
    phone = await app_client.post(
        LOGIN,
        json={
            "type": "m.login.password",
            "identifier": {"type": "m.id.phone", "country": "GB", "phone": "1"},
            "password": "x",
        },
    )
    assert (phone.status, (await phone.json())["errcode"]) == (400, "M_UNKNOWN")


async def test_login_rate_limits(aiohttp_client: Any, tmp_config: Any) -> None:
    config = tmp_config(
        rc_enabled=True,
        rc_login={
            "address": {"per_second": 100, "burst_count": 100},
            "account": {"per_second": 100, "burst_count": 100},
            "failed_attempts": {"per_second": 0.001, "burst_count": 2},
        },
    )
    client = await aiohttp_client(create_app(config))
    await register_user(client, "eve")
    statuses = [
        (await client.post(LOGIN, json=password_login("eve", "bad"))).status for _ in range(3)
    ]
    assert statuses == [403, 403, 429]

    config2 = tmp_config(
        rc_enabled=True, rc_login={"address": {"per_second": 0.001, "burst_count": 1}}
    )
    client2 = await aiohttp_client(create_app(config2))
    first = await client2.post(LOGIN, json=password_login("nobody"))
    second = await client2.post(LOGIN, json=password_login("nobody"))
    assert (first.status, second.status) == (403, 429)
    body = await second.json()
    assert body["errcode"] == "M_LIMIT_EXCEEDED" and body["retry_after_ms"] > 0


async def test_exhausted_failed_attempts_refuse_even_the_right_password(
    aiohttp_client: Any, tmp_config: Any
) -> None:
    """Synapse's rc_login.failed_attempts: checked before the password, charged after a
    failure; while exhausted, the right password is refused with 429 too."""
    config = tmp_config(
        rc_enabled=True,
        rc_login={
            "address": {"per_second": 100, "burst_count": 100},
            "account": {"per_second": 100, "burst_count": 100},
            "failed_attempts": {"per_second": 0.001, "burst_count": 3},
        },
    )
    client = await aiohttp_client(create_app(config))
    await register_user(client, "mallory")
    await register_user(client, "trent")
    # Successful logins never use up the failed-attempts budget.
    for _ in range(4):
        assert (await client.post(LOGIN, json=password_login("mallory"))).status == 200
    statuses = []
    for _ in range(3):
        response = await client.post(LOGIN, json=password_login("mallory", "guess"))
        statuses.append(response.status)
        assert (await response.json())["errcode"] == "M_FORBIDDEN"
    assert statuses == [403, 403, 403]
    refused = await client.post(LOGIN, json=password_login("mallory"))
    assert refused.status == 429
    body = await refused.json()
    assert body["errcode"] == "M_LIMIT_EXCEEDED" and body["retry_after_ms"] > 0
    assert "access_token" not in body
    # Per account: another user logs in fine.
    other = await client.post(LOGIN, json=password_login("trent"))
    assert other.status == 200 and (await other.json())["user_id"] == "@trent:test.local"


async def test_deactivated_user_cannot_login(app_client: TestClient) -> None:
    await register_user(app_client, "frank")
    await app_client.server.app[STORES].accounts.deactivate("@frank:test.local")
    response = await app_client.post(LOGIN, json=password_login("frank"))
    assert response.status == 403
    assert (await response.json())["errcode"] == "M_FORBIDDEN"


# -- login tokens --------------------------------------------------------------------------


async def test_get_token_then_login_with_it(app_client: TestClient) -> None:
    user = await register_user(app_client, "gina")
    url = "/_matrix/client/v1/login/get_token"
    challenge = await app_client.post(url, json={}, headers=auth(user["access_token"]))
    assert challenge.status == 401
    body = await challenge.json()
    assert body["flows"] == [{"stages": ["m.login.password"]}]
    granted = await app_client.post(
        url,
        json={
            "auth": {
                "type": "m.login.password",
                "identifier": {"type": "m.id.user", "user": "gina"},
                "password": "correct horse",
                "session": body["session"],
            }
        },
        headers=auth(user["access_token"]),
    )
    assert granted.status == 200
    token_body = await granted.json()
    assert token_body["expires_in_ms"] == 120_000
    token = token_body["login_token"]
    login = await app_client.post(LOGIN, json={"type": "m.login.token", "token": token})
    assert login.status == 200
    assert (await login.json())["user_id"] == "@gina:test.local"
    reused = await app_client.post(LOGIN, json={"type": "m.login.token", "token": token})
    assert reused.status == 403
    assert await reused.json() == {"errcode": "M_FORBIDDEN", "error": "Invalid login token"}


# -- logout ----------------------------------------------------------------------------------


async def test_logout_deletes_token_and_device(app_client: TestClient) -> None:
    user = await register_user(app_client, "hal")
    other = await (await app_client.post(LOGIN, json=password_login("hal"))).json()
    response = await app_client.post(
        "/_matrix/client/v3/logout", headers=auth(user["access_token"])
    )
    assert response.status == 200 and await response.json() == {}
    gone = await app_client.get(WHOAMI, headers=auth(user["access_token"]))
    assert gone.status == 401 and (await gone.json())["errcode"] == "M_UNKNOWN_TOKEN"
    accounts = app_client.server.app[STORES].accounts
    assert await accounts.get_device("@hal:test.local", user["device_id"]) is None
    still = await app_client.get(WHOAMI, headers=auth(other["access_token"]))
    assert still.status == 200


async def test_logout_all(app_client: TestClient) -> None:
    user = await register_user(app_client, "ian")
    other = await (await app_client.post(LOGIN, json=password_login("ian"))).json()
    response = await app_client.post(
        "/_matrix/client/v3/logout/all", headers=auth(other["access_token"])
    )
    assert response.status == 200 and await response.json() == {}
    for token in (user["access_token"], other["access_token"]):
        assert (await app_client.get(WHOAMI, headers=auth(token))).status == 401
    assert await app_client.server.app[STORES].accounts.get_devices("@ian:test.local") == []


# -- refresh -----------------------------------------------------------------------------------


async def test_refresh_rotation(app_client: TestClient) -> None:
    await register_user(app_client, "jan")
    login = await (
        await app_client.post(LOGIN, json=password_login("jan", refresh_token=True))
    ).json()
    assert login["expires_in_ms"] == 300_000
    refresh_url = "/_matrix/client/v3/refresh"
    first = await app_client.post(refresh_url, json={"refresh_token": login["refresh_token"]})
    assert first.status == 200
    r1 = await first.json()
    assert set(r1) == {"access_token", "refresh_token", "expires_in_ms"}
    assert r1["refresh_token"] != login["refresh_token"]
    # The old access token died with the refresh (in a worker deployment, on every
    # process within the replication window).
    old = await eventually(
        app_client,
        lambda: app_client.get(WHOAMI, headers=auth(login["access_token"])),
        lambda response: response.status == 401,
    )
    assert old.status == 401
    new = await app_client.get(WHOAMI, headers=auth(r1["access_token"]))
    assert (await new.json())["device_id"] == login["device_id"]
    # The old refresh token still works until the new one is used (lost-response retry):
    # that retry replaces r1.
    retry = await (
        await app_client.post(refresh_url, json={"refresh_token": login["refresh_token"]})
    ).json()
    replaced_access = await eventually(
        app_client,
        lambda: app_client.get(WHOAMI, headers=auth(r1["access_token"])),
        lambda response: response.status == 401,
    )
    assert replaced_access.status == 401
    # Using the newest refresh token revokes its predecessor.
    newest = await app_client.post(refresh_url, json={"refresh_token": retry["refresh_token"]})
    assert newest.status == 200
    dead = await app_client.post(refresh_url, json={"refresh_token": login["refresh_token"]})
    assert dead.status == 401
    assert (await dead.json())["errcode"] == "M_UNKNOWN_TOKEN"
    replaced = await app_client.post(refresh_url, json={"refresh_token": r1["refresh_token"]})
    assert replaced.status == 401


async def test_refresh_bad_input(app_client: TestClient) -> None:
    url = "/_matrix/client/v3/refresh"
    for body in ({}, {"refresh_token": 5}, {"refresh_token": ["a"]}):
        response = await app_client.post(url, json=body)
        assert response.status == 400, body
    unknown = await app_client.post(url, json={"refresh_token": "nope"})
    assert unknown.status == 401
    assert await unknown.json() == {
        "errcode": "M_UNKNOWN_TOKEN",
        "error": "Unknown refresh token",
        "soft_logout": False,
    }


# -- access token edge cases ---------------------------------------------------------------


@pytest.mark.parametrize(
    "token",
    ["nope", "%00%ff%fe", "mat_" + "a" * 600, "tok%20en", "ünïcödé"],
)
async def test_junk_tokens_are_unknown(app_client: TestClient, token: str) -> None:
    response = await app_client.get(WHOAMI, params={"access_token": token})
    assert response.status == 401
    body = await response.json()
    assert body["errcode"] == "M_UNKNOWN_TOKEN"
    assert body["soft_logout"] is False


async def test_non_ascii_header_token(app_client: TestClient) -> None:
    response = await app_client.get(
        WHOAMI, headers={"Authorization": "Bearer t\u00e9st".encode().decode("latin-1")}
    )
    assert response.status == 401
    assert (await response.json())["errcode"] == "M_UNKNOWN_TOKEN"


async def test_missing_token(app_client: TestClient) -> None:
    response = await app_client.get(WHOAMI)
    assert response.status == 401
    assert (await response.json())["errcode"] == "M_MISSING_TOKEN"


async def test_expired_token_is_soft_logout(app_client: TestClient) -> None:
    user = await register_user(app_client, "kim")
    accounts = app_client.server.app[STORES].accounts
    await accounts.add_access_token(
        "expired_token", "@kim:test.local", user["device_id"], valid_until_ms=1
    )
    response = await app_client.get(WHOAMI, headers=auth("expired_token"))
    assert response.status == 401
    body = await response.json()
    assert body["errcode"] == "M_UNKNOWN_TOKEN" and body["soft_logout"] is True
