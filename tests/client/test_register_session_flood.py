"""Anonymous POST /register cannot add UIA session rows without bound (issue 8.13):
each new session is paid from a per-IP budget derived from rc_registration (ten per
registration it allows), so a flood gets 429 and the table stops growing, while an
honest client still registers."""

from __future__ import annotations

from aiohttp.test_utils import TestClient

from homeserver.app import create_app
from homeserver.appstate import STORES

REGISTER = "/_matrix/client/v3/register"


async def _sessions(client: TestClient) -> int:
    return await client.app[STORES].db.fetchval("SELECT COUNT(*) FROM uia_sessions")


async def test_bare_register_flood_is_limited_before_rows_are_made(
    aiohttp_client, tmp_config
) -> None:
    config = tmp_config(rc_enabled=True, rc_registration={"per_second": 0.001, "burst_count": 2})
    client = await aiohttp_client(create_app(config))
    statuses = []
    for _ in range(60):
        resp = await client.post(REGISTER, json={"username": "x", "password": "pw"})
        statuses.append(resp.status)
        if resp.status == 429:
            assert (await resp.json())["errcode"] == "M_LIMIT_EXCEEDED"
    assert statuses[:20] == [401] * 20
    assert set(statuses[20:]) == {429}
    assert await _sessions(client) == 20


async def test_honest_registration_still_works_with_limits_on(aiohttp_client, tmp_config) -> None:
    config = tmp_config(rc_enabled=True, rc_registration={"per_second": 0.001, "burst_count": 2})
    client = await aiohttp_client(create_app(config))
    for name in ("ann", "ben"):
        body = {"username": name, "password": "correct horse"}
        first = await client.post(REGISTER, json=body)
        assert first.status == 401
        body["auth"] = {"type": "m.login.dummy", "session": (await first.json())["session"]}
        done = await client.post(REGISTER, json=body)
        assert done.status == 200, await done.text()
        assert (await done.json())["user_id"] == f"@{name}:test.local"
    # The registration budget (2) is spent: the next one is refused up front.
    third = await client.post(REGISTER, json={"username": "cy", "password": "pw"})
    assert third.status == 429
