"""/account/whoami, /account/password, /account/deactivate, /account/3pid*."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from homeserver.appstate import STORES, TO_DEVICE
from homeserver.storage.to_device import ToDeviceStore
from tests.client.helpers import auth, deployed, make_room, make_user, register_user

LOGIN = "/_matrix/client/v3/login"
WHOAMI = "/_matrix/client/v3/account/whoami"


def _password_auth(user: str, password: str = "correct horse") -> dict[str, Any]:
    return {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": user},
        "password": password,
    }


async def _login(client: TestClient, user: str, password: str = "correct horse") -> Any:
    return await client.post(
        LOGIN, json={"type": "m.login.password", "user": user, "password": password}
    )


async def test_whoami_r0_and_query_token(app_client: TestClient) -> None:
    user = await register_user(app_client, "alice")
    response = await app_client.get(
        "/_matrix/client/r0/account/whoami", params={"access_token": user["access_token"]}
    )
    assert await response.json() == {
        "user_id": "@alice:test.local",
        "device_id": user["device_id"],
        "is_guest": False,
    }


async def test_change_password_logs_out_other_devices(app_client: TestClient) -> None:
    user = await register_user(app_client, "bob")
    other = await (await _login(app_client, "bob")).json()
    url = "/_matrix/client/v3/account/password"
    headers = auth(user["access_token"])
    challenge = await app_client.post(url, json={"new_password": "new pw"}, headers=headers)
    assert challenge.status == 401
    assert (await challenge.json())["flows"] == [{"stages": ["m.login.password"]}]
    wrong = await app_client.post(
        url,
        json={"new_password": "new pw", "auth": _password_auth("bob", "nope")},
        headers=headers,
    )
    assert wrong.status == 401 and (await wrong.json())["errcode"] == "M_FORBIDDEN"
    ok = await app_client.post(
        url, json={"new_password": "new pw", "auth": _password_auth("bob")}, headers=headers
    )
    assert ok.status == 200 and await ok.json() == {}
    assert (await app_client.get(WHOAMI, headers=headers)).status == 200
    assert (await app_client.get(WHOAMI, headers=auth(other["access_token"]))).status == 401
    assert (await _login(app_client, "bob")).status == 403
    assert (await _login(app_client, "bob", "new pw")).status == 200


async def test_change_password_keeping_devices(app_client: TestClient) -> None:
    user = await register_user(app_client, "carol")
    other = await (await _login(app_client, "carol")).json()
    response = await app_client.post(
        "/_matrix/client/v3/account/password",
        json={"new_password": "x", "logout_devices": False, "auth": _password_auth("carol")},
        headers=auth(user["access_token"]),
    )
    assert response.status == 200
    assert (await app_client.get(WHOAMI, headers=auth(other["access_token"]))).status == 200


async def test_change_password_bad_input(app_client: TestClient) -> None:
    user = await register_user(app_client, "dan")
    headers = auth(user["access_token"])
    url = "/_matrix/client/v3/account/password"
    for body in (
        {},
        {"new_password": 1},
        {"new_password": ["x"]},
        {"new_password": "x" * 600},
        {"new_password": "x", "logout_devices": "no"},
        {"new_password": "x", "auth": "password"},
        {"new_password": "x", "auth": {"type": "m.login.password", "password": 5}},
        {"new_password": "x", "auth": {"type": 5}},
        {"new_password": "x", "auth": {"type": "m.login.password", "session": {"a": 1}}},
    ):
        response = await app_client.post(url, json=body, headers=headers)
        assert response.status == 400, body
        assert (await response.json())["errcode"] in (
            "M_BAD_JSON",
            "M_MISSING_PARAM",
            "M_INVALID_PARAM",
        )
    assert (await app_client.post(url, json={"new_password": "x"})).status == 401


async def test_deactivate(app_client: TestClient) -> None:
    user = await register_user(app_client, "erin", device_id="E1")
    deleted: list[tuple[str, str]] = []
    if not deployed(app_client):  # (the hook runs in the main's memory there)
        to_device = app_client.server.app[TO_DEVICE]
        drop_queue = to_device.device_deleted

        async def record(user_id: str, device_id: str) -> None:
            deleted.append((user_id, device_id))
            await drop_queue(user_id, device_id)

        to_device.device_deleted = record  # type: ignore[method-assign]
    user_id = "@erin:test.local"
    # A to-device message waits for the device...
    _, frank_token, _ = await make_user(app_client, "frank")
    sent = await app_client.put(
        "/_matrix/client/v3/sendToDevice/m.test/d1",
        json={"messages": {user_id: {"E1": {"n": 1}}}},
        headers=auth(frank_token),
    )
    assert sent.status == 200, await sent.text()
    queue = ToDeviceStore(app_client.server.app[STORES].db)
    assert len(await queue.get_messages(user_id, "E1", 0, 2**62)) == 1
    room_id = await make_room(app_client, user_id)
    stores = app_client.server.app[STORES]
    assert await stores.current_state.get_membership(room_id, user_id) == "join"
    headers = auth(user["access_token"])
    url = "/_matrix/client/v3/account/deactivate"
    challenge = await app_client.post(url, json={}, headers=headers)
    assert challenge.status == 401
    ok = await app_client.post(
        url, json={"auth": _password_auth("erin"), "erase": True}, headers=headers
    )
    assert ok.status == 200
    # Nothing bound at any identity server: nothing left to unbind (Synapse's answer).
    assert await ok.json() == {"id_server_unbind_result": "success"}
    if not deployed(app_client):
        assert deleted == [(user_id, "E1")]
    # ...and is dropped with it.
    assert await queue.get_messages(user_id, "E1", 0, 2**62) == []
    assert (await app_client.get(WHOAMI, headers=headers)).status == 401
    info = await stores.accounts.get_user(user_id)
    assert info.deactivated and info.password_hash is None
    assert await stores.current_state.get_membership(room_id, user_id) == "leave"
    assert (await _login(app_client, "erin")).status == 403
    # The name stays taken.
    taken = await app_client.get(
        "/_matrix/client/v3/register/available", params={"username": "erin"}
    )
    assert (await taken.json())["errcode"] == "M_USER_IN_USE"


async def test_deactivate_bad_input(app_client: TestClient) -> None:
    user = await register_user(app_client, "fay")
    for body in ({"erase": "yes"}, {"id_server": 5}, {"auth": [1]}):
        response = await app_client.post(
            "/_matrix/client/v3/account/deactivate", json=body, headers=auth(user["access_token"])
        )
        assert response.status == 400, body


async def test_threepids(app_client: TestClient) -> None:
    user = await register_user(app_client, "gus")
    headers = auth(user["access_token"])
    listed = await app_client.get("/_matrix/client/v3/account/3pid", headers=headers)
    assert await listed.json() == {"threepids": []}
    response = await app_client.post(
        "/_matrix/client/v3/account/3pid/add", json={}, headers=headers
    )
    # Adding needs a mailed session (tests/client/test_email_threepids.py).
    assert (response.status, (await response.json())["errcode"]) == (400, "M_MISSING_PARAM")
    # Binding goes to an identity server (tests/federation/test_third_party_invites.py).
    response = await app_client.post(
        "/_matrix/client/v3/account/3pid/bind", json={}, headers=headers
    )
    assert (response.status, (await response.json())["errcode"]) == (400, "M_MISSING_PARAM")
    removed = await app_client.post(
        "/_matrix/client/v3/account/3pid/delete",
        json={"medium": "email", "address": "a@b.c"},
        headers=headers,
    )
    assert await removed.json() == {"id_server_unbind_result": "no-support"}
    token = await app_client.post("/_matrix/client/v3/account/password/email/requestToken", json={})
    assert token.status == 403
