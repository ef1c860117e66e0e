"""The LRU cache's stale-fill guard, in-memory databases, and storage's import rules."""

from __future__ import annotations

from homeserver.storage import PersistItem, open_database, open_stores
from homeserver.storage.cache import LruCache

from .conftest import ROOM, make_event


def test_lru_evicts_least_recently_used() -> None:
    cache: LruCache[str, int] = LruCache(2)
    cache.set("a", 1)
    cache.set("b", 2)
    assert cache.get("a") == 1  # "a" is now the most recent
    cache.set("c", 3)
    assert "b" not in cache and cache.get("a") == 1 and cache.get("c") == 3
    assert len(cache) == 2


def test_weighted_lru_bounds_the_sum_of_weights() -> None:
    cache: LruCache[str, str] = LruCache(10, weigh=len)
    cache.set("a", "xxxx")
    cache.set("b", "xxxx")
    assert cache.size == 8 and len(cache) == 2
    cache.get("a")  # "b" is now the least recent
    cache.set("c", "xxx")  # 11 > 10: "b" goes
    assert "b" not in cache and cache.size == 7
    cache.set("a", "x")  # replacing a value re-weighs it
    assert cache.size == 4
    cache.invalidate("c")
    assert cache.size == 1
    cache.invalidate_many(["a", "missing"])
    assert cache.size == 0 and len(cache) == 0
    cache.set("big", "x" * 50)  # heavier than the bound alone: kept, the rest evicted
    cache.set("big2", "y" * 50)
    assert list(cache.key_list()) == ["big2"] and cache.size == 50
    cache.clear()
    assert cache.size == 0 and cache.get("big2") is None


def test_stale_fill_after_invalidation_is_dropped() -> None:
    cache: LruCache[str, str] = LruCache(10)
    gen = cache.generation()  # a reader starts reading "k" from the database...
    cache.invalidate("k")  # ...a writer changes "k" meanwhile...
    cache.set_if_current("k", "old value", gen)  # ...the reader's result must not stick.
    assert cache.get("k") is None
    gen = cache.generation()
    cache.set_if_current("k", "fresh", gen)
    assert cache.get("k") == "fresh"
    cache.clear()
    assert cache.get("k") is None


async def test_in_memory_database_works() -> None:
    db = await open_database({"name": "sqlite3", "args": {"database": ":memory:"}})
    try:
        stores = await open_stores(db)
        await stores.rooms.store_room(ROOM, "10")
        await stores.events.persist_events(ROOM, [PersistItem(make_event("$m"))])
        assert await stores.events.get_current_stream_position() == 1
        async with db.transaction() as conn:
            assert await conn.fetchval("SELECT COUNT(*) FROM events") == 1
    finally:
        await db.close()
