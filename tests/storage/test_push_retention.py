"""Push action retention (storage/push_retention.py): old rows go, unread counts stay
exact, on both backends."""

from __future__ import annotations

import asyncio
import random

from homeserver.storage.database import Database
from homeserver.storage.push import PushAction, PushStore
from homeserver.storage.push_retention import (
    DAY_MS,
    HIGHLIGHT_RETENTION_MS,
    PushActionRetention,
)

ROOM = "!r:example.org"
BOB = "@bob:example.org"
CAROL = "@carol:example.org"
T0 = 1_700_000_000_000


def action(
    so: int, *, user: str = BOB, thread: str = "main", highlight: bool = False
) -> PushAction:
    return PushAction(user, f"$e{so}", ROOM, so, thread, ["notify"], True, highlight, T0)


async def counts(store: PushStore, user: str = BOB) -> dict[str, tuple[int, int]]:
    """The database's counts; asserted equal to the cached ones."""
    fresh = {
        t: (c.notifications, c.highlights)
        for t, c in (await store.get_unread_counts(user, ROOM)).items()
    }
    cached = {
        t: (c.notifications, c.highlights)
        for t, c in (await store.get_current_unread_counts(user, ROOM)).items()
    }
    assert cached == fresh
    return fresh


async def row_positions(db: Database) -> list[int]:
    rows = await db.fetch("SELECT stream_ordering FROM event_push_actions ORDER BY 1")
    return [int(r[0]) for r in rows]


async def test_old_rows_are_folded_and_the_counts_do_not_move(db: Database) -> None:
    store, retention = PushStore(db), PushActionRetention(db, pause_s=0)
    await store.record_batch(
        [
            action(1),
            action(2, highlight=True),
            action(3, thread="$t"),
            action(4, user=CAROL),
            action(5, user=CAROL),
        ],
        [(CAROL, ROOM, "", 4)],  # Carol's own event at 4: she has read up to it
    )
    assert await retention.run(T0) is not None  # the mark: everything so far is "day 0"
    await store.record_batch([action(6), action(7, user=CAROL)], [])
    before_bob, before_carol = await counts(store), await counts(store, CAROL)
    assert before_bob == {"main": (3, 1), "$t": (1, 0)}
    assert before_carol == {"main": (2, 0)}

    run = await retention.run(T0 + DAY_MS)
    assert run.folded_upto == 5 and run.rows_folded == 4
    # Rows of a day ago are gone except the highlight; the counts are where they were,
    # for a cache that was filled before the run and for one filled after.
    assert await row_positions(db) == [2, 6, 7]
    assert await counts(store) == before_bob
    assert await counts(PushStore(db)) == before_bob
    assert await counts(PushStore(db), CAROL) == before_carol
    # Only Carol's unread action of day 0 (5) is in her summary; the read one is not.
    assert (
        await db.fetchval("SELECT notif_count FROM push_summaries WHERE user_id = $1", CAROL) == 1
    )

    # New actions count on top of the summaries, through the cache and without it.
    await store.record_batch([action(8, thread="$t")], [])
    assert await counts(store) == await counts(PushStore(db)) == {"main": (3, 1), "$t": (2, 0)}


async def test_read_positions_reach_the_summaries(db: Database) -> None:
    store, retention = PushStore(db), PushActionRetention(db, pause_s=0)
    await store.record_batch([action(1), action(2), action(3, thread="$t")], [])
    await retention.run(T0)
    await store.record_batch([action(10), action(11, thread="$t")], [])
    await retention.run(T0 + DAY_MS)
    assert await row_positions(db) == [10, 11]
    assert await counts(store) == {"main": (3, 0), "$t": (2, 0)}

    # A thread's receipt past the thread's summary reads it, and only that thread.
    await store.advance_read_position(BOB, ROOM, 3, "$t")
    assert await counts(store) == {"main": (3, 0), "$t": (1, 0)}
    # A receipt inside the folded range (older than a day, newer ones unread) leaves the
    # summary whole: it is never reported read while something in it may be unread.
    await store.advance_read_position(BOB, ROOM, 1)
    assert await counts(store) == {"main": (3, 0), "$t": (1, 0)}
    # The unthreaded receipt past everything folded reads every thread's summary.
    await store.advance_read_position(BOB, ROOM, 10)
    assert await counts(store) == await counts(PushStore(db)) == {"$t": (1, 0)}

    # The next run sweeps the summaries that are read, and folding into one that was
    # read starts it over.
    await store.record_batch([action(12), action(13)], [])
    run = await retention.run(T0 + DAY_MS + 1)  # the marks of T0 only: nothing new folds
    assert run.summaries_swept == 2 and run.rows_folded == 0
    assert await db.fetchval("SELECT COUNT(*) FROM push_summaries") == 0
    await retention.run(T0 + 2 * DAY_MS + 1)  # folds 10..13 (the mark of T0 + DAY_MS)
    assert await row_positions(db) == []
    summaries = await db.fetch(
        "SELECT thread_id, notif_count, upto_so FROM push_summaries ORDER BY thread_id"
    )
    assert [tuple(r) for r in summaries] == [("$t", 1, 11), ("main", 2, 13)]
    assert await counts(store) == await counts(PushStore(db)) == {"main": (2, 0), "$t": (1, 0)}


async def test_highlights_stay_a_month_then_only_their_count_does(db: Database) -> None:
    store, retention = PushStore(db), PushActionRetention(db, pause_s=0)
    await store.record_batch([action(1, highlight=True), action(2)], [])
    await retention.run(T0)
    await retention.run(T0 + DAY_MS)
    assert await row_positions(db) == [1]
    notifications = await store.get_notifications(BOB, before=None, limit=10)
    assert [n.event_id for n in notifications] == ["$e1"]
    run = await retention.run(T0 + HIGHLIGHT_RETENTION_MS)
    assert run.highlights_deleted == 1 and await row_positions(db) == []
    assert await counts(store) == await counts(PushStore(db)) == {"main": (2, 1)}
    # The marks older than a month go, but the newest of them stays (it is the
    # position of a month ago for the next run).
    marks = await db.fetch("SELECT ts FROM push_fold_marks ORDER BY ts")
    assert [int(r[0]) for r in marks] == [T0, T0 + DAY_MS, T0 + HIGHLIGHT_RETENTION_MS]


async def test_small_batches_never_split_an_event(db: Database) -> None:
    """An event's rows (one per member) go in one batch however many there are, and
    a long backlog is folded over many short transactions to the same counts."""
    store, retention = PushStore(db), PushActionRetention(db, batch_rows=3, pause_s=0)
    users = [f"@u{i}:example.org" for i in range(7)]
    batch = [action(so, user=u) for so in range(1, 6) for u in users]
    await store.record_batch(batch, [(users[0], ROOM, "", 3)])
    await retention.run(T0)
    before = {u: await counts(store, u) for u in users}
    calls = 0
    fold_batch = retention._fold_batch

    async def counting(fold_to: int) -> tuple[int, bool]:
        nonlocal calls
        calls += 1
        deleted, done = await fold_batch(fold_to)
        assert deleted % len(users) == 0  # whole events only
        return deleted, done

    retention._fold_batch = counting  # type: ignore[method-assign]
    run = await retention.run(T0 + DAY_MS)
    assert run.rows_folded == 35 and calls == 5
    assert await row_positions(db) == []
    assert {u: await counts(PushStore(db), u) for u in users} == before
    assert before[users[0]] == {"main": (2, 0)} and before[users[1]] == {"main": (5, 0)}


async def test_counts_stay_exact_while_retention_runs_among_batches_and_receipts(
    db: Database,
) -> None:
    """Batches of actions, receipts, /sync fills and folds all at once: every count,
    cached or not, equals one computed from every action ever recorded."""
    users = [f"@u{i}:example.org" for i in range(8)]
    rooms = [f"!r{i}:example.org" for i in range(2)]
    store = PushStore(db)
    store._unread.max_size = 6  # evictions too
    retention = PushActionRetention(db, batch_rows=10, pause_s=0)
    rng = random.Random(5)
    stop = asyncio.Event()
    position = 0
    recorded: list[PushAction] = []
    read: dict[tuple[str, str, str], int] = {}

    async def sender() -> None:
        nonlocal position
        for _ in range(120):
            position += 1
            so, room = position, rng.choice(rooms)
            thread = rng.choice(["main", "main", "$t"])
            batch = [
                PushAction(u, f"$e{so}", room, so, thread, ["notify"], True, rng.random() < 0.2, 0)
                for u in rng.sample(users, 5)
            ]
            await store.record_batch(batch, [])
            recorded.extend(batch)
            await asyncio.sleep(0)
            if position % 20 == 0 and position > 40:
                # The folder keeps up, whatever the machine's load: folds run among the
                # batches, not only after them (a loaded CI host once left it at 50).
                for _ in range(500):
                    if await retention.folded_upto() >= position - 40:
                        break
                    await asyncio.sleep(0.002)

    async def reader() -> None:
        while not stop.is_set():
            await store.get_current_unread_counts(rng.choice(users), rng.choice(rooms))
            await asyncio.sleep(0)

    async def receipts() -> None:
        # Receipts are for recent events, as clients send them: never inside what is
        # folded (the fold stays 20 positions behind), where counts are approximate.
        while not stop.is_set():
            key = (rng.choice(users), rng.choice(rooms), rng.choice(["", "main", "$t"]))
            upto = rng.randint(max(0, position - 8), position)
            read[key] = max(read.get(key, 0), upto)
            await store.advance_read_position(key[0], key[1], upto, key[2])
            await asyncio.sleep(0.001)

    async def folder() -> None:
        while not stop.is_set():
            if position > 20:
                await retention._fold_batch(position - 20)
            await asyncio.sleep(0.002)

    background = [asyncio.create_task(reader()) for _ in range(4)]
    background += [asyncio.create_task(receipts()), asyncio.create_task(folder())]
    try:
        await sender()
    finally:
        stop.set()
        await asyncio.gather(*background)
    assert await retention.folded_upto() > 50
    assert len(await row_positions(db)) < len(recorded)
    for user in users:
        for room in rooms:
            expected: dict[str, list[int]] = {}
            for a in recorded:
                if a.user_id != user or a.room_id != room:
                    continue
                upto = max(read.get((user, room, ""), 0), read.get((user, room, a.thread_id), 0))
                if a.stream_ordering > upto:
                    c = expected.setdefault(a.thread_id, [0, 0])
                    c[0] += 1
                    c[1] += int(a.highlight)
            want = {t: (c[0], c[1]) for t, c in expected.items()}
            for reading in (store, PushStore(db)):
                got = await reading.get_current_unread_counts(user, room)
                assert {t: (c.notifications, c.highlights) for t, c in got.items()} == want
