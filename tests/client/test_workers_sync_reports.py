"""Presence of users syncing on client readers (replication/sync_reports.py).

A reader tells the presence writer (the main) when a user starts and stops syncing
there, not per /sync: back-to-back long-polls cost the main nothing. And a reader
killed while its users long-poll is forgotten by the main after EXPIRE_MS: its users
go offline as on one process when every client of theirs is gone. Before, each /sync
was two requests to the main (4,000 per message for 2,000 long-pollers), and a killed
reader's `started` without its `ended` kept its users online for good.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import aiohttp
import pytest

from homeserver.ephemeral.remote_syncs import EXPIRE_MS
from tests.client.test_workers import Client, port_url, register
from tests.deployment import Deployment, running

C = "/_matrix/client/v3"


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    with running(Path(tmp_path_factory.mktemp("presence"))) as d:
        yield d


def presence_reports(deployment: Deployment) -> int:
    """How many presence reports the main has served (its request log)."""
    return deployment.logs("main").count("/_replication/presence")


async def long_polls(alice: Client, stop: asyncio.Event, count: list[int]) -> None:
    since = (await alice.ok("GET", f"{C}/sync?timeout=0"))["next_batch"]
    while not stop.is_set():
        body = await alice.ok("GET", f"{C}/sync?since={since}&timeout=200")
        since = body["next_batch"]
        count[0] += 1


async def presence_of(observer: Client, user_id: str) -> str:
    got = await observer.ok("GET", f"{C}/presence/{quote(user_id)}/status")
    return str(got["presence"])


async def test_long_polls_on_a_reader_cost_the_main_nothing_and_a_killed_reader_is_forgotten(
    deployment: Deployment, session: aiohttp.ClientSession
) -> None:
    alice_public = await register(session, deployment.url)
    bob_public = await register(session, deployment.url)
    room = (await alice_public.ok("POST", f"{C}/createRoom", {"preset": "public_chat"}))["room_id"]
    await bob_public.ok("POST", f"{C}/join/{room}", {})
    alice = Client(session, port_url(deployment, "client_reader1"), alice_public.token)
    bob = Client(session, port_url(deployment, "client_reader2"), bob_public.token)
    await alice.ok(
        "PUT", f"{C}/presence/{quote(alice_public.user_id)}/status", {"presence": "offline"}
    )

    stop, polls = asyncio.Event(), [0]
    task = asyncio.create_task(long_polls(alice, stop, polls))
    try:
        async with asyncio.timeout(10):
            while await presence_of(bob, alice_public.user_id) != "online":
                await asyncio.sleep(0.1)
        await asyncio.sleep(1)  # her reader has the online row too: nothing more to ask
        before, polls_before = presence_reports(deployment), polls[0]
        await asyncio.sleep(10)
        polls_made = polls[0] - polls_before
        assert polls_made >= 30, polls_made
        # A heartbeat (every 10 s) or two; before: two per /sync.
        assert presence_reports(deployment) - before <= 2, deployment.logs("main")[-3000:]

        # The reader dies under her long-poll: she is offline once the main has not
        # heard from it for EXPIRE_MS (and her sync timeout is up), seen on the other.
        deployment.kill("client_reader1")
        killed = time.monotonic()
        async with asyncio.timeout(EXPIRE_MS / 1000 + 25):
            while await presence_of(bob, alice_public.user_id) != "offline":
                await asyncio.sleep(0.5)
        assert time.monotonic() - killed < EXPIRE_MS / 1000 + 10
    finally:
        stop.set()
        await asyncio.gather(task, return_exceptions=True)
        await asyncio.to_thread(deployment.start_process, "client_reader1")
    # Syncing there again brings her back.
    await alice.ok("GET", f"{C}/sync?timeout=0")
    async with asyncio.timeout(10):
        while await presence_of(bob, alice_public.user_id) != "online":
            await asyncio.sleep(0.1)
