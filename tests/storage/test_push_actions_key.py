"""event_push_actions is keyed by (user, stream ordering) since migration 0054: rows of a
batch append at the end of each receiver's range instead of landing on a page each
(random event IDs). Existing rows are carried over; recording an event's actions twice
still stores them once; the per-user reads are unchanged. Both backends."""

from __future__ import annotations

from homeserver.storage.database import Database
from homeserver.storage.migrate import discover_migrations, run_migrations
from homeserver.storage.push import PushAction, PushStore

ROOM = "!r:example.org"
BOB = "@bob:example.org"
CAROL = "@carol:example.org"
T0 = 1_700_000_000_000
OLD_INSERT = (
    "INSERT INTO event_push_actions (user_id, event_id, room_id, stream_ordering,"
    " thread_id, actions, notif, highlight, ts) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
)


def action(so: int, user: str = BOB, *, highlight: bool = False) -> PushAction:
    return PushAction(user, f"$e{so}", ROOM, so, "main", ["notify"], True, highlight, T0 + so)


async def test_rows_survive_the_new_key_and_duplicates_stay_out(unmigrated_db: Database) -> None:
    db = unmigrated_db
    before = [m for m in discover_migrations() if m.version < 54]
    await run_migrations(db, before)
    old_rows = [
        (BOB, "$e1", ROOM, 1, "main", '["notify"]', True, False, T0 + 1),
        (BOB, "$e2", ROOM, 2, "main", '["notify",{"set_tweak":"highlight"}]', True, True, T0),
        (CAROL, "$e1", ROOM, 1, "$thread", '["notify"]', True, False, T0 + 1),
    ]
    await db.executemany(OLD_INSERT, old_rows)
    assert await run_migrations(db) == [m.version for m in discover_migrations()][len(before) :]

    rows = await db.fetch(
        "SELECT user_id, event_id, room_id, stream_ordering, thread_id, actions, notif,"
        " highlight, ts FROM event_push_actions ORDER BY user_id, stream_ordering"
    )
    assert [tuple(r) for r in rows] == old_rows  # (SQLite's 1 == True)
    (table,) = [t for t in await db.describe_schema() if t.name == "event_push_actions"]
    assert table.primary_key == ("user_id", "stream_ordering")

    store = PushStore(db)
    # The generator re-running over events it already recorded (a restart): no new rows.
    await store.record_batch([action(2), action(3), action(3, CAROL)], [])
    await store.record_batch([action(3), action(4, highlight=True)], [])
    assert await db.fetchval("SELECT COUNT(*) FROM event_push_actions") == 6
    notified = await store.get_notifications(BOB, before=None, limit=10)
    assert [(n.event_id, n.highlight) for n in notified] == [
        ("$e4", True),
        ("$e3", False),
        ("$e2", True),
        ("$e1", False),
    ]
    highlights = await store.get_notifications(BOB, before=4, limit=10, only_highlight=True)
    assert [n.event_id for n in highlights] == ["$e2"]
    counts = await store.get_unread_counts(CAROL, ROOM)
    assert {t: c.notifications for t, c in counts.items()} == {"$thread": 1, "main": 1}


async def test_a_late_batch_records_and_returns_only_what_is_new(db: Database) -> None:
    """A retry or a catch-up (push/actions.py) may record events another process records
    at the same time: only the rows this call inserted come back (they alone are pushed),
    over several statements; the recorded progress never moves backwards."""
    store = PushStore(db)
    users = [f"@u{i}:example.org" for i in range(150)]
    first = [PushAction(u, "$e1", ROOM, 1, "main", ["notify"], True, False, T0) for u in users]
    recorded = await store.record_batch(first[:40], [], ("persister1", 1), late=True)
    assert recorded == first[:40]
    again = [*first, action(2)]
    recorded = await store.record_batch(again, [], ("persister1", 2), late=True)
    assert recorded == [*first[40:], action(2)]  # 111 rows: two statements
    assert await store.record_batch(again, [], ("persister1", 0), late=True) == []
    assert await db.fetchval("SELECT COUNT(*) FROM event_push_actions") == 151
    assert await store.action_progress("persister1") == 2
    assert await store.action_progress("persister2") is None
    assert await store.positions_with_actions([1, 2, 3]) == {1, 2}
    # In order, as every batch is recorded: everything given is returned.
    assert await store.record_batch([action(3)], [], None) == [action(3)]
