"""The in-memory unread counts of PushStore against the database's own count, in the
interleavings that could make them drift (both backends)."""

from __future__ import annotations

from homeserver.storage.database import Database
from homeserver.storage.push import PushAction, PushStore

ROOM = "!r:example.org"
BOB = "@bob:example.org"


def action(so: int, *, thread: str = "", highlight: bool = False) -> PushAction:
    return PushAction(BOB, f"$e{so}", ROOM, so, thread, ["notify"], True, highlight, 0)


async def fresh(store: PushStore) -> dict[str, tuple[int, int]]:
    return {
        t: (c.notifications, c.highlights)
        for t, c in (await store.get_unread_counts(BOB, ROOM)).items()
    }


async def cached(store: PushStore) -> dict[str, tuple[int, int]]:
    return {
        t: (c.notifications, c.highlights)
        for t, c in (await store.get_current_unread_counts(BOB, ROOM)).items()
    }


async def test_increments_follow_record_batch(db: Database) -> None:
    store = PushStore(db)
    assert await cached(store) == {}
    await store.record_batch([action(1), action(2, highlight=True), action(3, thread="$t")], [])
    assert await cached(store) == await fresh(store) == {"": (2, 1), "$t": (1, 0)}


async def test_a_fill_that_already_saw_the_actions_is_not_incremented_again(db: Database) -> None:
    """record_batch commits, a /sync fills the cache from the database (seeing the new
    rows), and only then does record_batch fold the same actions in: no double count."""
    store = PushStore(db)
    batch = [action(1), action(2)]
    fold = store._apply_actions
    store._apply_actions = lambda actions: None  # type: ignore[method-assign]
    await store.record_batch(batch, [])
    assert await cached(store) == {"": (2, 0)}  # the fill sees the committed rows
    fold(batch)  # the commit's own fold arrives late
    assert await cached(store) == await fresh(store) == {"": (2, 0)}


async def test_read_positions_and_threads(db: Database) -> None:
    store = PushStore(db)
    await store.record_batch([action(1), action(2), action(3, thread="$t")], [])
    assert await cached(store) == {"": (2, 0), "$t": (1, 0)}
    await store.advance_read_position(BOB, ROOM, 1)  # unthreaded: covers all threads
    assert await cached(store) == await fresh(store) == {"": (1, 0), "$t": (1, 0)}
    await store.advance_read_position(BOB, ROOM, 3, "$t")  # one thread only
    assert await cached(store) == await fresh(store) == {"": (1, 0)}
    # An action at or below a thread's read position is read even if it arrives later.
    await store.record_batch([action(4, thread="$t"), action(5)], [])
    assert await cached(store) == await fresh(store) == {"": (2, 0), "$t": (1, 0)}
    # The reader's own event: its read position moves in the same batch.
    await store.record_batch([], [(BOB, ROOM, "", 5)])
    assert await cached(store) == await fresh(store) == {}


async def test_purge_drops_cached_counts(db: Database) -> None:
    store = PushStore(db)
    await store.record_batch([action(1)], [])
    assert await cached(store) == {"": (1, 0)}
    await db.execute("DELETE FROM event_push_actions WHERE room_id = $1", ROOM)
    store.forget_room(ROOM)
    assert await cached(store) == {}


async def test_a_fill_that_read_before_a_commit_is_not_kept(db: Database) -> None:
    """A /sync fills the cache from the database, a batch of actions commits while that
    read is under way (its fold finds nothing cached to fold into), and only then
    does the fill finish: it must not be kept, or the counts miss the batch until the
    user's read marker next moves."""
    import asyncio

    store = PushStore(db)
    read_done, release = asyncio.Event(), asyncio.Event()
    count_unread = store._count_unread

    async def slow_count(user_id: str, room_id: str):  # type: ignore[no-untyped-def]
        result = await count_unread(user_id, room_id)
        read_done.set()
        await release.wait()
        return result

    store._count_unread = slow_count  # type: ignore[method-assign]
    fill = asyncio.create_task(cached(store))
    await read_done.wait()
    await store.record_batch([action(1), action(2, highlight=True)], [])
    release.set()
    assert await fill == {}  # as of its read: the batch came after
    store._count_unread = count_unread  # type: ignore[method-assign]
    assert await cached(store) == await fresh(store) == {"": (2, 1)}
