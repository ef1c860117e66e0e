"""Password guessing across the client readers that serve logins (`stream_writers:
{device_lists: [...]}`).

The README's seven-process deployment (tests/deployment.py FULL_LAYOUT) whose two
client readers write device lists, and so serve `POST /login`, with Synapse's
`rc_login.failed_attempts` of 2 per account. An attacker alternating between the two
readers (as nginx does with requests that carry no access token) gets the same
number of guesses as against one process, give or take one: charges are shared over
Redis, and a wrong password's charge is on Redis before its 403 is answered, so the
next guess on the other reader is nearly always charged for it (the other reader may
still read that guess's request before the Redis message: one guess more, never a
budget per process). The right password after the guesses is refused 429 too.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.client.test_workers import port_url, register
from tests.deployment import FULL_LAYOUT, Deployment, running

READERS = ("client_reader1", "client_reader2")
ACCOUNTS = 20


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    with running(
        Path(tmp_path_factory.mktemp("login-limits")),
        **FULL_LAYOUT,
        overrides={
            "stream_writers": {"device_lists": list(READERS)},
            "rc_enabled": True,
            "rc_login": {
                "address": {"per_second": 1000, "burst_count": 1000},
                "account": {"per_second": 1000, "burst_count": 1000},
                "failed_attempts": {"per_second": 0.001, "burst_count": 2},
            },
            "rc_registration": {"per_second": 1000, "burst_count": 1000},
        },
    ) as d:
        yield d


async def test_guessing_on_both_readers_gets_no_more_tries(
    deployment: Deployment, session: aiohttp.ClientSession
) -> None:
    readers = [port_url(deployment, r) for r in READERS]
    seen: list[list[int]] = []
    for _ in range(ACCOUNTS):
        victim = await register(session, deployment.url)
        statuses = []
        guesses = ["guess1", "guess2", "guess3", "guess4", "guess5", "pw"]
        for attempt, password in enumerate(guesses):
            body = {
                "type": "m.login.password",
                "identifier": {"type": "m.id.user", "user": victim.user_id},
                "password": password,
            }
            base = readers[attempt % 2]
            async with session.post(f"{base}/_matrix/client/v3/login", json=body) as resp:
                statuses.append(resp.status)
        seen.append(statuses)
    for statuses in seen:
        tried = statuses.count(403)  # guesses the server checked (each was wrong)
        assert statuses[:2] == [403, 403] and tried <= 3, seen
        assert statuses[tried:] == [429] * (len(statuses) - tried), seen
    exact = sum(statuses.count(403) == 2 for statuses in seen)
    # The race is the rare exception: measured 40 of 40 exact twice, against 21 and 34
    # of 40 when the 403 did not wait for the charge to be on Redis.
    assert exact >= ACCOUNTS - 2, seen
