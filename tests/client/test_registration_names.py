"""Which names people may register (Synapse's keys): `_`-prefixed names are kept for
bridges unless allow_underscore_prefixed_registration; inhibit_user_in_use_error hides
whether a name is taken until registration completes (/register/available cannot be
used to probe which accounts exist)."""

from __future__ import annotations

from typing import Any

from homeserver.app import create_app
from tests.client.helpers import register_user

C = "/_matrix/client/v3"


async def _available(client: Any, name: str) -> tuple[int, dict[str, Any]]:
    resp = await client.get(f"{C}/register/available", params={"username": name})
    return resp.status, await resp.json()


async def _start(client: Any, name: str) -> tuple[int, dict[str, Any]]:
    resp = await client.post(f"{C}/register", json={"username": name, "password": "pw-long-1"})
    return resp.status, await resp.json()


async def test_underscore_names_are_for_bridges(aiohttp_client: Any, tmp_config: Any) -> None:
    client = await aiohttp_client(create_app(tmp_config()))
    status, body = await _available(client, "_bridge_bot")
    assert (status, body["errcode"]) == (400, "M_INVALID_USERNAME")
    status, body = await _start(client, "_bridge_bot")
    assert (status, body["errcode"]) == (400, "M_INVALID_USERNAME")
    allowed = await aiohttp_client(
        create_app(tmp_config(allow_underscore_prefixed_registration=True))
    )
    assert (await _available(allowed, "_mine"))[1] == {"available": True}


async def test_taken_names_are_not_revealed_before_registration_ends(
    aiohttp_client: Any, tmp_config: Any
) -> None:
    client = await aiohttp_client(create_app(tmp_config(inhibit_user_in_use_error=True)))
    await register_user(client, "alice")
    assert await _available(client, "alice") == (200, {"available": True})
    status, body = await _start(client, "alice")  # the UIA challenge, as for a free name
    assert status == 401 and "session" in body
    done = await client.post(
        f"{C}/register",
        json={
            "username": "alice",
            "password": "pw-long-1",
            "auth": {"type": "m.login.dummy", "session": body["session"]},
        },
    )
    assert (done.status, (await done.json())["errcode"]) == (400, "M_USER_IN_USE")
    await client.close()  # the same server without the setting: it says so at once
    plain = await aiohttp_client(create_app(tmp_config()))
    status, body = await _available(plain, "alice")
    assert (status, body["errcode"]) == (400, "M_USER_IN_USE")
