"""StateStore contract: delta chains share state, snapshots bound chains, maps are right."""

from __future__ import annotations

import pytest

from homeserver.storage import PersistItem, StateStore, StorageError, Stores
from homeserver.storage.state import MAX_CHAIN_LENGTH, apply_delta, state_delta

from .conftest import ROOM, make_event


def test_delta_helpers() -> None:
    old = {("a", ""): "$1", ("b", ""): "$2"}
    new = {("a", ""): "$1", ("b", ""): "$3", ("c", "x"): "$4"}
    d = state_delta(old, new)
    assert d == {("b", ""): "$3", ("c", "x"): "$4"}
    assert state_delta(new, old) == {("b", ""): "$2", ("c", "x"): None}
    assert apply_delta(old, d) == new
    assert apply_delta(new, state_delta(new, old)) == old


async def test_chain_of_200_groups_shares_state(stores: Stores) -> None:
    base = {("m.room.member", f"@u{i}:x"): f"$join{i}" for i in range(30)}
    base[("m.room.create", "")] = "$create"
    group = await stores.state.store_state_group(ROOM, None, base)
    expected = {group: dict(base)}
    current = dict(base)
    for i in range(200):
        key = ("m.room.topic", "") if i % 2 else ("m.room.member", f"@u{i % 30}:x")
        current[key] = f"$ev{i}"
        group = await stores.state.store_state_group(ROOM, group, {key: f"$ev{i}"})
        expected[group] = dict(current)

    rows = await stores.db.fetchval("SELECT COUNT(*) FROM state_group_entries")
    full_copies = sum(len(s) for s in expected.values())
    assert full_copies > 6000
    # 201 snapshots' worth would be > 6000 rows; deltas plus a few snapshots are far fewer.
    assert rows < 200 + (200 // MAX_CHAIN_LENGTH + 1) * 32 + 40
    snapshots = await stores.db.fetchval("SELECT COUNT(*) FROM state_groups WHERE chain_len = 0")
    assert snapshots == 1 + 200 // (MAX_CHAIN_LENGTH + 1)
    assert await stores.db.fetchval("SELECT MAX(chain_len) FROM state_groups") == MAX_CHAIN_LENGTH

    fresh = StateStore(stores.db)  # uncached reads walk the chains
    for g in list(expected)[::7] + [group]:
        assert await fresh.get_state_ids(g) == expected[g]
    for g in expected:
        assert await stores.state.get_state_ids(g) == expected[g]


async def test_full_with_prev_group_stores_only_the_difference(stores: Stores) -> None:
    s1 = {("m.room.create", ""): "$c", ("m.room.name", ""): "$n1", ("m.room.topic", ""): "$t"}
    g1 = await stores.state.store_state_group(ROOM, None, None, full=s1)
    s2 = {("m.room.create", ""): "$c", ("m.room.name", ""): "$n2"}  # name changed, topic gone
    g2 = await stores.state.store_state_group(ROOM, g1, None, full=s2)
    rows = await stores.db.fetch(
        "SELECT type, event_id FROM state_group_entries WHERE state_group = $1 ORDER BY type", g2
    )
    assert [(r[0], r[1]) for r in rows] == [("m.room.name", "$n2"), ("m.room.topic", None)]
    assert await StateStore(stores.db).get_state_ids(g2) == s2
    assert await stores.state.get_state_ids(g1) == s1
    # Returned maps are copies: mutating one does not corrupt the cache.
    m = await stores.state.get_state_ids(g1)
    m.clear()
    assert await stores.state.get_state_ids(g1) == s1
    g3 = await stores.state.store_state_group(ROOM, g2, {("m.room.name", ""): None})
    assert await StateStore(stores.db).get_state_ids(g3) == {("m.room.create", ""): "$c"}


async def test_bad_groups_are_refused(stores: Stores) -> None:
    with pytest.raises(StorageError, match="unknown state group"):
        await stores.state.get_state_ids(12345)
    with pytest.raises(StorageError, match="unknown state group"):
        await stores.state.store_state_group(ROOM, 12345, {("a", ""): "$x"})
    g = await stores.state.store_state_group(ROOM, None, {("a", ""): "$x"})
    with pytest.raises(StorageError, match="belongs to"):
        await stores.state.store_state_group("!other:x", g, {("a", ""): "$y"})


async def test_state_group_for_events(stores: Stores) -> None:
    await stores.rooms.store_room(ROOM, "10")
    g1 = await stores.state.store_state_group(ROOM, None, {("m.room.create", ""): "$create"})
    g2 = await stores.state.store_state_group(ROOM, g1, {("m.room.topic", ""): "$topic"})
    await stores.events.persist_events(
        ROOM,
        [
            PersistItem(make_event("$create", "m.room.create", state_key=""), state_group=g1),
            PersistItem(make_event("$topic", "m.room.topic", state_key=""), state_group=g2),
            PersistItem(make_event("$msg"), state_group=g2),
            PersistItem(make_event("$nogroup"), outlier=True),
        ],
    )
    assert await stores.state.get_state_group_for_event("$create") == g1
    assert await stores.state.get_state_group_for_event("$nogroup") is None
    assert await stores.state.get_state_groups_for_events(["$topic", "$msg", "$nogroup", "$x"]) == {
        "$topic": g2,
        "$msg": g2,
    }
    assert await stores.state.get_state_ids_for_event("$msg") == {
        ("m.room.create", ""): "$create",
        ("m.room.topic", ""): "$topic",
    }
    assert await stores.state.get_state_ids_for_event("$nogroup") is None


async def test_the_cache_is_bounded_in_state_entries_not_maps(stores: Stores) -> None:
    """A growing room's groups are ever bigger maps: the cache counts their entries,
    keeps the newest, and a map read again after eviction is still right."""
    cached = StateStore(stores.db, cache_entries=5_000)
    current = {("m.room.create", ""): "$create"}
    group = await cached.store_state_group(ROOM, None, dict(current))
    groups = {group: dict(current)}
    for i in range(300):  # a room joined by 300 members: maps of 2..301 entries
        current[("m.room.member", f"@u{i}:x")] = f"$join{i}"
        group = await cached.store_state_group(
            ROOM, group, {("m.room.member", f"@u{i}:x"): f"$join{i}"}
        )
        groups[group] = dict(current)
        assert cached._cache.size <= 5_000
    # ~45,000 entries in all were cached; the newest maps stayed, the oldest went.
    assert sum(len(m) for m in groups.values()) > 45_000
    assert group in cached._cache and len(cached._cache) < 30
    assert min(groups) not in cached._cache
    for g in list(groups)[::10] + [group]:
        assert dict(await cached.read_state_ids(g)) == groups[g]
        assert cached._cache.size <= 5_000
    # One map alone over the bound is still cached (the newest is always kept).
    small = StateStore(stores.db, cache_entries=100)
    assert dict(await small.read_state_ids(group)) == groups[group]
    assert group in small._cache and len(small._cache) == 1
