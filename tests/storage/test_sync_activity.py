"""The in-memory activity window gives the same /sync answers as the database.

Incremental syncs ask `RoomActivity` which rooms changed and what a room's newest events
are, and fall back to the database only when it answers None. A wrong non-None answer is
a silently lost message, so random histories (many rooms, small tails and windows so
that evictions happen constantly, servers restarted mid-history) are persisted in a real
store and every question a sync could ask is put to both.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from homeserver.storage import PersistItem, open_database, open_stores
from homeserver.storage.sync_queries import SyncQueryStore
from homeserver.sync.activity import RoomActivity

from .conftest import RV, make_event

# One step of a history: (room index, is a member event, user index, restart before it).
steps = st.lists(
    st.tuples(
        st.integers(0, 7),
        st.booleans(),
        st.integers(0, 3),
        st.integers(0, 30).map(lambda n: n == 0),
    ),
    min_size=1,
    max_size=60,
)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(history=steps, tail=st.integers(1, 4), tails=st.integers(1, 4), window=st.integers(2, 30))
def test_activity_agrees_with_database(
    tmp_path: Path, history: list[tuple[int, bool, int, bool]], tail: int, tails: int, window: int
) -> None:
    asyncio.run(_check(tmp_path, history, tail, tails, window))


async def _check(
    tmp_path: Path, history: list[tuple[int, bool, int, bool]], tail: int, tails: int, window: int
) -> None:
    path = tmp_path / f"activity-{abs(hash((tuple(history), tail, tails, window)))}.db"
    db = await open_database({"name": "sqlite3", "args": {"database": str(path)}})
    try:
        stores = await open_stores(db)
        queries = SyncQueryStore(db)
        rooms = [f"!r{i}:example.org" for i in range(8)]
        users = [f"@u{i}:example.org" for i in range(4)]
        for room in rooms:
            await stores.rooms.store_room(room, RV, users[0])
        activity = RoomActivity(0, window, room_tail=tail, max_room_tails=tails)
        positions: list[int] = [0]
        for n, (room_i, is_member, user_i, restart) in enumerate(history):
            if restart:  # a new process starts from the stored maximum
                activity = RoomActivity(
                    await stores.events.get_current_stream_position(),
                    window,
                    room_tail=tail,
                    max_room_tails=tails,
                )
            room, user = rooms[room_i], users[user_i]
            if is_member:
                event = make_event(
                    f"$e{n}",
                    "m.room.member",
                    room_id=room,
                    sender=user,
                    state_key=user,
                    content={"membership": "join"},
                )
            else:
                event = make_event(f"$e{n}", room_id=room, sender=user)
            (stream,) = await stores.events.persist_events(room, [PersistItem(event=event)])
            activity.on_new_event(event, stream)
            positions.append(stream)

        for lower in positions:
            for upper in positions:
                if upper < lower:
                    continue
                changed = activity.rooms_changed_between(lower, upper)
                if changed is not None:
                    assert changed == await queries.rooms_changed_between(lower, upper)
                for room in rooms:
                    for limit in (1, 3, 50):
                        mem = activity.room_events_between(room, upper, lower, limit)
                        if mem is None:
                            continue
                        ref = await stores.events.get_room_events_between(
                            room, upper, lower, limit, "b"
                        )
                        assert [t.event.event_id for t in mem] == [t.event.event_id for t in ref], (
                            room,
                            lower,
                            upper,
                            limit,
                        )
        # The window must answer the common case: a token at the newest position.
        newest = positions[-1]
        assert activity.rooms_changed_between(newest, newest) == {}
    finally:
        await db.close()
