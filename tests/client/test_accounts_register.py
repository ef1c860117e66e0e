"""POST /register with UIA, /register/available, registration tokens, bad input."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from homeserver.app import create_app
from homeserver.appstate import ACCOUNT_AUTH_STORE, STORES
from tests.client.helpers import auth, register_user

REGISTER = "/_matrix/client/v3/register"


async def _start(client: TestClient, body: dict[str, Any]) -> str:
    response = await client.post(REGISTER, json=body)
    assert response.status == 401
    return (await response.json())["session"]


async def test_first_call_returns_dummy_flow_and_session(app_client: TestClient) -> None:
    response = await app_client.post(REGISTER, json={"username": "alice", "password": "pw"})
    assert response.status == 401
    body = await response.json()
    assert set(body) == {"flows", "params", "session"}
    assert body["flows"] == [{"stages": ["m.login.dummy"]}]
    assert body["params"] == {}
    assert isinstance(body["session"], str) and len(body["session"]) >= 16


async def test_register_with_dummy_auth_logs_in(app_client: TestClient) -> None:
    result = await register_user(
        app_client, "Alice", "pw", device_id="MYDEVICE", initial_device_display_name="Phone"
    )
    assert result["user_id"] == "@alice:test.local"
    assert result["home_server"] == "test.local"
    assert result["device_id"] == "MYDEVICE"
    assert set(result) == {"user_id", "home_server", "device_id", "access_token"}
    whoami = await app_client.get(
        "/_matrix/client/v3/account/whoami", headers=auth(result["access_token"])
    )
    assert await whoami.json() == {
        "user_id": "@alice:test.local",
        "device_id": "MYDEVICE",
        "is_guest": False,
    }
    device = await app_client.get(
        "/_matrix/client/v3/devices/MYDEVICE", headers=auth(result["access_token"])
    )
    assert (await device.json())["display_name"] == "Phone"
    stored = await app_client.server.app[STORES].accounts.get_user("@alice:test.local")
    assert stored is not None and stored.password_hash.startswith("$argon2id$")


async def test_session_cannot_be_replayed(app_client: TestClient) -> None:
    session = await _start(app_client, {"username": "bob", "password": "pw"})
    auth_dict = {"type": "m.login.dummy", "session": session}
    ok = await app_client.post(
        REGISTER, json={"username": "bob", "password": "pw", "auth": auth_dict}
    )
    assert ok.status == 200
    again = await app_client.post(
        REGISTER, json={"username": "bob2", "password": "pw", "auth": auth_dict}
    )
    assert again.status == 400
    assert (await again.json())["errcode"] == "M_UNKNOWN"


async def test_inhibit_login_and_generated_username(app_client: TestClient) -> None:
    session = await _start(app_client, {"password": "pw", "inhibit_login": True})
    response = await app_client.post(
        REGISTER,
        json={
            "password": "pw",
            "inhibit_login": True,
            "auth": {"type": "m.login.dummy", "session": session},
        },
    )
    assert response.status == 200
    body = await response.json()
    assert set(body) == {"user_id", "home_server"}
    assert body["user_id"].startswith("@u") and body["user_id"].endswith(":test.local")


async def test_refresh_token_on_register(app_client: TestClient) -> None:
    result = await register_user(app_client, "carol", refresh_token=True)
    assert result["refresh_token"].startswith("mrt_")
    assert result["expires_in_ms"] == 300_000


async def test_user_in_use_before_uia(app_client: TestClient) -> None:
    await register_user(app_client, "dave")
    response = await app_client.post(REGISTER, json={"username": "DAVE", "password": "pw"})
    assert response.status == 400
    assert await response.json() == {"errcode": "M_USER_IN_USE", "error": "User ID already taken."}


@pytest.mark.parametrize(
    "username",
    ["bad name", "é", "12345", "a:b", "x" * 70_000, "x" * 250, "\u202e"],
)
async def test_invalid_usernames(app_client: TestClient, username: str) -> None:
    response = await app_client.post(REGISTER, json={"username": username, "password": "pw"})
    assert response.status == 400
    assert (await response.json())["errcode"] in ("M_INVALID_USERNAME", "M_INVALID_PARAM")
    available = await app_client.get(
        "/_matrix/client/v3/register/available", params={"username": username[:2000]}
    )
    assert available.status == 400


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("username", True),
        ("username", ["a"]),
        ("password", ["pw"]),
        ("password", 12),
        ("password", "x" * 513),
        ("device_id", {"a": 1}),
        ("device_id", "has space"),
        ("device_id", ""),
        ("initial_device_display_name", 5),
        ("inhibit_login", "yes"),
        ("refresh_token", 1),
        ("auth", "dummy"),
        ("auth", ["m.login.dummy"]),
    ],
)
async def test_wrong_types_are_400(app_client: TestClient, field: str, value: Any) -> None:
    body: dict[str, Any] = {"username": "erin", "password": "pw", field: value}
    response = await app_client.post(REGISTER, json=body)
    assert response.status == 400, await response.text()
    assert (await response.json())["errcode"] in ("M_BAD_JSON", "M_INVALID_PARAM")


async def test_junk_bodies(app_client: TestClient) -> None:
    for raw in (b"[]", b"not json", b'{"username": "\\ud800"}', b"\xff\xfe"):
        response = await app_client.post(REGISTER, data=raw)
        assert response.status == 400, raw
        assert (await response.json())["errcode"] in ("M_NOT_JSON", "M_BAD_JSON")


async def test_auth_stage_errors(app_client: TestClient) -> None:
    session = await _start(app_client, {"username": "fay", "password": "pw"})
    unknown_type = await app_client.post(
        REGISTER,
        json={
            "username": "fay",
            "password": "pw",
            "auth": {"type": "m.login.fancy", "session": session},
        },
    )
    assert unknown_type.status == 400
    assert (await unknown_type.json())["errcode"] == "M_UNRECOGNIZED"
    bad_session = await app_client.post(
        REGISTER,
        json={
            "username": "fay",
            "password": "pw",
            "auth": {"type": "m.login.dummy", "session": "nope"},
        },
    )
    assert bad_session.status == 400
    assert (await bad_session.json())["errcode"] == "M_UNKNOWN"
    session_only = await app_client.post(
        REGISTER, json={"username": "fay", "password": "pw", "auth": {"session": session}}
    )
    assert session_only.status == 401
    assert (await session_only.json())["session"] == session


async def test_guest_and_unknown_kind(app_client: TestClient) -> None:
    guest = await app_client.post(REGISTER + "?kind=guest", json={})
    assert guest.status == 403
    assert (await guest.json())["errcode"] == "M_GUEST_ACCESS_FORBIDDEN"
    other = await app_client.post(REGISTER + "?kind=robot", json={})
    assert other.status == 400
    assert (await other.json())["errcode"] == "M_INVALID_PARAM"


async def test_registration_disabled(aiohttp_client: Any, tmp_config: Any) -> None:
    client = await aiohttp_client(create_app(tmp_config(enable_registration=False)))
    response = await client.post(REGISTER, json={"username": "gus", "password": "pw"})
    assert response.status == 403
    assert await response.json() == {
        "errcode": "M_FORBIDDEN",
        "error": "Registration has been disabled",
    }


async def test_register_available(app_client: TestClient) -> None:
    url = "/_matrix/client/v3/register/available"
    free = await app_client.get(url, params={"username": "hank"})
    assert free.status == 200 and await free.json() == {"available": True}
    await register_user(app_client, "hank")
    taken = await app_client.get(url, params={"username": "hank"})
    assert taken.status == 400 and (await taken.json())["errcode"] == "M_USER_IN_USE"
    missing = await app_client.get(url)
    assert missing.status == 400 and (await missing.json())["errcode"] == "M_MISSING_PARAM"


async def test_registration_rate_limit(aiohttp_client: Any, tmp_config: Any) -> None:
    config = tmp_config(rc_enabled=True, rc_registration={"per_second": 0.001, "burst_count": 2})
    client = await aiohttp_client(create_app(config))
    await register_user(client, "r1")
    await register_user(client, "r2")
    # As Synapse, an IP over budget is refused up front, before any UIA session.
    response = await client.post(REGISTER, json={"username": "r3", "password": "pw"})
    assert response.status == 429
    body = await response.json()
    assert body["errcode"] == "M_LIMIT_EXCEEDED" and body["retry_after_ms"] > 0


# -- registration tokens -----------------------------------------------------------------


@pytest.fixture
async def token_client(aiohttp_client: Any, tmp_config: Any) -> TestClient:
    config = tmp_config(
        registration_requires_token=True, enable_registration_without_verification=False
    )
    return await aiohttp_client(create_app(config))


async def test_registration_token_flow(token_client: TestClient) -> None:
    store = token_client.server.app[ACCOUNT_AUTH_STORE]
    assert await store.create_registration_token("tok1", uses_allowed=1)
    first = await token_client.post(REGISTER, json={"username": "ivy", "password": "pw"})
    body = await first.json()
    assert body["flows"] == [{"stages": ["m.login.registration_token"]}]
    session = body["session"]
    # Dummy is not offered here.
    dummy = await token_client.post(
        REGISTER,
        json={
            "username": "ivy",
            "password": "pw",
            "auth": {"type": "m.login.dummy", "session": session},
        },
    )
    assert dummy.status == 400
    wrong = await token_client.post(
        REGISTER,
        json={
            "username": "ivy",
            "password": "pw",
            "auth": {"type": "m.login.registration_token", "token": "nope", "session": session},
        },
    )
    assert wrong.status == 401
    wrong_body = await wrong.json()
    assert wrong_body["errcode"] == "M_UNAUTHORIZED"
    assert wrong_body["session"] == session
    good = await token_client.post(
        REGISTER,
        json={
            "username": "ivy",
            "password": "pw",
            "auth": {"type": "m.login.registration_token", "token": "tok1", "session": session},
        },
    )
    assert good.status == 200
    assert (await good.json())["user_id"] == "@ivy:test.local"
    token = await store.get_registration_token("tok1")
    assert (token.pending, token.completed) == (0, 1)
    validity = await token_client.get(
        "/_matrix/client/v1/register/m.login.registration_token/validity",
        params={"token": "tok1"},
    )
    assert await validity.json() == {"valid": False}  # its single use is spent


async def test_token_validity_endpoint(token_client: TestClient, app_client: TestClient) -> None:
    store = token_client.server.app[ACCOUNT_AUTH_STORE]
    await store.create_registration_token("fresh")
    await store.create_registration_token("expired", expiry_time=1)
    url = "/_matrix/client/v1/register/m.login.registration_token/validity"
    for token, valid in (("fresh", True), ("expired", False), ("unknown", False)):
        response = await token_client.get(url, params={"token": token})
        assert await response.json() == {"valid": valid}, token
    # A server without token registration says so.
    off = await app_client.get(url, params={"token": "fresh"})
    assert off.status == 403 and (await off.json())["errcode"] == "M_FORBIDDEN"


async def test_threepid_request_token_refused(app_client: TestClient) -> None:
    response = await app_client.post(REGISTER + "/email/requestToken", json={})
    assert response.status == 403
    assert (await response.json())["errcode"] == "M_THREEPID_DENIED"
