"""DelayedEventStore (storage/delayed_events.py) on both backends: the per-user bound,
the client transaction that answers its first delay_id, changes that only a scheduled
row takes (one of two racing finalises wins), the due order, dropping other users'
scheduled state, and the bounds on finalised rows (per user and by age)."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from homeserver.storage import delayed_events as module
from homeserver.storage.database import Database
from homeserver.storage.delayed_events import DelayedEvent, DelayedEventStore, TooManyScheduled

ROOM = "!r:example.org"
ALICE = "@alice:example.org"
BOB = "@bob:example.org"
T0 = 1_700_000_000_000


def delayed(
    n: int, user: str = ALICE, *, state_key: str | None = None, at: int = 0
) -> DelayedEvent:
    return DelayedEvent(
        delay_id=f"d{n}",
        user_id=user,
        device_id="DEV",
        room_id=ROOM,
        event_type="m.call.member" if state_key is not None else "m.room.message",
        state_key=state_key,
        content={"n": n},
        delay_ms=1000,
        send_ts=T0 + (at or n * 10),
    )


async def test_scheduling_bounds_transactions_and_the_due_order(db: Database) -> None:
    store = DelayedEventStore(db)
    assert await store.add(delayed(1, at=300), 3, "DEV/t1") == "d1"
    # The same transaction again: the first delay_id, nothing new stored.
    again = dataclasses.replace(delayed(9), delay_id="d9")
    assert await store.add(again, 3, "DEV/t1") == "d1"
    await store.add(delayed(2, at=100), 3)
    await store.add(delayed(3, at=200), 3)
    with pytest.raises(TooManyScheduled):
        await store.add(delayed(4), 3)
    await store.add(delayed(5, BOB), 3)  # the bound is per user
    assert [e.delay_id for e in await store.due(T0 + 250, 10)] == ["d5", "d2", "d3"]
    assert [e.delay_id for e in await store.due(T0 + 1000, 2)] == ["d5", "d2"]
    assert await store.next_send_ts() == T0 + 50
    got = await store.get("d1")
    assert got is not None and got.content == {"n": 1} and got.scheduled


async def test_only_a_scheduled_row_changes_and_one_finalise_wins(db: Database) -> None:
    store = DelayedEventStore(db)
    await store.add(delayed(1), 10)
    assert await store.restart("d1", T0 + 5000)
    got = await store.get("d1")
    assert got is not None and got.send_ts == T0 + 6000
    wins = await asyncio.gather(
        store.finalise(got, "send", "delay", T0 + 6000, event_id="$e"),
        store.finalise(got, "cancel", "action", T0 + 6000),
    )
    assert sorted(wins) == [False, True]
    done = await store.get("d1")
    assert done is not None and not done.scheduled
    assert (done.outcome, done.event_id) in (("send", "$e"), ("cancel", None))
    assert not await store.restart("d1", T0 + 7000)
    assert await store.due(T0 + 10**9, 10) == []
    assert await store.next_send_ts() is None
    failed = delayed(2)
    await store.add(failed, 10)
    error = {"errcode": "M_FORBIDDEN", "error": "not in room"}
    assert await store.finalise(failed, "send", "error", T0, error=error)
    stored = await store.get("d2")
    assert stored is not None and stored.error == error


async def test_someone_elses_state_drops_only_the_others_scheduled_state(db: Database) -> None:
    store = DelayedEventStore(db)
    await store.add(delayed(1, ALICE, state_key="k"), 10)
    await store.add(delayed(2, BOB, state_key="k"), 10)
    await store.add(delayed(3, BOB, state_key="other"), 10)
    assert sorted(await store.scheduled_state()) == [
        (ROOM, "m.call.member", "k"),
        (ROOM, "m.call.member", "k"),
        (ROOM, "m.call.member", "other"),
    ]
    assert await store.drop_state_of_others(ROOM, "m.call.member", "k", ALICE) == 1
    assert await store.get("d2") is None
    assert await store.get("d1") is not None and await store.get("d3") is not None


async def test_finalised_rows_are_bounded_per_user_and_by_age(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(module, "FINALISED_PER_USER", 3)
    store = DelayedEventStore(db)
    for n in range(5):
        event = delayed(n)
        await store.add(event, 10)
        await store.finalise(event, "cancel", "action", T0 + n)
    await store.add(delayed(9), 10)  # still scheduled: never pruned
    listed = await store.of_user(ALICE, T0 + 10)
    assert [e.delay_id for e in listed] == ["d9", "d2", "d3", "d4"]
    day = module.FINALISED_KEEP_MS
    assert [e.delay_id for e in await store.of_user(ALICE, T0 + 3 + day)] == ["d9", "d4"]
    assert await store.prune(T0 + 3 + day) == 2
    assert [e.delay_id for e in await store.of_user(ALICE, T0)] == ["d9", "d4"]
