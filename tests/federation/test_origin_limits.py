"""rc_federation (Synapse's): per-origin limits on inbound federation requests, as a
flooding server meets them. Signed fake peers ask for a profile whose lookup is made
slow: one origin's requests run `concurrent` at a time, past `reject_limit` in flight
it is refused with 429 M_LIMIT_EXCEEDED, past `sleep_limit` in the window each waits;
another origin is served meanwhile; unsigned requests are refused before any of this."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from signedjson.key import generate_signing_key

from federation.appkeys import TRANSACTIONS
from homeserver.app import create_app
from homeserver.appstate import STORES
from tests.client.helpers import deployed
from tests.federation.inbound_helpers import fed, seed_remote_key

PROFILE = "/_matrix/federation/v1/query/profile?user_id=@bob:test.local"
LIMITS = {"window_size": 1000, "sleep_limit": 100, "sleep_delay": 300, "reject_limit": 3}
OTHER = "other.test"
OTHER_KEY = generate_signing_key("o1")


async def _server(aiohttp_client: Any, tmp_config: Any, slow: bool = True, **limits: Any) -> Any:
    config = tmp_config(rc_enabled=True, rc_federation={**LIMITS, **limits})
    client = await aiohttp_client(create_app(config))
    await seed_remote_key(client)
    await seed_remote_key(client, OTHER, OTHER_KEY)
    accounts = client.app[STORES].accounts
    await accounts.create_user("@bob:test.local", None)
    if not slow:
        return client
    if deployed(client):
        pytest.skip("slows a lookup in this process's stores, not in a deployment's")
    real = accounts.get_user

    async def slow_get_user(user_id: str) -> Any:  # holds the request's slot a while
        await asyncio.sleep(0.3)
        return await real(user_id)

    accounts.get_user = slow_get_user  # type: ignore[method-assign]
    return client


async def test_a_flooding_origin_waits_its_turn_then_is_refused(
    aiohttp_client: Any, tmp_config: Any
) -> None:
    client = await _server(aiohttp_client, tmp_config, concurrent=1)
    started = time.monotonic()
    flood = [asyncio.create_task(fed(client, "GET", PROFILE)) for _ in range(3)]
    await asyncio.sleep(0.05)
    status, body = await fed(client, "GET", PROFILE)  # the fourth in flight: refused
    assert (status, body["errcode"]) == (429, "M_LIMIT_EXCEEDED")
    assert body["retry_after_ms"] > 0
    # Meanwhile another server is served at once (its own allowance).
    other_started = time.monotonic()
    status, _ = await fed(client, "GET", PROFILE, origin=OTHER, key=OTHER_KEY)
    assert status == 200 and time.monotonic() - other_started < 0.6
    results = await asyncio.gather(*flood)
    assert [s for s, _ in results] == [200, 200, 200]
    assert time.monotonic() - started >= 3 * 0.3 * 0.95  # one at a time


async def test_past_the_sleep_limit_requests_are_slowed(
    aiohttp_client: Any, tmp_config: Any
) -> None:
    client = await _server(aiohttp_client, tmp_config, sleep_limit=2, window_size=5000)
    timings = []
    for _ in range(4):
        t = time.monotonic()
        status, _ = await fed(client, "GET", PROFILE)
        assert status == 200
        timings.append(time.monotonic() - t)
    # Each request takes the lookup's 0.3 s; the third and fourth within the window
    # each waited the sleep delay (0.3 s) first.
    assert timings[2] >= 0.6 * 0.95 and timings[3] >= 0.6 * 0.95, timings
    assert timings[0] < 0.55, timings


async def test_unsigned_requests_are_refused_first(aiohttp_client: Any, tmp_config: Any) -> None:
    client = await _server(aiohttp_client, tmp_config, slow=False, concurrent=1)
    status, body = await fed(client, "GET", PROFILE, sign=False)
    assert (status, body["errcode"]) == (401, "M_UNAUTHORIZED")


async def test_transactions_still_processing_bound_the_next(
    aiohttp_client: Any, tmp_config: Any
) -> None:
    """A peer whose transactions outlast the answer deadline (work goes on in the
    background) may have at most three of them unfinished: the next is a 429 until
    one finishes, instead of work piling up."""
    client = await aiohttp_client(create_app(tmp_config()))
    await seed_remote_key(client)
    receiver = client.app[TRANSACTIONS]
    release = asyncio.Event()

    async def slow_edus(origin: str, edus: list[Any]) -> None:
        await release.wait()

    receiver._edus = slow_edus  # the EDUs of every transaction take until released
    receiver._deadline_s = 0.05  # answered at once, the work goes on

    async def send(txn: str) -> tuple[int, Any]:
        return await fed(client, "PUT", f"/_matrix/federation/v1/send/{txn}", {"pdus": []})

    assert [(await send(f"t{i}"))[0] for i in range(3)] == [200, 200, 200]
    status, body = await send("t3")
    assert (status, body["errcode"]) == (429, "M_LIMIT_EXCEEDED")
    release.set()
    for _ in range(50):
        status, body = await send("t4")
        if status == 200:
            break
        await asyncio.sleep(0.02)
    assert status == 200, body
