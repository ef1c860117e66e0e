"""Sliding sync's kept room order (homeserver/sliding_sync/room_order.py): after any
sequence of bumps and membership changes it equals a fresh sort, and it is bounded."""

from __future__ import annotations

import random
from types import SimpleNamespace
from typing import Any

from homeserver.sliding_sync.bump_stamps import BumpStamps
from homeserver.sliding_sync.room_order import RoomOrder
from homeserver.storage import MembershipInfo

SHOWN = ("join", "invite", "knock")


class FakeStore:
    def __init__(self) -> None:
        self.stamps: dict[str, int] = {}

    async def bump_stamps(self, rooms: list[str]) -> dict[str, int]:
        return {r: self.stamps[r] for r in rooms if r in self.stamps}


def bump(bumps: BumpStamps, store: FakeStore, room: str, position: int) -> None:
    store.stamps[room] = position  # written with the event...
    bumps.on_new_event(SimpleNamespace(type="m.room.message", room_id=room), position)  # type: ignore[arg-type]


def rows_for(memberships: dict[str, tuple[str, int]]) -> tuple[MembershipInfo, ...]:
    return tuple(
        MembershipInfo(room, "@u:x", m, f"$e{room}", at)
        for room, (m, at) in sorted(memberships.items())
    )


def fresh_order(store: FakeStore, memberships: dict[str, tuple[str, int]]) -> list[str]:
    listed = [(r, m, store.stamps.get(r, at)) for r, (m, at) in memberships.items() if m in SHOWN]
    return [r for r, _, b in sorted(listed, key=lambda x: (-x[2], x[0]))]


async def test_kept_order_equals_a_fresh_sort_after_random_changes() -> None:
    rng = random.Random(7)
    store = FakeStore()
    bumps = BumpStamps(store, size=50)  # smaller than the rooms: evictions happen
    order = RoomOrder(bumps)
    rooms = [f"!r{i:03d}:x" for i in range(120)]
    memberships = {r: ("join", i) for i, r in enumerate(rooms)}
    position = 1000
    rows = rows_for(memberships)
    for step in range(400):
        action = rng.random()
        if action < 0.8:
            position += 1
            bump(bumps, store, rng.choice(rooms), position)
        elif action < 0.9:
            room = rng.choice(rooms)
            position += 1
            memberships[room] = (rng.choice(["join", "invite", "leave"]), position)
            rows = rows_for(memberships)  # a new snapshot, as the store hands out
        by_room, ordered = await order.candidates("@u:x", rows, SHOWN, None, {})
        assert [c.room_id for c in ordered] == fresh_order(store, memberships), step
        assert set(by_room) == {r for r, (m, _) in memberships.items() if m in SHOWN}


async def test_rebuilds_when_the_log_no_longer_reaches_back() -> None:
    store = FakeStore()
    bumps = BumpStamps(store)
    order = RoomOrder(bumps)
    memberships = {"!a:x": ("join", 1), "!b:x": ("join", 2)}
    rows = rows_for(memberships)
    _, ordered = await order.candidates("@u:x", rows, SHOWN, None, {})
    assert [c.room_id for c in ordered] == ["!b:x", "!a:x"]
    import homeserver.sliding_sync.bump_stamps as module

    for i in range(module.MAX_LOG + 10):  # floods the log past the order's position
        bump(bumps, store, f"!other{i}:x", 10 + i)
    bump(bumps, store, "!a:x", 10**6)
    _, ordered = await order.candidates("@u:x", rows, SHOWN, None, {})
    assert [c.room_id for c in ordered] == ["!a:x", "!b:x"]


async def test_departed_rooms_shown_once_and_cache_bounded() -> None:
    store = FakeStore()
    bumps = BumpStamps(store)
    order = RoomOrder(bumps, max_rooms=3)
    memberships = {"!a:x": ("join", 1), "!b:x": ("leave", 5)}
    rows = rows_for(memberships)
    sent: dict[str, Any] = {"!b:x": {}}
    by_room, ordered = await order.candidates("@u:x", rows, SHOWN, 4, sent)
    assert [c.room_id for c in ordered] == ["!b:x", "!a:x"]  # the leave, once
    by_room, _ = await order.candidates("@u:x", rows, SHOWN, 5, sent)
    assert set(by_room) == {"!a:x"}
    # Two users of two rooms each: only one fits in a 3-room budget.
    other = rows_for({"!c:x": ("join", 1), "!d:x": ("join", 2)})
    await order.candidates("@v:x", other, SHOWN, None, {})
    assert order._cached_rooms <= 3
