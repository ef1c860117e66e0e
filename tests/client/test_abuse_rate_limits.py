"""The rate limits on what a hostile or broken client floods (Synapse's keys): room
creation (rc_room_creation), presence changes (rc_presence.per_user) and content
reports (rc_reports). Past the burst: 429 M_LIMIT_EXCEEDED with retry_after_ms, and
nothing done; other users are not limited by one user's flood; an admin's per-user
override lifts it."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from homeserver.app import create_app
from homeserver.appstate import RATE_LIMITERS
from homeserver.config.model import UNLIMITED
from tests.client.helpers import auth, register_user

C = "/_matrix/client/v3"
LIMIT = {"per_second": 0.001, "burst_count": 2}


async def _client(aiohttp_client: Any, tmp_config: Any) -> Any:
    config = tmp_config(
        rc_enabled=True,
        rc_room_creation=LIMIT,
        rc_presence={"per_user": LIMIT},
        rc_reports=LIMIT,
        rc_registration={"per_second": 100, "burst_count": 100},
    )
    return await aiohttp_client(create_app(config))


async def test_room_creation_is_limited_per_user(aiohttp_client: Any, tmp_config: Any) -> None:
    client = await _client(aiohttp_client, tmp_config)
    spammer = await register_user(client, "spammer")
    other = await register_user(client, "other")

    async def create(user: dict[str, Any]) -> Any:
        return await client.post(f"{C}/createRoom", json={}, headers=auth(user["access_token"]))

    assert [(await create(spammer)).status for _ in range(2)] == [200, 200]
    refused = await create(spammer)
    body = await refused.json()
    assert (refused.status, body["errcode"]) == (429, "M_LIMIT_EXCEEDED")
    assert body["retry_after_ms"] > 0
    resp = await client.get(f"{C}/joined_rooms", headers=auth(spammer["access_token"]))
    assert len((await resp.json())["joined_rooms"]) == 2  # the refused one made nothing
    assert (await create(other)).status == 200
    # An admin's override (the admin API's override_ratelimit) lifts it.
    client.app[RATE_LIMITERS].set_override(spammer["user_id"], UNLIMITED)
    assert (await create(spammer)).status == 200


async def test_presence_changes_and_reports_are_limited(
    aiohttp_client: Any, tmp_config: Any
) -> None:
    client = await _client(aiohttp_client, tmp_config)
    alice = await register_user(client, "alice")
    bob = await register_user(client, "bob")
    headers = auth(alice["access_token"])
    url = f"{C}/presence/{quote(alice['user_id'])}/status"
    statuses = [
        (await client.put(url, json={"presence": s}, headers=headers)).status
        for s in ("online", "unavailable", "online")
    ]
    assert statuses == [200, 200, 429]
    resp = await client.get(url, headers=headers)
    assert (await resp.json())["presence"] == "unavailable"  # the refused change did nothing

    report = f"{C}/users/{quote(bob['user_id'])}/report"
    statuses = [
        (await client.post(report, json={"reason": f"spam {i}"}, headers=headers)).status
        for i in range(3)
    ]
    assert statuses == [200, 200, 429]
