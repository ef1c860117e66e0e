"""Two worker deployments federating with each other (issue 16), each the README's
seven processes behind its own nginx (tests/deployment.py FULL_LAYOUT): federation
arrives at a federation inbound worker and leaves from a federation sender, room
writes go to event persisters, the admin API is the main's.

What only a deployment can get wrong: the main answering the admin API is not the
process delivering to the destination, so its view of the backoff and its
reset_connection must reach the federation sender worker (reset_connection did
nothing there until this test); and a whole deployment stopped and started again on
its data picks up where it left off.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.federation.multiserver import SLOW_BACKOFF, LoopbackServer, eventually, started


@pytest.fixture
async def deployments(tmp_path: Path) -> AsyncIterator[tuple[LoopbackServer, LoopbackServer]]:
    a = LoopbackServer(tmp_path, "a", deployment=True, federation=SLOW_BACKOFF)
    b = LoopbackServer(tmp_path, "b", deployment=True)
    async with started(a, b) as pair:
        yield pair


async def _texts(server: LoopbackServer, user: str, room_id: str) -> list[str]:
    """The room's message bodies in order, as a client reads them back (/messages)."""
    data = await server.ok("GET", f"/rooms/{room_id}/messages", user, dir="b", limit="100")
    return [
        e["content"].get("body") for e in reversed(data["chunk"]) if e["type"] == "m.room.message"
    ]


async def test_a_stopped_deployment_gets_everything_after_an_admin_reset(
    deployments: Any,
) -> None:
    a, b = deployments
    admin = await a.register_admin("admin")
    alice = await a.register("alice")
    bob = await b.register("bob")
    room_id = await a.create_room(alice)
    await b.join(bob, room_id, [a.name])

    async def both_have(texts: list[str]) -> bool:
        return await _texts(a, alice, room_id) == texts and await _texts(b, bob, room_id) == texts

    await a.send_text(alice, room_id, "hello b")
    assert await eventually(lambda: both_have(["hello b"]), timeout=30)
    await b.send_text(bob, room_id, "hello a")  # after it: one order on both sides
    assert await eventually(lambda: both_have(["hello b", "hello a"]), timeout=30)

    # B goes down whole (every process, nginx, Redis); A's users go on talking.
    await b.stop()
    for i in range(3):
        await a.send_text(alice, room_id, f"while down {i}")

    async def backing_off() -> dict[str, Any] | None:
        status, row = await a.admin(admin, "GET", f"/v1/federation/destinations/{b.name}")
        return row if status == 200 and row["failure_ts"] is not None else None

    row = await eventually(backing_off, timeout=30)
    assert row["retry_interval"] == 600_000  # as configured: the next try in 10 minutes

    # B is back on its data. A would wait ten minutes; its operator resets the
    # connection on the main, and the federation sender worker delivers at once.
    await b.start()
    status, body = await a.admin(
        admin, "POST", f"/v1/federation/destinations/{b.name}/reset_connection", {}
    )
    assert (status, body) == (200, {})
    everything = ["hello b", "hello a", "while down 0", "while down 1", "while down 2"]

    async def b_has_everything_once() -> bool:
        return await _texts(b, bob, room_id) == everything

    assert await eventually(b_has_everything_once, timeout=30)
    status, row = await a.admin(admin, "GET", f"/v1/federation/destinations/{b.name}")
    assert row["failure_ts"] is None

    # And the conversation goes on both ways.
    await b.send_text(bob, room_id, "back again")
    assert await eventually(lambda: both_have([*everything, "back again"]), timeout=30)
