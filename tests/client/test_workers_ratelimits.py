"""Rate limits hold for the deployment, not per process (issue 16).

A user's sends go to the event persister of each room, so with per-process buckets a
user writing into rooms on both persisters of the README's deployment got the
`rc_message` budget twice (and an invitee the `rc_invites` budget twice): every
process charges its own buckets and tells the others (homeserver/replication/
ratelimits.py). A real deployment (tests/deployment.py FULL_LAYOUT) with limits on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from homeserver.__main__ import registration_mac
from tests.client.test_event_persisters import persister_of, rooms_on_both_persisters
from tests.client.test_workers import Client, register
from tests.deployment import FULL_LAYOUT, Deployment, require_parts

C = "/_matrix/client/v3"
SECRET = "ratelimits-test-secret"
MESSAGES = 6  # rc_message burst; nothing refills within the test
INVITES = 3  # rc_invites per_user burst
# Between two requests: the charge's Redis hop (a burst inside those few milliseconds
# may pass on both processes, as the module says).
SETTLE_S = 0.05


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    require_parts()
    d = Deployment(
        Path(tmp_path_factory.mktemp("ratelimits")),
        **FULL_LAYOUT,
        overrides={
            "rc_enabled": True,
            "rc_registration": {"per_second": 10, "burst_count": 20},
            "rc_message": {"per_second": 0.0001, "burst_count": MESSAGES},
            "rc_invites": {"per_user": {"per_second": 0.0001, "burst_count": INVITES}},
            "registration_shared_secret": SECRET,
        },
    ).start()
    try:
        yield d
    finally:
        d.stop()


async def test_a_users_sends_across_both_persisters_share_one_budget(
    deployment: Deployment, session: aiohttp.ClientSession
) -> None:
    alice = await register(session, deployment.url)
    rooms = await rooms_on_both_persisters(alice, 2)
    statuses, errcodes, writers = [], [], []
    for i in range(MESSAGES + 4):
        room = rooms[i % len(rooms)]
        status, body = await alice.call(
            "PUT", f"{C}/rooms/{room}/send/m.room.message/t{i}", {"msgtype": "m.text", "body": "x"}
        )
        statuses.append(status)
        writers.append(persister_of(room))
        if status != 200:
            errcodes.append((body["errcode"], body["retry_after_ms"] > 0))
        await asyncio.sleep(SETTLE_S)
    assert set(writers) == {"event_persister1", "event_persister2"}
    # Without sharing: each persister granted MESSAGES (up to twice as many 200s).
    assert statuses == [200] * MESSAGES + [429] * 4, list(zip(writers, statuses, strict=True))
    assert errcodes == [("M_LIMIT_EXCEEDED", True)] * 4


async def test_invites_to_one_user_across_both_persisters_share_one_budget(
    deployment: Deployment, session: aiohttp.ClientSession
) -> None:
    inviters = [await register(session, deployment.url) for _ in range(2)]
    bob = await register(session, deployment.url)
    rooms = []
    for inviter in inviters:  # per room and per inviter budgets stay out of the way
        rooms += [(inviter, r) for r in await rooms_on_both_persisters(inviter, 3)]
    statuses = []
    for inviter, room in rooms[: INVITES + 2]:
        status, _ = await inviter.call("POST", f"{C}/rooms/{room}/invite", {"user_id": bob.user_id})
        statuses.append(status)
        await asyncio.sleep(SETTLE_S)
    assert statuses == [200] * INVITES + [429] * 2
    # Another user's budget is untouched.
    carol = await register(session, deployment.url)
    inviter, room = rooms[-1]
    status, body = await inviter.call(
        "POST", f"{C}/rooms/{room}/invite", {"user_id": carol.user_id}
    )
    assert status == 200, body


async def register_admin(session: aiohttp.ClientSession, base: str) -> Client:
    """An admin, made as an operator makes one (the shared-secret register API)."""
    url = f"{base}/_synapse/admin/v1/register"
    async with session.get(url) as resp:
        nonce = (await resp.json())["nonce"]
    mac = registration_mac(SECRET, nonce, "root", "pw", True)
    body = {"nonce": nonce, "username": "root", "password": "pw", "admin": True, "mac": mac}
    async with session.post(url, json=body) as resp:
        data = await resp.json()
        assert resp.status == 200, data
    return Client(session, base, data["access_token"])


async def test_an_admins_override_reaches_every_persister(
    deployment: Deployment, session: aiohttp.ClientSession
) -> None:
    """The admin API (the main) stores a user's override; the persisters that check
    the user's sends apply it at once, and its removal too."""
    admin = await register_admin(session, deployment.url)
    bot = await register(session, deployment.url)
    rooms = await rooms_on_both_persisters(bot, 2)
    path = f"/_synapse/admin/v1/users/{bot.user_id}/override_ratelimit"
    await admin.ok("POST", path, {"messages_per_second": 0, "burst_count": 0})
    await asyncio.sleep(SETTLE_S)
    statuses = []
    for i in range(2 * MESSAGES):
        status, _ = await bot.call(
            "PUT", f"{C}/rooms/{rooms[i % 2]}/send/m.room.message/o{i}", {"msgtype": "m.text"}
        )
        statuses.append(status)
    assert statuses == [200] * (2 * MESSAGES)  # never limited (Synapse's 0 per second)
    await admin.ok("DELETE", path)
    await asyncio.sleep(SETTLE_S)
    statuses = []
    for i in range(MESSAGES + 2):
        status, _ = await bot.call(
            "PUT", f"{C}/rooms/{rooms[i % 2]}/send/m.room.message/d{i}", {"msgtype": "m.text"}
        )
        statuses.append(status)
        await asyncio.sleep(SETTLE_S)
    assert statuses == [200] * MESSAGES + [429] * 2
