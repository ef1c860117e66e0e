"""SlidingSyncStore contract (migration 0014) on every backend: positions per
connection (a put keeps only the acknowledged one), the per-device connection bound,
expiry, and bump stamps that only move forward."""

from __future__ import annotations

from homeserver.storage import Database
from homeserver.storage.sliding_sync import MAX_CONNECTIONS_PER_DEVICE, SlidingSyncStore, Snapshot


async def test_positions_connections_and_expiry(db: Database) -> None:
    store = SlidingSyncStore(db)
    await store.put("@a:x", "D", "c", 1, Snapshot("s1", {"!r:x": {"ts": 1}}), keep=None)
    await store.put("@a:x", "D", "c", 2, Snapshot("s2", {}), keep=1)
    await store.put("@a:x", "D", "c", 3, Snapshot("s3", {}), keep=2)
    assert await store.get("@a:x", "D", "c", 1) is None
    assert (await store.get("@a:x", "D", "c", 2)).token == "s2"  # type: ignore[union-attr]
    assert await store.get("@a:x", "D", "other", 3) is None
    for i in range(MAX_CONNECTIONS_PER_DEVICE):
        await store.put("@a:x", "D", f"n{i}", 10 + i, Snapshot("t", {}), keep=None)
    assert await store.get("@a:x", "D", "c", 3) is None  # least recently used: gone
    assert await store.get(
        "@a:x", "D", f"n{MAX_CONNECTIONS_PER_DEVICE - 1}", 10 + MAX_CONNECTIONS_PER_DEVICE - 1
    )
    assert await store.expire(2**62) == MAX_CONNECTIONS_PER_DEVICE


async def test_bump_stamps(db: Database) -> None:
    store = SlidingSyncStore(db)
    assert await store.bump_stamps(["!none:x"]) == {}
