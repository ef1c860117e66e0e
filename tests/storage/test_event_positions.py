"""Event positions claimed by several processes at once (storage/event_positions.py), on
a real PostgreSQL: two databases opened on one schema stand for two event persisters.

What must hold: their event transactions run side by side (neither waits for the
other's), positions never collide, and the visible position never passes a position
still being written, so a reader that follows it sees every event exactly once, in
order; a writer that dies or rolls back holds nothing up."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from homeserver.storage import PersistItem, Stores, open_database, open_stores
from homeserver.storage.event_positions import ConcurrentEventPositions
from homeserver.storage.room_purge import RoomPurgeStore

from .conftest import POSTGRES_SKIP_REASON, drop_postgres_schema, make_event, postgres_test_config


@pytest.fixture
async def two_writers() -> AsyncIterator[tuple[Stores, Stores, dict[str, Any]]]:
    config = postgres_test_config()
    if config is None:
        pytest.skip(POSTGRES_SKIP_REASON)
    first = await open_database(config, migrate=True)
    second = await open_database(config, migrate=False)
    locks = [first.share_writes(), second.share_writes()]  # type: ignore[attr-defined]
    try:
        yield await open_stores(first), await open_stores(second), config
    finally:
        for lock in locks:
            await lock.close()
        await first.close()
        await second.close()
        await drop_postgres_schema(config)


def _concurrent(*stores: Stores) -> list[ConcurrentEventPositions]:
    out = []
    for s in stores:
        s.events.concurrent_positions = ConcurrentEventPositions(s.db, s.db.schema)  # type: ignore[attr-defined]
        out.append(s.events.concurrent_positions)
    return out


def _hold_after_claim(positions: ConcurrentEventPositions) -> tuple[asyncio.Event, asyncio.Event]:
    """Make the next transactions of `positions` stop right after their claim: the
    first event is set when one has claimed, the second lets them go on."""
    claim, claimed, release = positions.claim, asyncio.Event(), asyncio.Event()

    async def held_claim(conn: Any, count: int) -> int:
        first = await claim(conn, count)
        claimed.set()
        await release.wait()
        return first

    positions.claim = held_claim  # type: ignore[method-assign]
    return claimed, release


async def test_a_lower_claim_in_flight_holds_the_visible_position_back(
    two_writers: tuple[Stores, Stores, dict[str, Any]],
) -> None:
    a, b, _ = two_writers
    pa, pb = _concurrent(a, b)
    for room in ("!a:example.org", "!b:example.org"):
        await a.rooms.store_room(room, "10", "@alice:example.org")
    assert await pa.visible() == 0
    claim, (claimed, release) = pa.claim, _hold_after_claim(pa)
    slow = asyncio.create_task(
        a.events.persist_events("!a:example.org", _chain("!a:example.org", "a", 2))
    )
    await claimed.wait()
    async with asyncio.timeout(5):  # the other process does not wait for it
        assert await b.events.persist_events(
            "!b:example.org", _chain("!b:example.org", "b", 1)
        ) == [3]
    assert await pb.visible() == 0  # 3 is stored, but 1 and 2 may still come
    release.set()
    assert await slow == [1, 2]
    assert await pb.visible() == 3

    async def failing_claim(conn: Any, count: int) -> int:
        await claim(conn, count)
        raise RuntimeError("rolled back")

    pa.claim = failing_claim  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        await a.events.persist_events("!a:example.org", _chain("!a:example.org", "c", 1))
    assert await pb.visible() == 3  # position 4 is a gap, never a wait
    assert await b.events.persist_events("!b:example.org", _chain("!b:example.org", "d", 1)) == [5]
    assert await pa.visible() == 5


async def test_a_killed_writers_claim_holds_nothing_up(
    two_writers: tuple[Stores, Stores, dict[str, Any]],
) -> None:
    a, _, config = two_writers
    (positions,) = _concurrent(a)
    await a.rooms.store_room("!a:example.org", "10", "@alice:example.org")
    args = config["args"]
    raw = await asyncpg.connect(args["dsn"], server_settings={"search_path": args["schema"]})
    try:
        await raw.execute("BEGIN")
        claim = "SELECT claim_event_positions(1, $1, $2)"
        assert await raw.fetchval(claim, positions._guard, positions._flight) == 1
        assert await a.events.persist_events(
            "!a:example.org", _chain("!a:example.org", "a", 1)
        ) == [2]
        assert await positions.visible() == 0
    finally:
        raw.terminate()  # what a SIGKILLed process's connection does
    async with asyncio.timeout(5):
        while await positions.visible() < 2:
            await asyncio.sleep(0.02)


async def test_an_event_two_processes_store_at_once_is_stored_once(
    two_writers: tuple[Stores, Stores, dict[str, Any]],
) -> None:
    """An out-of-band invite reaching two processes at once: one transaction's insert
    meets the other's row, fails as a duplicate, and is written again, finding the
    event stored (before, the write lock made it find it at once)."""
    a, b, _ = two_writers
    pa, _ = _concurrent(a, b)
    await a.rooms.store_room("!a:example.org", "10", "@alice:example.org")
    claimed, release = _hold_after_claim(pa)
    invite = _chain("!a:example.org", "i", 1)
    first = asyncio.create_task(a.events.persist_events("!a:example.org", invite))
    await claimed.wait()
    second = asyncio.create_task(b.events.persist_events("!a:example.org", invite))
    async with asyncio.timeout(5):  # b claims after a, stores it and commits
        while await b.events.get_stream_ordering(invite[0].event.event_id) is None:
            await asyncio.sleep(0.01)
    release.set()  # a's insert now meets b's row
    assert await first == await second == [2]
    count = "SELECT COUNT(*) FROM events WHERE event_id = $1"
    assert await a.db.fetchval(count, invite[0].event.event_id) == 1
    assert await a.events.get_current_stream_position() == 2  # a's claim of 1: a gap


async def test_claims_start_above_positions_a_single_process_allocated(
    two_writers: tuple[Stores, Stores, dict[str, Any]],
) -> None:
    a, b, _ = two_writers
    room = "!single:example.org"
    await a.rooms.store_room(room, "10", "@alice:example.org")
    assert await a.events.persist_events(room, _chain(room, "s", 3)) == [1, 2, 3]
    _concurrent(a, b)
    assert await b.events.get_current_stream_position() == 3
    assert await b.events.persist_events(room, _chain(room, "t", 2)) == [4, 5]


async def test_positions_a_purge_deleted_are_never_claimed_again(
    two_writers: tuple[Stores, Stores, dict[str, Any]],
) -> None:
    """A room deletion removed the newest events of a single process's database, whose
    tokens clients hold: when persisters take over, neither the current position nor
    their claims go back below them (stream_marks.py)."""
    a, b, _ = two_writers
    for room in ("!gone:example.org", "!kept:example.org"):
        await a.rooms.store_room(room, "10", "@alice:example.org")
    assert await a.events.persist_events(
        "!kept:example.org", _chain("!kept:example.org", "k", 1)
    ) == [1]
    gone = _chain("!gone:example.org", "g", 3)
    assert await a.events.persist_events("!gone:example.org", gone) == [2, 3, 4]
    await RoomPurgeStore(a.db).purge_room("!gone:example.org")
    assert await a.events.get_current_stream_position() == 4  # one process
    _concurrent(a, b)
    assert await b.events.get_current_stream_position() == 4  # persisters
    assert await b.events.persist_events(
        "!kept:example.org", _chain("!kept:example.org", "l", 1)
    ) == [5]


def _chain(room_id: str, tag: str, n: int) -> list[PersistItem]:
    return [
        PersistItem(
            make_event(
                f"${tag}{i}{room_id[1:6]}",
                room_id=room_id,
                prev=[f"${tag}{i - 1}{room_id[1:6]}"] if i else [],
                depth=i + 1,
                content={"body": f"{tag} {i}"},
            )
        )
        for i in range(n)
    ]


async def test_a_follower_of_the_visible_position_sees_every_event_once_in_order(
    two_writers: tuple[Stores, Stores, dict[str, Any]],
) -> None:
    """Eight writers in two processes, each transaction held open a few random
    milliseconds after its claim (so higher positions often commit first), and a
    follower reading (last, visible] as fast as it can: it sees every event, once, in
    stream order. A follower of the newest stored position (what one process may
    announce) is run beside it as the control: it skips events."""
    a, b, _ = two_writers
    for positions in _concurrent(a, b):
        claim = positions.claim

        async def slow_claim(conn: Any, count: int, claim: Any = claim) -> int:
            first = await claim(conn, count)
            await asyncio.sleep(random.uniform(0, 0.004))
            return first

        positions.claim = slow_claim  # type: ignore[method-assign]
    rooms = [f"!w{i}:example.org" for i in range(8)]
    for room in rooms:
        await a.rooms.store_room(room, "10", "@alice:example.org")
    written: list[int] = []
    done = asyncio.Event()

    async def writer(stores: Stores, room: str) -> None:
        items = _chain(room, "m", 40)
        for i in range(0, len(items), 2):
            written.extend(await stores.events.persist_events(room, items[i : i + 2]))

    async def follow(newest: Any) -> list[int]:
        seen: list[int] = []
        last = 0
        while True:
            finished = done.is_set()
            upto = await newest()
            rows = await a.events.read_stream(last, upto, 10_000)
            seen.extend(position for _, position, _ in rows)
            last = max(last, upto)
            if finished:
                return seen

    async def stored_max() -> int:
        return int(await a.db.fetchval("SELECT MAX(stream_ordering) FROM events") or 0)

    followers = [
        asyncio.create_task(follow(a.events.get_current_stream_position)),
        asyncio.create_task(follow(stored_max)),
    ]
    await asyncio.gather(*(writer(a if i % 2 else b, room) for i, room in enumerate(rooms)))
    done.set()
    seen, control = await asyncio.gather(*followers)
    assert len(written) == len(set(written)) == 8 * 40
    assert seen == sorted(written)
    assert len(control) < len(written), "no position committed out of order: nothing tested"
