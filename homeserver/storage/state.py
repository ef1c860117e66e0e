"""StateStore: room state snapshots ("state groups") that share unchanged state.

A state group is either a full snapshot or a delta on a previous group. Consecutive
events usually change one key, so storing deltas keeps the table small; reading follows
the chain back to the last snapshot (one recursive query). Chains are cut at
`MAX_CHAIN_LENGTH`: the next group is stored in full, which bounds read cost. Delta
entries with a NULL event ID remove a key (state resolution can drop keys).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType

from ._util import chunks, placeholders
from .cache import LruCache
from .database import Connection, Database
from .errors import StorageError

StateKey = tuple[str, str]
StateMap = dict[StateKey, str]
MAX_CHAIN_LENGTH = 50
# The cached state maps, counted in entries, not maps: a map costs ~36 bytes per entry
# (the keys and event IDs are shared), so at most ~75 MB. Counted in maps (2,000
# before), the cache grew with the rooms: the 2,000 groups a 2,000-member room's joins
# make held 2M entries (71-77 MB measured), a 50,000-member room's would hold gigabytes.
# Synapse's state group cache is bounded in entries too. Smaller is not free: at
# 500,000 a 1,500-member room's joins cost ~10% more CPU (older groups re-read).
STATE_CACHE_ENTRIES = 2_000_000
EVENT_GROUPS_CACHED = 20_000


def state_delta(
    old: Mapping[StateKey, str], new: Mapping[StateKey, str]
) -> dict[StateKey, str | None]:
    """What turns `old` into `new`: changed/added keys, and removed keys mapped to None."""
    delta: dict[StateKey, str | None] = {k: v for k, v in new.items() if old.get(k) != v}
    delta.update({k: None for k in old if k not in new})
    return delta


def apply_delta(base: Mapping[StateKey, str], delta: Mapping[StateKey, str | None]) -> StateMap:
    out = dict(base)
    for key, event_id in delta.items():
        if event_id is None:
            out.pop(key, None)
        else:
            out[key] = event_id
    return out


_CHAIN = """
WITH RECURSIVE chain(id, prev_group, chain_len) AS (
    SELECT id, prev_group, chain_len FROM state_groups WHERE id = $1
    UNION ALL
    SELECT g.id, g.prev_group, g.chain_len
    FROM state_groups g JOIN chain ON g.id = chain.prev_group
    WHERE chain.chain_len > 0
)
SELECT id, chain_len FROM chain
"""


class StateStore:
    def __init__(self, db: Database, cache_entries: int = STATE_CACHE_ENTRIES) -> None:
        self.db = db
        # Groups never change once written, so entries never need invalidating.
        self._cache: LruCache[int, StateMap] = LruCache(
            cache_entries, "state_group_cache", weigh=len
        )
        # event -> group of the state after it; a recorded group never changes.
        self._event_groups: LruCache[str, int] = LruCache(
            EVENT_GROUPS_CACHED, "event_to_state_group"
        )

    def forget_events(self, event_ids: Iterable[str]) -> None:
        """Drop cached event -> group links of deleted events (an admin purge)."""
        self._event_groups.invalidate_many(event_ids)

    async def store_state_group(
        self,
        room_id: str,
        prev_group: int | None,
        delta: Mapping[StateKey, str | None] | None,
        full: Mapping[StateKey, str] | None = None,
    ) -> int:
        """Store the state `prev_group + delta` (or `full`) and return its new group ID.

        Give `full` when the whole state is at hand: with a `prev_group` only the
        difference is stored. `delta` values of None remove a key.
        """
        if prev_group is None:
            if full is None:
                full = {k: v for k, v in (delta or {}).items() if v is not None}
            return await self._insert(room_id, None, 0, dict(full), dict(full))
        prev_state = await self.get_state_ids(prev_group)
        if full is not None:
            delta = state_delta(prev_state, full)
            new_state = dict(full)
        else:
            delta = dict(delta or {})
            new_state = apply_delta(prev_state, delta)
        row = await self.db.fetchrow(
            "SELECT room_id, chain_len FROM state_groups WHERE id = $1", prev_group
        )
        if row is None:
            raise StorageError(f"unknown state group {prev_group}")
        if row[0] != room_id:
            raise StorageError(f"state group {prev_group} belongs to {row[0]}, not {room_id}")
        chain_len = int(row[1]) + 1
        if chain_len > MAX_CHAIN_LENGTH:
            return await self._insert(room_id, prev_group, 0, new_state, new_state)
        return await self._insert(room_id, prev_group, chain_len, delta, new_state)

    async def _insert(
        self,
        room_id: str,
        prev_group: int | None,
        chain_len: int,
        entries: Mapping[StateKey, str | None],
        new_state: StateMap,
    ) -> int:
        async with self.db.transaction() as conn:
            group = await conn.fetchval(
                "INSERT INTO state_groups (room_id, prev_group, chain_len) VALUES ($1, $2, $3)"
                " RETURNING id",
                room_id,
                prev_group,
                chain_len,
            )
            await conn.executemany(
                "INSERT INTO state_group_entries (state_group, type, state_key, event_id)"
                " VALUES ($1, $2, $3, $4)",
                [(group, t, k, e) for (t, k), e in entries.items()],
            )
        group = int(group)
        self._cache.set(group, new_state)
        return group

    async def get_state_ids(self, group: int) -> StateMap:
        """The full state map of a group (a fresh dict the caller may modify)."""
        return dict(await self.read_state_ids(group))

    async def read_state_ids(self, group: int) -> Mapping[StateKey, str]:
        """The full state map of a group, read-only and not copied: a /sync of a room
        with thousands of members reads it on every wake-up (get_state_ids copies)."""
        cached = self._cache.get(group)
        if cached is None:
            cached = await self._load(self.db, group)
            self._cache.set(group, cached)
        return MappingProxyType(cached)

    async def _load(self, conn: Connection | Database, group: int) -> StateMap:
        chain = await conn.fetch(_CHAIN, group)
        if not chain:
            raise StorageError(f"unknown state group {group}")
        # chain runs newest -> oldest; start from the nearest cached ancestor if any.
        base: StateMap = {}
        to_apply: list[int] = []
        for row in chain:
            cached = self._cache.get(int(row[0])) if row[0] != group else None
            if cached is not None:
                base = cached
                break
            to_apply.append(int(row[0]))
        to_apply.reverse()
        by_group: dict[int, list[tuple[StateKey, str | None]]] = {g: [] for g in to_apply}
        for part in chunks(to_apply):
            rows = await conn.fetch(
                "SELECT state_group, type, state_key, event_id FROM state_group_entries"
                f" WHERE state_group IN ({placeholders(len(part))})",
                *part,
            )
            for r in rows:
                by_group[int(r[0])].append(((r[1], r[2]), r[3]))
        state = dict(base)
        for g in to_apply:
            for key, event_id in by_group[g]:
                if event_id is None:
                    state.pop(key, None)
                else:
                    state[key] = event_id
        return state

    def remember_event_groups(self, groups: Mapping[str, int]) -> None:
        """Prime the event -> group cache with groups just committed by the writer."""
        for event_id, group in groups.items():
            self._event_groups.set(event_id, group)

    async def get_state_group_for_event(self, event_id: str) -> int | None:
        """The group holding the state AFTER `event_id` (None if not recorded)."""
        return (await self.get_state_groups_for_events([event_id])).get(event_id)

    async def get_state_groups_for_events(self, event_ids: Sequence[str]) -> dict[str, int]:
        out: dict[str, int] = {}
        ids: list[str] = []
        for event_id in dict.fromkeys(event_ids):
            group = self._event_groups.get(event_id)
            if group is None:
                ids.append(event_id)
            else:
                out[event_id] = group
        for part in chunks(ids):
            rows = await self.db.fetch(
                "SELECT event_id, state_group FROM event_to_state_groups"
                f" WHERE event_id IN ({placeholders(len(part))})",
                *part,
            )
            for r in rows:
                out[r[0]] = int(r[1])
                self._event_groups.set(r[0], int(r[1]))
        return out

    async def get_state_ids_for_event(self, event_id: str) -> StateMap | None:
        group = await self.get_state_group_for_event(event_id)
        return None if group is None else await self.get_state_ids(group)

    async def read_state_ids_for_event(self, event_id: str) -> Mapping[StateKey, str] | None:
        """The state after `event_id`, read-only and not copied (read_state_ids)."""
        group = await self.get_state_group_for_event(event_id)
        return None if group is None else await self.read_state_ids(group)
