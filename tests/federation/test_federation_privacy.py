"""What other servers may ask about our users, as the operator set it (Synapse's keys):
device names (`allow_device_name_lookup_over_federation`, off by default) and profiles
(`allow_profile_lookup_over_federation`, on by default). A signed fake peer asks."""

from __future__ import annotations

from typing import Any

import pytest

from homeserver.app import create_app
from homeserver.appstate import E2EE_KEY_STORE, STORES
from tests.federation.inbound_helpers import fed, seed_remote_key

BOB = "@bob:test.local"


async def _server(aiohttp_client: Any, tmp_config: Any, **settings: Any) -> Any:
    client = await aiohttp_client(create_app(tmp_config(**settings)))
    await seed_remote_key(client)
    stores = client.app[STORES]
    await stores.accounts.create_user(BOB, None)
    await stores.accounts.upsert_device(BOB, "DEV", "Bob's work laptop")
    keys = {
        "user_id": BOB,
        "device_id": "DEV",
        "algorithms": ["m.megolm.v1.aes-sha2"],
        "keys": {"ed25519:DEV": "k" * 43},
    }
    await client.app[E2EE_KEY_STORE].set_device_keys(BOB, "DEV", keys)
    return client


async def _device_names(client: Any) -> tuple[Any, Any]:
    status, devices = await fed(client, "GET", f"/_matrix/federation/v1/user/devices/{BOB}")
    assert status == 200, devices
    status, queried = await fed(
        client, "POST", "/_matrix/federation/v1/user/keys/query", {"device_keys": {BOB: []}}
    )
    assert status == 200, queried
    keys = queried["device_keys"][BOB]["DEV"]
    assert keys["keys"] == {"ed25519:DEV": "k" * 43}  # the keys themselves are shared
    return (
        [d.get("device_display_name") for d in devices["devices"]],
        keys.get("unsigned", {}).get("device_display_name"),
    )


@pytest.mark.parametrize("shared", [None, False, True], ids=["default", "off", "on"])
async def test_device_names_cross_only_when_the_operator_shares_them(
    aiohttp_client: Any, tmp_config: Any, shared: bool | None
) -> None:
    settings = {} if shared is None else {"allow_device_name_lookup_over_federation": shared}
    client = await _server(aiohttp_client, tmp_config, **settings)
    name = "Bob's work laptop" if shared else None
    assert await _device_names(client) == ([name], name)


async def test_profile_lookup_can_be_refused(aiohttp_client: Any, tmp_config: Any) -> None:
    path = f"/_matrix/federation/v1/query/profile?user_id={BOB}"
    client = await _server(aiohttp_client, tmp_config)
    status, body = await fed(client, "GET", path)
    assert status == 200, body
    await client.close()
    client = await _server(aiohttp_client, tmp_config, allow_profile_lookup_over_federation=False)
    status, body = await fed(client, "GET", path)
    assert (status, body["errcode"]) == (403, "M_FORBIDDEN")
