"""enable_search: false (Synapse's): /search answers 400 and messages are not indexed
(no row and no text kept for a search that cannot run); with the default they are."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from homeserver.app import create_app
from homeserver.appstate import STORES
from tests.client.helpers import auth, register_user

C = "/_matrix/client/v3"


@pytest.mark.parametrize("enabled", [True, False], ids=["default", "disabled"])
async def test_search_can_be_switched_off(
    database_settings: dict[str, Any], aiohttp_client: Any, tmp_config: Any, enabled: bool
) -> None:
    settings = {} if enabled else {"enable_search": False}
    client = await aiohttp_client(create_app(tmp_config(**database_settings, **settings)))
    token = (await register_user(client, "sam"))["access_token"]
    resp = await client.post(f"{C}/createRoom", json={}, headers=auth(token))
    room = (await resp.json())["room_id"]
    await client.put(
        f"{C}/rooms/{room}/send/m.room.message/{uuid.uuid4().hex}",
        json={"msgtype": "m.text", "body": "findable words"},
        headers=auth(token),
    )
    indexed = await client.app[STORES].events.db.fetchval(
        "SELECT COUNT(*) FROM event_search WHERE room_id = $1", room
    )
    body = {"search_categories": {"room_events": {"search_term": "findable"}}}
    resp = await client.post(f"{C}/search", json=body, headers=auth(token))
    answer = await resp.json()
    if enabled:
        assert indexed >= 1
        assert resp.status == 200 and answer["search_categories"]["room_events"]["count"] == 1
    else:
        assert indexed == 0
        assert (resp.status, answer["errcode"]) == (400, "M_UNKNOWN")
