"""ui_auth.session_timeout (Synapse's): deleting devices one after another asks for
the password once. Within the timeout of the access token's login or last completed
UIA a device deletion needs no auth; past it, or with another token, or for anything
riskier (password, deactivation, login tokens, addresses), it does. Both backends."""

from __future__ import annotations

import time
from typing import Any

import pytest

from homeserver.accounts import uia as uia_module
from homeserver.app import create_app
from homeserver.appstate import STORES
from tests import deployment_mode
from tests.client.helpers import auth, register_user
from tests.client.test_accounts_devices import _login, _password_auth

C = "/_matrix/client/v3"


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """UIA's clock, moved on by `clock["offset"]` milliseconds."""
    if deployment_mode.MODE:
        pytest.skip("moves the server's clock, which a deployment's processes keep their own")
    state = {"offset": 0}
    monkeypatch.setattr(uia_module, "_now_ms", lambda: int(time.time() * 1000) + state["offset"])
    return state


async def _delete(client: Any, token: str, device: str, auth_body: Any = None) -> int:
    body = {} if auth_body is None else {"auth": auth_body}
    resp = await client.delete(f"{C}/devices/{device}", json=body, headers=auth(token))
    return resp.status


async def test_devices_are_deleted_without_asking_again_within_the_timeout(
    database_settings: dict[str, Any], aiohttp_client: Any, tmp_config: Any, clock: Any
) -> None:
    config = tmp_config(**database_settings, ui_auth={"session_timeout": "15s"})
    client = await aiohttp_client(create_app(config))
    await register_user(client, "tidy", device_id="OLD1")
    for device in ("OLD2", "OLD3", "OLD4"):
        await _login(client, "tidy", device)
    fresh = (await _login(client, "tidy", "NEW"))["access_token"]
    # Signed in a moment ago: no password needed to delete old devices.
    assert await _delete(client, fresh, "OLD1") == 200
    clock["offset"] = 16_000  # past the timeout since the login: asked again
    assert await _delete(client, fresh, "OLD2") == 401
    assert await _delete(client, fresh, "OLD2", _password_auth("tidy")) == 200
    # That UIA starts the window again.
    clock["offset"] = 16_000 + 10_000
    assert await _delete(client, fresh, "OLD3") == 200
    # The bulk endpoint too.
    resp = await client.post(f"{C}/delete_devices", json={"devices": ["OLD4"]}, headers=auth(fresh))
    assert resp.status == 200, await resp.text()
    devices = await (await client.get(f"{C}/devices", headers=auth(fresh))).json()
    assert [d["device_id"] for d in devices["devices"]] == ["NEW"]


async def test_riskier_operations_and_other_tokens_always_ask(
    aiohttp_client: Any, tmp_config: Any
) -> None:
    client = await aiohttp_client(create_app(tmp_config(ui_auth={"session_timeout": "15s"})))
    old = (await register_user(client, "wary", device_id="A"))["access_token"]
    # The first token signed in a minute ago.
    await client.app[STORES].accounts.db.execute(
        "UPDATE access_tokens SET created_ts = created_ts - 60000 WHERE device_id = 'A'"
    )
    fresh = (await _login(client, "wary", "B"))["access_token"]
    for path, body in (
        (f"{C}/account/password", {"new_password": "another horse"}),
        (f"{C}/account/deactivate", {}),
        ("/_matrix/client/v1/login/get_token", {}),
        (f"{C}/account/3pid/add", {"sid": "x", "client_secret": "y"}),
    ):
        resp = await client.post(path, json=body, headers=auth(fresh))
        assert resp.status in (401, 400), (path, await resp.text())
        if resp.status == 400:  # no email on this server: refused before UIA
            assert path.endswith("/account/3pid/add")
        else:
            assert "flows" in await resp.json()
    # The fresh token's window does not open the old token's.
    assert await _delete(client, old, "B") == 401
    assert await _delete(client, fresh, "A") == 200


async def test_without_the_setting_every_deletion_asks(
    aiohttp_client: Any, tmp_config: Any
) -> None:
    client = await aiohttp_client(create_app(tmp_config()))
    await register_user(client, "strict", device_id="A")
    fresh = (await _login(client, "strict", "B"))["access_token"]
    assert await _delete(client, fresh, "A") == 401
    assert await _delete(client, fresh, "A", _password_auth("strict")) == 200
    await _login(client, "strict", "C")
    assert await _delete(client, fresh, "C") == 401


def test_the_timeout_is_bounded(tmp_path: Any) -> None:
    from homeserver.config import load_config

    path = tmp_path / "homeserver.yaml"
    path.write_text("server_name: example.org\nui_auth: {session_timeout: 2h}\n")
    with pytest.raises(Exception, match="ui_auth.session_timeout"):
        load_config(path)
