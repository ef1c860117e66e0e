"""Devices: list, get, rename, delete with UIA, bulk delete, hooks, last-seen."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient
from signedjson.key import generate_signing_key

from homeserver.accounts.passwords import PasswordHasher
from homeserver.accounts.sessions import SessionService
from homeserver.appstate import ACCOUNT_AUTH_STORE, RATE_LIMITERS, STORES
from tests.client.helpers import auth, register_user
from tests.client.test_e2ee_keys import device_keys

DEVICES = "/_matrix/client/v3/devices"


async def _login(client: TestClient, user: str, device_id: str) -> dict[str, Any]:
    response = await client.post(
        "/_matrix/client/v3/login",
        json={
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": user},
            "password": "correct horse",
            "device_id": device_id,
            "initial_device_display_name": f"{device_id} name",
        },
    )
    assert response.status == 200
    return await response.json()


def _password_auth(user: str, session: str | None = None, password: str = "correct horse"):
    body: dict[str, Any] = {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": user},
        "password": password,
    }
    if session is not None:
        body["session"] = session
    return body


async def test_list_get_rename(app_client: TestClient) -> None:
    user = await register_user(app_client, "alice", device_id="AAA")
    await _login(app_client, "alice", "BBB")
    headers = auth(user["access_token"])
    listed = await (await app_client.get(DEVICES, headers=headers)).json()
    ids = [d["device_id"] for d in listed["devices"]]
    assert ids == ["AAA", "BBB"]
    bbb = listed["devices"][1]
    assert bbb == {"device_id": "BBB", "display_name": "BBB name"}
    # AAA made that request: last seen is recorded after it, visible to the next one.
    assert listed["devices"][0] == {"device_id": "AAA"}
    relisted = await (await app_client.get(DEVICES, headers=headers)).json()
    aaa = relisted["devices"][0]
    assert aaa["last_seen_ip"] == "127.0.0.1" and isinstance(aaa["last_seen_ts"], int)

    renamed = await app_client.put(
        f"{DEVICES}/BBB", json={"display_name": "Laptop"}, headers=headers
    )
    assert renamed.status == 200 and await renamed.json() == {}
    got = await (await app_client.get(f"{DEVICES}/BBB", headers=headers)).json()
    assert got == {"device_id": "BBB", "display_name": "Laptop"}

    missing = await app_client.get(f"{DEVICES}/NOPE", headers=headers)
    assert missing.status == 404 and (await missing.json())["errcode"] == "M_NOT_FOUND"
    missing_put = await app_client.put(f"{DEVICES}/NOPE", json={}, headers=headers)
    assert missing_put.status == 404
    for bad in ({"display_name": 5}, {"display_name": ["x"]}, {"display_name": "x" * 2000}):
        response = await app_client.put(f"{DEVICES}/BBB", json=bad, headers=headers)
        assert response.status == 400, bad


async def test_other_users_devices_are_invisible(app_client: TestClient) -> None:
    await register_user(app_client, "bob", device_id="BOBDEV")
    carol = await register_user(app_client, "carol")
    headers = auth(carol["access_token"])
    assert (await app_client.get(f"{DEVICES}/BOBDEV", headers=headers)).status == 404
    deleted = await app_client.delete(f"{DEVICES}/BOBDEV", headers=headers)
    assert deleted.status == 404


async def _device_key_ids(client: TestClient, token: str, user_id: str) -> list[str]:
    response = await client.post(
        "/_matrix/client/v3/keys/query",
        json={"device_keys": {user_id: []}},
        headers=auth(token),
    )
    assert response.status == 200
    return sorted((await response.json())["device_keys"].get(user_id, {}))


async def test_delete_device_with_uia_runs_hooks(app_client: TestClient) -> None:
    user = await register_user(app_client, "dave", device_id="MAIN")
    other = await _login(app_client, "dave", "OLD")
    headers = auth(user["access_token"])
    uploaded = await app_client.post(
        "/_matrix/client/v3/keys/upload",
        json={"device_keys": device_keys("@dave:test.local", "OLD", generate_signing_key("x"))},
        headers=auth(other["access_token"]),
    )
    assert uploaded.status == 200, await uploaded.text()
    assert await _device_key_ids(app_client, user["access_token"], "@dave:test.local") == ["OLD"]
    challenge = await app_client.delete(f"{DEVICES}/OLD", headers=headers)
    assert challenge.status == 401
    body = await challenge.json()
    assert body["flows"] == [{"stages": ["m.login.password"]}]
    wrong = await app_client.delete(
        f"{DEVICES}/OLD",
        json={"auth": _password_auth("dave", body["session"], "wrong")},
        headers=headers,
    )
    assert wrong.status == 401
    wrong_body = await wrong.json()
    assert wrong_body["errcode"] == "M_FORBIDDEN"
    assert wrong_body["flows"] == [{"stages": ["m.login.password"]}]
    assert wrong_body["session"] == body["session"]
    ok = await app_client.delete(
        f"{DEVICES}/OLD", json={"auth": _password_auth("dave", body["session"])}, headers=headers
    )
    assert ok.status == 200 and await ok.json() == {}
    # The E2EE area's device hook dropped the deleted device's keys.
    assert await _device_key_ids(app_client, user["access_token"], "@dave:test.local") == []
    assert (
        await app_client.get(
            "/_matrix/client/v3/account/whoami", headers=auth(other["access_token"])
        )
    ).status == 401
    listed = await (await app_client.get(DEVICES, headers=headers)).json()
    assert [d["device_id"] for d in listed["devices"]] == ["MAIN"]


async def test_password_stage_for_another_user_is_refused(app_client: TestClient) -> None:
    await register_user(app_client, "mallory")
    eve = await register_user(app_client, "eve", device_id="EVE")
    response = await app_client.delete(
        f"{DEVICES}/EVE",
        json={"auth": _password_auth("mallory")},
        headers=auth(eve["access_token"]),
    )
    assert response.status == 401
    assert (await response.json())["errcode"] == "M_FORBIDDEN"


async def test_uia_session_bound_to_operation(app_client: TestClient) -> None:
    user = await register_user(app_client, "fred", device_id="F1")
    await _login(app_client, "fred", "F2")
    headers = auth(user["access_token"])
    challenge = await (await app_client.delete(f"{DEVICES}/F2", headers=headers)).json()
    swapped = await app_client.post(
        "/_matrix/client/v3/account/deactivate",
        json={"auth": _password_auth("fred", challenge["session"])},
        headers=headers,
    )
    assert swapped.status == 403
    assert (await swapped.json())["errcode"] == "M_FORBIDDEN"


async def test_bulk_delete(app_client: TestClient) -> None:
    user = await register_user(app_client, "gail", device_id="KEEP")
    for device in ("X1", "X2"):
        await _login(app_client, "gail", device)
    headers = auth(user["access_token"])
    url = "/_matrix/client/v3/delete_devices"
    for bad in ({}, {"devices": "X1"}, {"devices": [1]}, {"devices": [{"a": 1}]}):
        response = await app_client.post(url, json=bad, headers=headers)
        assert response.status == 400, bad
    ok = await app_client.post(
        url,
        json={"devices": ["X1", "X2", "UNKNOWN"], "auth": _password_auth("gail")},
        headers=headers,
    )
    assert ok.status == 200 and await ok.json() == {}
    devices = await app_client.server.app[STORES].accounts.get_devices("@gail:test.local")
    assert [d.device_id for d in devices] == ["KEEP"]


async def test_devices_need_auth(app_client: TestClient) -> None:
    for method, path in (
        ("GET", DEVICES),
        ("GET", f"{DEVICES}/X"),
        ("POST", "/_matrix/client/v3/delete_devices"),
    ):
        response = await app_client.request(method, path, json={})
        assert response.status == 401
        assert (await response.json())["errcode"] == "M_MISSING_TOKEN"


async def test_a_failing_device_hook_does_not_stop_the_others(app_client: TestClient) -> None:
    app = app_client.server.app
    calls: list[tuple[str, str]] = []

    async def hook(user_id: str, device_id: str) -> None:
        calls.append((user_id, device_id))

    async def broken_hook(user_id: str, device_id: str) -> None:
        raise RuntimeError("a failing hook must not stop deletion")

    sessions = SessionService(
        app[STORES].accounts,
        app[ACCOUNT_AUTH_STORE],
        PasswordHasher(),
        app[RATE_LIMITERS],
        "test.local",
        device_deleted=[broken_hook, hook],
        device_renamed=[broken_hook, hook],
    )
    await register_user(app_client, "fay", device_id="MAIN")
    await _login(app_client, "fay", "OLD")
    await sessions.delete_devices("@fay:test.local", ["OLD"])
    await sessions.rename_device("@fay:test.local", "MAIN", "Main")
    assert calls == [("@fay:test.local", "OLD"), ("@fay:test.local", "MAIN")]
    devices = await app[STORES].accounts.get_devices("@fay:test.local")
    assert [(d.device_id, d.display_name) for d in devices] == [("MAIN", "Main")]
