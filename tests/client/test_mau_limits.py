"""Synapse's resource limits: `hs_disabled`, and monthly active users (MAU) with
`limit_usage_by_mau` / `max_mau_value`, `mau_stats_only`, trial days and reserved
addresses, on both backends, through the client API. Time moves by patching the
limits' clock (homeserver.accounts.mau.now_ms)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

import homeserver.accounts.mau as mau
from homeserver.accounts.mau import RESOURCE_LIMITS
from homeserver.app import create_app
from homeserver.appstate import SERVER_NOTICES, STORES
from homeserver.config import ConfigError
from tests.client.helpers import auth, make_user, register_user

C = "/_matrix/client/v3"
DAY_MS = 24 * 3600 * 1000
CONTACT = "mailto:admin@example.com"


class Clock:
    """The wall clock, `offset` ms ahead."""

    def __init__(self) -> None:
        self.offset = 0

    def __call__(self) -> int:
        return int(time.time() * 1000) + self.offset


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(mau, "now_ms", c)
    return c


async def _register_status(client: Any, localpart: str) -> tuple[int, dict[str, Any]]:
    """POST /register through the dummy stage; (status, body) of the last step."""
    body: dict[str, Any] = {"username": localpart, "password": "correct horse"}
    first = await client.post(f"{C}/register", json=body)
    if first.status != 401:
        return first.status, await first.json()
    body["auth"] = {"type": "m.login.dummy", "session": (await first.json())["session"]}
    resp = await client.post(f"{C}/register", json=body)
    return resp.status, await resp.json()


async def _login(client: Any, localpart: str) -> tuple[int, dict[str, Any]]:
    resp = await client.post(
        f"{C}/login",
        json={
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": localpart},
            "password": "correct horse",
        },
    )
    return resp.status, await resp.json()


def _is_mau_error(body: dict[str, Any]) -> bool:
    return body == {
        "errcode": "M_RESOURCE_LIMIT_EXCEEDED",
        "error": "Monthly Active User Limit Exceeded",
        "admin_contact": CONTACT,
        "limit_type": "monthly_active_user",
    }


async def test_a_disabled_server_refuses_everyone_with_its_message(
    database_settings: dict[str, Any], aiohttp_client: Any, tmp_config: Any
) -> None:
    config = tmp_config(
        **database_settings,
        hs_disabled=True,
        hs_disabled_message="Down for maintenance",
        admin_contact=CONTACT,
    )
    client = await aiohttp_client(create_app(config))
    expected = {
        "errcode": "M_RESOURCE_LIMIT_EXCEEDED",
        "error": "Down for maintenance",
        "admin_contact": CONTACT,
        "limit_type": "hs_disabled",
    }
    status, body = await _register_status(client, "newcomer")
    assert (status, body) == (403, expected)
    _user, token, _ = await make_user(client, "existing")
    for method, path, payload in (
        ("GET", "/sync?timeout=0", None),
        ("POST", "/createRoom", {}),
    ):
        resp = await client.request(method, C + path, json=payload, headers=auth(token))
        assert resp.status == 403, await resp.text()
        assert await resp.json() == expected
    # What is not a room event or a sync still works (Synapse blocks these only).
    resp = await client.get(f"{C}/account/whoami", headers=auth(token))
    assert resp.status == 200, await resp.text()


async def test_the_monthly_active_user_limit_keeps_newcomers_out(
    database_settings: dict[str, Any], aiohttp_client: Any, tmp_config: Any, clock: Clock
) -> None:
    config = tmp_config(
        **database_settings, limit_usage_by_mau=True, max_mau_value=1, admin_contact=CONTACT
    )
    client = await aiohttp_client(create_app(config))
    first = await register_user(client, "first")
    token = first["access_token"]
    resp = await client.get(f"{C}/sync?timeout=0", headers=auth(token))
    assert resp.status == 200, await resp.text()
    limits = client.server.app[RESOURCE_LIMITS]
    assert await limits.count() == 1
    # Full: a second registration is refused, as is a login or a sync of an account
    # that was never active.
    status, body = await _register_status(client, "second")
    assert status == 403 and _is_mau_error(body), body
    idle, idle_token, _ = await make_user(client, "idle")
    resp = await client.get(f"{C}/sync?timeout=0", headers=auth(idle_token))
    assert resp.status == 403 and _is_mau_error(await resp.json())
    resp = await client.post(f"{C}/createRoom", json={}, headers=auth(idle_token))
    assert resp.status == 403 and _is_mau_error(await resp.json())
    assert await limits.count() == 1  # refused a seat: not counted
    # The counted user carries on: rooms, messages, joins.
    resp = await client.post(f"{C}/createRoom", json={"preset": "public_chat"}, headers=auth(token))
    assert resp.status == 200, await resp.text()
    room_id = (await resp.json())["room_id"]
    resp = await client.put(
        f"{C}/rooms/{room_id}/send/m.room.message/t1",
        json={"msgtype": "m.text", "body": "still here"},
        headers=auth(token),
    )
    assert resp.status == 200, await resp.text()
    resp = await client.post(f"{C}/join/{room_id}", json={}, headers=auth(idle_token))
    assert resp.status == 403 and _is_mau_error(await resp.json())
    # A month of inactivity later the seat is free again (the hourly reaping).
    clock.offset += 31 * DAY_MS
    await limits.reap()
    assert await limits.count() == 0
    resp = await client.get(f"{C}/sync?timeout=0", headers=auth(idle_token))
    assert resp.status == 200, await resp.text()
    assert await limits.count() == 1
    assert await limits.last_active(idle) is not None  # the seat is theirs now
    resp = await client.post(f"{C}/createRoom", json={}, headers=auth(token))
    assert resp.status == 403 and _is_mau_error(await resp.json())
    # Nor may they log in again while the seat is taken (Synapse's login check).
    status, body = await _login(client, "first")
    assert status == 403 and _is_mau_error(body), body


async def test_a_counted_user_is_written_once_an_hour_not_per_request(
    aiohttp_client: Any, tmp_config: Any, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = await aiohttp_client(create_app(tmp_config(mau_stats_only=True)))
    _user, token, _ = await make_user(client, "busy")
    limits = client.server.app[RESOURCE_LIMITS]
    writes: list[str] = []
    upsert = limits._store.upsert

    async def counting_upsert(user_id: str, *args: Any) -> None:
        writes.append(user_id)
        await upsert(user_id, *args)

    monkeypatch.setattr(limits._store, "upsert", counting_upsert)
    for _ in range(5):
        resp = await client.get(f"{C}/account/whoami", headers=auth(token))
        assert resp.status == 200
    assert writes == ["@busy:test.local"]
    clock.offset += 2 * 3600 * 1000
    resp = await client.get(f"{C}/account/whoami", headers=auth(token))
    assert writes == ["@busy:test.local"] * 2
    # mau_stats_only counts without refusing anyone, past any limit.
    assert await limits.count() == 1
    status, _body = await _register_status(client, "another")
    assert status == 200


async def test_trial_days_and_reserved_addresses(
    aiohttp_client: Any, tmp_config: Any, clock: Clock
) -> None:
    config = tmp_config(
        limit_usage_by_mau=True,
        max_mau_value=1,
        mau_trial_days=2,
        admin_contact=CONTACT,
    )
    client = await aiohttp_client(create_app(config))
    limits = client.server.app[RESOURCE_LIMITS]
    _a, token_a, _ = await make_user(client, "alice")
    _b, token_b, _ = await make_user(client, "bob")
    # New accounts in their trial: neither counted nor refused.
    for token in (token_a, token_b):
        resp = await client.get(f"{C}/sync?timeout=0", headers=auth(token))
        assert resp.status == 200, await resp.text()
    assert await limits.count() == 0
    clock.offset += 3 * DAY_MS
    resp = await client.get(f"{C}/sync?timeout=0", headers=auth(token_a))
    assert resp.status == 200
    assert await limits.count() == 1
    # Trial over and the server full: bob is refused now.
    resp = await client.get(f"{C}/sync?timeout=0", headers=auth(token_b))
    assert resp.status == 403 and _is_mau_error(await resp.json())


async def test_metrics_show_the_count(aiohttp_client: Any, tmp_config: Any, clock: Clock) -> None:
    config = tmp_config(
        limit_usage_by_mau=True,
        max_mau_value=7,
        enable_metrics=True,
        listeners=[
            {"port": 0, "resources": [{"names": ["client", "federation", "keys", "media"]}]},
            {"port": 0, "type": "metrics"},
        ],
    )
    app = create_app(config)
    client = await aiohttp_client(app)
    _user, token, _ = await make_user(client, "counted")
    resp = await client.get(f"{C}/account/whoami", headers=auth(token))
    assert resp.status == 200
    await client.server.app[RESOURCE_LIMITS].refresh_gauges()
    resp = await client.get("/_synapse/metrics")
    text = await resp.text()
    assert 'synapse_admin_mau_current{server_name="test.local"} 1.0' in text, text[:500]
    assert 'synapse_admin_mau_max{server_name="test.local"} 7.0' in text
    assert (
        'synapse_admin_mau_current_mau_by_service{app_service="native",'
        'server_name="test.local"} 1.0'
    ) in text


async def _pinned_notice(client: Any, user_id: str) -> dict[str, Any] | None:
    """The content of the limit notice pinned in the user's server notices room."""
    stores = client.server.app[STORES]
    room_id = await client.server.app[SERVER_NOTICES].room_of(user_id)
    assert room_id is not None
    pin_id = await stores.current_state.get_current_state_event_id(room_id, "m.room.pinned_events")
    assert pin_id is not None
    pinned = (await stores.events.get_event(pin_id)).content["pinned"]
    if not pinned:
        return None
    (event_id,) = pinned
    content: dict[str, Any] = (await stores.events.get_event(event_id)).content
    return content


async def test_a_pinned_server_notice_tells_counted_users_the_limit_is_reached(
    database_settings: dict[str, Any], aiohttp_client: Any, tmp_config: Any, clock: Clock
) -> None:
    config = tmp_config(
        **database_settings,
        limit_usage_by_mau=True,
        max_mau_value=2,
        admin_contact=CONTACT,
        server_notices={"system_mxid_localpart": "notices"},
    )
    client = await aiohttp_client(create_app(config))
    limits = client.server.app[RESOURCE_LIMITS]
    alice, token_a, _ = await make_user(client, "alice")
    _bob, token_b, _ = await make_user(client, "bob")
    for token in (token_a, token_b):
        resp = await client.get(f"{C}/account/whoami", headers=auth(token))
        assert resp.status == 200
    assert await limits.count() == 2  # full now
    resp = await client.get(f"{C}/sync?timeout=0", headers=auth(token_a))
    assert resp.status == 200, await resp.text()
    assert await _pinned_notice(client, alice) == {
        "body": "Monthly Active User Limit Exceeded",
        "msgtype": "m.server_notice.usage_limit_reached",
        "server_notice_type": "m.server_notice.usage_limit_reached",
        "admin_contact": CONTACT,
        "limit_type": "monthly_active_user",
    }
    # Alice stays active, bob does not: after a month bob's seat is freed and the
    # notice is unpinned at alice's next sync.
    clock.offset += 29 * DAY_MS
    resp = await client.get(f"{C}/account/whoami", headers=auth(token_a))
    clock.offset += 2 * DAY_MS
    await limits.reap()
    assert await limits.count() == 1
    resp = await client.get(f"{C}/sync?timeout=0", headers=auth(token_a))
    assert resp.status == 200, await resp.text()
    assert await _pinned_notice(client, alice) is None


def test_the_settings_are_read_not_ignored(tmp_config: Any) -> None:
    config = tmp_config(
        limit_usage_by_mau=True,
        max_mau_value=5,
        mau_trial_days=1,
        mau_appservice_trial_days={"bridge": 3},
        mau_limit_reserved_threepids=[{"medium": "email", "address": "Boss@Example.COM"}],
        hs_disabled_message="",
    )
    limits = config.resource_limits
    assert (limits.max_mau_value, limits.trial_days("bridge"), limits.trial_days(None)) == (5, 3, 1)
    assert limits.reserved_threepids == (("email", "boss@example.com"),)
    assert limits.hs_disabled_message == "Homeserver is currently blocked"
    assert "limit_usage_by_mau" not in config.ignored_keys
    with pytest.raises(ConfigError) as caught:
        tmp_config(max_mau_value="ten", mau_limit_reserved_threepids=["a@b.c"])
    problems = " ".join(caught.value.problems)
    assert "max_mau_value" in problems and "mau_limit_reserved_threepids[0]" in problems


async def test_newcomers_racing_for_the_last_seats_get_exactly_those(
    database_settings: dict[str, Any], aiohttp_client: Any, tmp_config: Any
) -> None:
    """Six never-active users sync at once for the last two seats: two are counted and
    served, the other four refused, on every request after, too (the seat and the
    count it is checked against are one statement; a count read before the race must
    not let a refused newcomer through)."""
    config = tmp_config(
        **database_settings, limit_usage_by_mau=True, max_mau_value=3, admin_contact=CONTACT
    )
    client = await aiohttp_client(create_app(config))
    _first, first_token, _ = await make_user(client, "first")
    resp = await client.get(f"{C}/sync?timeout=0", headers=auth(first_token))
    assert resp.status == 200, await resp.text()
    limits = client.server.app[RESOURCE_LIMITS]
    assert await limits.count() == 1  # and cached: the race below starts from it
    tokens = [(await make_user(client, f"new{i}"))[1] for i in range(6)]

    async def sync(token: str) -> tuple[int, dict[str, Any]]:
        resp = await client.get(f"{C}/sync?timeout=0", headers=auth(token))
        return resp.status, await resp.json()

    answers = await asyncio.gather(*(sync(t) for t in tokens))
    statuses = [status for status, _ in answers]
    assert sorted(statuses) == [200, 200, 403, 403, 403, 403], answers
    assert all(_is_mau_error(body) for status, body in answers if status == 403)
    assert (
        await client.server.app[STORES].db.fetchval("SELECT COUNT(*) FROM monthly_active_users")
        == 3
    )
    # Each keeps the answer it got.
    assert [status for status, _ in [await sync(t) for t in tokens]] == statuses


async def test_a_seat_another_process_took_is_not_given_again_from_a_stale_count(
    aiohttp_client: Any, tmp_config: Any
) -> None:
    """In a worker deployment each process caches the count for a few seconds; the
    last seat taken on another process meanwhile must still refuse the next newcomer
    here (their seat was refused by the table, so the cached count is read again)."""
    config = tmp_config(limit_usage_by_mau=True, max_mau_value=2, admin_contact=CONTACT)
    client = await aiohttp_client(create_app(config))
    _first, first_token, _ = await make_user(client, "first")
    resp = await client.get(f"{C}/sync?timeout=0", headers=auth(first_token))
    assert resp.status == 200, await resp.text()
    assert await client.server.app[RESOURCE_LIMITS].count() == 1  # cached
    await client.server.app[STORES].db.execute(  # the other process's newcomer
        "INSERT INTO monthly_active_users (user_id, timestamp) VALUES ($1, $2)",
        "@elsewhere:test.local",
        int(time.time() * 1000),
    )
    _late, late_token, _ = await make_user(client, "late")
    resp = await client.get(f"{C}/sync?timeout=0", headers=auth(late_token))
    assert resp.status == 403 and _is_mau_error(await resp.json())
    resp = await client.get(f"{C}/sync?timeout=0", headers=auth(first_token))
    assert resp.status == 200, await resp.text()
