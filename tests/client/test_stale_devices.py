"""delete_stale_devices_after (Synapse's): a device unused for longer than the period
is signed out by the server itself, on both backends: its access token stops
working and it leaves the device list, while recently used, never used and
dehydrated devices stay."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

import homeserver.composition_accounts as composition_accounts
from homeserver.app import create_app
from homeserver.appstate import STORES
from tests import deployment_mode
from tests.client.helpers import auth, register_user
from tests.client.test_accounts_devices import _login
from tests.client.test_dehydrated_devices import DD, _body

C = "/_matrix/client/v3"
YEAR_MS = 365 * 24 * 3600 * 1000


@pytest.mark.skipif(
    bool(deployment_mode.MODE),
    reason="shortens the job's interval in this process; a deployment's is its own",
)
async def test_devices_unused_for_the_period_are_signed_out(
    database_settings: dict[str, Any],
    aiohttp_client: Any,
    tmp_config: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(composition_accounts, "STALE_DEVICES_INTERVAL_S", 0.2)
    config = tmp_config(**database_settings, delete_stale_devices_after="1y")
    # Devices first, with the job not yet running (a server without the setting).
    first = await aiohttp_client(create_app(tmp_config(**database_settings)))
    old = (await register_user(first, "owner", device_id="OLDPHONE"))["access_token"]
    laptop = (await _login(first, "owner", "LAPTOP"))["access_token"]
    await _login(first, "owner", "NEVERUSED")
    owner = "@owner:test.local"
    # (With the laptop: a request with the old phone's token would mark it used now.)
    resp = await first.put(DD, json=_body(owner, "DEHYDRATED"), headers=auth(laptop))
    assert resp.status == 200, await resp.text()
    db = first.app[STORES].accounts.db
    now = int(time.time() * 1000)
    for stale in ("OLDPHONE", "DEHYDRATED"):
        await db.execute(
            "UPDATE devices SET last_seen_ts = $1 WHERE device_id = $2", now - 2 * YEAR_MS, stale
        )
    await db.execute("UPDATE devices SET last_seen_ts = $1 WHERE device_id = 'LAPTOP'", now)
    await db.execute("UPDATE devices SET last_seen_ts = NULL WHERE device_id = 'NEVERUSED'")
    await first.close()

    client = await aiohttp_client(create_app(config))
    for _ in range(50):
        resp = await client.get(f"{C}/devices", headers=auth(laptop))
        devices = sorted(d["device_id"] for d in (await resp.json())["devices"])
        if "OLDPHONE" not in devices:
            break
        await asyncio.sleep(0.1)
    assert devices == ["DEHYDRATED", "LAPTOP", "NEVERUSED"]
    resp = await client.get(f"{C}/account/whoami", headers=auth(old))
    assert resp.status == 401 and (await resp.json())["errcode"] == "M_UNKNOWN_TOKEN"


def test_the_period_is_read(tmp_config: Any) -> None:
    assert tmp_config(delete_stale_devices_after="1y").delete_stale_devices_after_ms == YEAR_MS
    assert tmp_config().delete_stale_devices_after_ms is None
