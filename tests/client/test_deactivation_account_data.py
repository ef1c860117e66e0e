"""Deactivation deletes the user's account data (global, per room, tags), as Synapse does,
without breaking the account data stream for everyone else: positions are allocated as
MAX + 1, so deleting the rows that held the highest would hand that position out again
and a client whose token had passed it would never see the new write."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from homeserver.app import create_app
from homeserver.appstate import STORES
from homeserver.config import Config
from tests.client.helpers import auth, eventually, make_room, register_user
from tests.client.test_accounts_account import _password_auth

V3 = "/_matrix/client/v3"


async def _put(client: Any, token: str, path: str, body: dict[str, Any]) -> None:
    resp = await client.put(f"{V3}{path}", json=body, headers=auth(token))
    assert resp.status == 200, await resp.text()


async def _sync(client: Any, token: str, since: str | None = None) -> dict[str, Any]:
    params = {"timeout": "0", **({"since": since} if since else {})}
    resp = await client.get(f"{V3}/sync", params=params, headers=auth(token))
    assert resp.status == 200, await resp.text()
    return dict(await resp.json())


async def test_deactivation_deletes_account_data_and_keeps_the_stream_whole(
    database_settings: dict[str, Any], aiohttp_client: Any, tmp_config: Callable[..., Config]
) -> None:
    client = await aiohttp_client(create_app(tmp_config(**database_settings)))
    erin = await register_user(client, "erin")
    frank = await register_user(client, "frank")
    e, f, me = erin["access_token"], frank["access_token"], erin["user_id"]
    room = await make_room(client, me)
    await _put(client, e, f"/user/{me}/account_data/m.direct", {"@x:test.local": [room]})
    await _put(client, e, f"/user/{me}/rooms/{room}/account_data/org.example.note", {"n": 1})
    await _put(client, e, f"/user/{me}/rooms/{room}/tags/m.favourite", {"order": 0.5})
    since = (await _sync(client, f))["next_batch"]
    # Erin's write is the stream's newest when she goes; Frank's token has passed it.
    await _put(client, e, f"/user/{me}/account_data/org.example.last", {"x": 1})
    since = (await _sync(client, f, since))["next_batch"]

    resp = await client.post(
        f"{V3}/account/deactivate", json={"auth": _password_auth("erin")}, headers=auth(e)
    )
    assert resp.status == 200, await resp.text()
    db = client.server.app[STORES].db
    assert await db.fetchval("SELECT COUNT(*) FROM account_data WHERE user_id = $1", me) == 0

    # Frank's next write is seen by his next sync: its position lies beyond his token.
    await _put(client, f, f"/user/{frank['user_id']}/account_data/org.example.after", {"y": 2})

    def types(body: dict[str, Any]) -> list[str]:
        return [ev["type"] for ev in body.get("account_data", {}).get("events", [])]

    # (In a deployment the main writes and a client reader answers a moment later.)
    body = await eventually(client, lambda: _sync(client, f, since), lambda b: bool(types(b)))
    assert types(body) == ["org.example.after"]
