"""Sliding sync positions kept in memory and written behind (sliding_sync/positions.py):
a new position is readable at once, written in order, bounded per device like the table,
and a room ID with a lone surrogate (a hostile server's) does not break the snapshot."""

from __future__ import annotations

import asyncio
from typing import Any

from homeserver.sliding_sync.positions import Positions
from homeserver.storage.sliding_sync import MAX_CONNECTIONS_PER_DEVICE, Snapshot


class FakeStore:
    def __init__(self) -> None:
        self.rows: dict[tuple[str, str, str, int], tuple[str, str]] = {}
        self.writes: list[int] = []

    async def get(self, user: str, device: str, conn: str, pos: int) -> Snapshot | None:
        import json

        row = self.rows.get((user, device, conn, pos))
        return None if row is None else Snapshot(row[0], json.loads(row[1]))

    async def put(self, user: str, device: str, conn: str, pos: int, snapshot: Any, keep: Any,
                  *, rooms_json: str) -> None:  # fmt: skip
        await asyncio.sleep(0)
        for key in [k for k in self.rows if k[:3] == (user, device, conn) and k[3] != keep]:
            del self.rows[key]
        self.rows[(user, device, conn, pos)] = (snapshot.token, rooms_json)
        self.writes.append(pos)


async def test_positions_are_read_at_once_and_written_in_order() -> None:
    store = FakeStore()
    positions = Positions(store)  # type: ignore[arg-type]
    odd = {"!a\ud800:x": {"ts": 1}, "\x00counts": {"all": 3}}
    positions.put("@u:x", "D", "c", 1, Snapshot("s1", odd), None)
    assert (await positions.get("@u:x", "D", "c", 1)) == Snapshot("s1", odd)
    positions.put("@u:x", "D", "c", 2, Snapshot("s2", {}), 1)
    positions.put("@u:x", "D", "c", 3, Snapshot("s3", {}), 2)
    await positions.close()
    assert store.writes == [1, 2, 3]
    assert sorted(k[3] for k in store.rows) == [2, 3]  # the acknowledged one is kept
    assert await positions.get("@u:x", "D", "c", 1) is None


async def test_a_device_keeps_a_bounded_number_of_connections_in_memory() -> None:
    store = FakeStore()
    positions = Positions(store, budget=10_000)  # type: ignore[arg-type]
    for i in range(MAX_CONNECTIONS_PER_DEVICE + 5):
        positions.put("@u:x", "D", f"c{i}", i, Snapshot("s", {"!r:x": {"ts": i}}), None)
    await positions.close()
    assert len(positions._by_device[("@u:x", "D")]) == MAX_CONNECTIONS_PER_DEVICE
    assert positions._bytes <= 10_000
