"""Typing notifications across a restart of the process that keeps them (the main).

Typing lives in the main's memory and its positions are not stored; the client readers
keep serving /sync from the positions they replicated. A restarted main must not number
its typing changes below what the readers (and their clients' tokens) already passed:
else every typing notification after the restart is older than the client's token and
never shown (until the main's counter caught up with the old one). And who was typing
when the main died must not stay shown by the readers beyond the typing's timeout.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.client.test_workers import Client, port_url, register
from tests.deployment import Deployment, running

C = "/_matrix/client/v3"
CHANGES_BEFORE = 6  # typing changes before the restart: the readers' position


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    with running(Path(tmp_path_factory.mktemp("typing"))) as d:
        yield d


async def _typing_seen(bob: Client, room: str, since: str, typer: str | None) -> str:
    """Bob's incremental syncs on his reader until `typer` is shown typing in `room`
    (None: until nobody is); the next_batch of that sync."""
    async with asyncio.timeout(15):
        while True:
            body = await bob.ok("GET", f"{C}/sync?since={since}&timeout=1000")
            since = body["next_batch"]
            room_data = body.get("rooms", {}).get("join", {}).get(room, {})
            for event in room_data.get("ephemeral", {}).get("events", []):
                if event["type"] != "m.typing":
                    continue
                typers = event["content"]["user_ids"]
                if typer in typers if typer is not None else typers == []:
                    return since


async def test_typing_after_a_main_restart_reaches_the_readers_clients(
    deployment: Deployment, session: aiohttp.ClientSession
) -> None:
    alice = await register(session, deployment.url)
    bob_on_nginx = await register(session, deployment.url)
    room = (await alice.ok("POST", f"{C}/createRoom", {"preset": "public_chat"}))["room_id"]
    await bob_on_nginx.ok("POST", f"{C}/join/{room}", {})
    bob = Client(session, port_url(deployment, "client_reader1"), bob_on_nginx.token)
    typing = f"{C}/rooms/{room}/typing/{alice.user_id}"
    since = (await bob.ok("GET", f"{C}/sync?timeout=0"))["next_batch"]
    for i in range(CHANGES_BEFORE):
        await alice.ok("PUT", typing, {"typing": i % 2 == 0, "timeout": 30_000})
    await alice.ok("PUT", typing, {"typing": True, "timeout": 2_000})
    since = await _typing_seen(bob, room, since, alice.user_id)

    # Alice is typing when the main dies: the readers end it when its timeout is up
    # (their own timers; before, they waited for the main's word, which never came).
    deployment.kill("main")
    await asyncio.to_thread(deployment.start_process, "main")
    since = await _typing_seen(bob, room, since, None)
    await alice.ok("PUT", typing, {"typing": True, "timeout": 30_000})
    await _typing_seen(bob, room, since, alice.user_id)
