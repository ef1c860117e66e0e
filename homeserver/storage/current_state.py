"""CurrentStateStore: each room's current state and the memberships derived from it.

Both tables are written only by `EventStore.persist_events` (through
`apply_current_state_delta`, inside its transaction), so they always agree with the
events that were persisted. All reads are primary-key or index lookups.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ._util import chunks, load_json, placeholders
from .cache import LruCache
from .database import Connection, Database, Row
from .errors import StorageError

StateKey = tuple[str, str]


@dataclass(frozen=True)
class MembershipInfo:
    room_id: str
    user_id: str
    membership: str
    event_id: str
    stream_ordering: int


@dataclass(frozen=True)
class MembershipSource:
    """What a membership row needs to know about its m.room.member event."""

    membership: str
    stream_ordering: int


async def apply_current_state_delta(
    conn: Connection,
    room_id: str,
    to_remove: Iterable[StateKey],
    to_insert: Mapping[StateKey, str],
    known: Mapping[str, MembershipSource],
) -> None:
    """Update current_state and room_memberships; runs inside the caller's transaction.

    `known` describes member events persisted in the same batch; others are read from
    the events table (and must exist there).
    """
    removed = [k for k in to_remove if k not in to_insert]
    await conn.executemany(
        "DELETE FROM current_state WHERE room_id = $1 AND type = $2 AND state_key = $3",
        [(room_id, t, k) for t, k in removed],
    )
    await conn.executemany(
        "DELETE FROM room_memberships WHERE room_id = $1 AND user_id = $2",
        [(room_id, k) for t, k in removed if t == "m.room.member"],
    )
    await conn.executemany(
        "INSERT INTO current_state (room_id, type, state_key, event_id) VALUES ($1, $2, $3, $4)"
        " ON CONFLICT (room_id, type, state_key) DO UPDATE SET event_id = excluded.event_id",
        [(room_id, t, k, e) for (t, k), e in to_insert.items()],
    )
    members = [(k, e) for (t, k), e in to_insert.items() if t == "m.room.member"]
    await upsert_memberships(conn, room_id, members, known)


async def upsert_memberships(
    conn: Connection,
    room_id: str,
    members: Sequence[tuple[str, str]],
    known: Mapping[str, MembershipSource],
) -> None:
    """Set room_memberships rows from (user_id, member event ID) pairs."""
    rows = []
    for user_id, event_id in members:
        source = known.get(event_id) or await _membership_source(conn, event_id)
        rows.append((room_id, user_id, source.membership, event_id, source.stream_ordering))
    await conn.executemany(
        "INSERT INTO room_memberships (room_id, user_id, membership, event_id, stream_ordering)"
        " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (room_id, user_id) DO UPDATE SET"
        " membership = excluded.membership, event_id = excluded.event_id,"
        " stream_ordering = excluded.stream_ordering",
        rows,
    )


async def _membership_source(conn: Connection, event_id: str) -> MembershipSource:
    row = await conn.fetchrow(
        "SELECT json, stream_ordering FROM events WHERE event_id = $1", event_id
    )
    if row is None:
        raise StorageError(f"current state refers to unknown event {event_id}")
    content = load_json(row[0]).get("content")
    membership = content.get("membership") if isinstance(content, dict) else None
    return MembershipSource(membership if isinstance(membership, str) else "", int(row[1]))


# The state and member maps cached for sliding sync: entries in all, each cache (a map
# weighs its size; one map bigger than this is kept alone). A state entry holds about
# 350 bytes (key tuple, three strings, its slot), a member entry about 200: at most
# about 10 and 6 MB.
STATE_CACHE_ENTRIES = 30_000

# is_joined scans a cached member list at most this long (a few microseconds); a
# bigger room's answer is one indexed read.
SCAN_MEMBERS_MAX = 1_000


class CurrentStateStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        # user -> all their membership rows: read by every /sync. Rows change only in
        # EventStore.persist_events, which calls `memberships_changed` after commit.
        self._memberships: LruCache[str, tuple[MembershipInfo, ...]] = LruCache(
            50_000, "get_memberships_for_user"
        )
        # room -> its joined users: read per event by push and per sync by presence;
        # changes with the same writes as `_memberships`.
        self._joined: LruCache[str, tuple[str, ...]] = LruCache(10_000, "get_users_in_room")
        # room -> (joined users, invited users), sorted: the room summary of every /sync
        # that brings member events, i.e. every syncing member of a room at each join
        # there (2,000 reads of 2,000 rows per join in a 2,000-member room, uncached).
        # Same writes as `_joined`; at most 10,000 rooms.
        self._summary: LruCache[str, tuple[tuple[str, ...], tuple[str, ...]]] = LruCache(
            10_000, "get_summary_members"
        )
        # room -> the servers of its joined users: read at every event we send (where to
        # send it), and O(members) to work out. Same writes as `_joined`.
        self._hosts: LruCache[str, frozenset[str]] = LruCache(10_000, "get_joined_hosts")
        # room -> its whole current state map, and room -> every member's membership:
        # read by each sliding sync answer that carries the room, so a message to a
        # room many Element X clients wait on read both in full once per client
        # (O(members) rows each: O(members^2) per message). Bounded by their entries
        # (a big room weighs its size), not by rooms. `state_changed` (any state
        # event, after commit) and the membership writes invalidate them; shared
        # read-only with the callers.
        self._state_maps: LruCache[str, dict[StateKey, str]] = LruCache(
            STATE_CACHE_ENTRIES, "get_current_state_ids_for_rooms", weigh=len
        )
        self._member_maps: LruCache[str, dict[str, str]] = LruCache(
            STATE_CACHE_ENTRIES, "get_members_for_rooms", weigh=len
        )

    def forget_room(self, room_id: str) -> None:
        """Another process may have written the room: read its members afresh."""
        self._joined.invalidate(room_id)
        self._summary.invalidate(room_id)
        self._hosts.invalidate(room_id)
        self.state_changed(room_id)

    def memberships_changed(self, room_id: str, user_ids: Iterable[str]) -> None:
        self._memberships.invalidate_many(user_ids)
        self._joined.invalidate(room_id)
        self._summary.invalidate(room_id)
        self._hosts.invalidate(room_id)
        self.state_changed(room_id)

    def state_changed(self, room_id: str) -> None:
        """The room's current state changed (EventStore, after commit; a purge)."""
        self._state_maps.invalidate(room_id)
        self._member_maps.invalidate(room_id)

    async def get_summary_members(
        self, room_ids: Iterable[str]
    ) -> dict[str, tuple[tuple[str, ...], tuple[str, ...]]]:
        """room -> (joined users, invited users), each sorted: what a room summary counts
        and takes heroes from. Cached per room; the rooms not cached are read with one
        query per 500 (an initial /sync asks for all of a user's rooms at once)."""
        out: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {}
        missing: list[str] = []
        for room_id in dict.fromkeys(room_ids):
            cached = self._summary.get(room_id)
            if cached is None:
                missing.append(room_id)
            else:
                out[room_id] = cached
        if not missing:
            return out
        generation = self._summary.generation()
        for part in chunks(missing):
            rows = await self.db.fetch(
                "SELECT room_id, user_id, membership FROM room_memberships"
                f" WHERE room_id IN ({placeholders(len(part))})"
                " AND membership IN ('join', 'invite')",
                *part,
            )
            found: dict[str, tuple[list[str], list[str]]] = {r: ([], []) for r in part}
            for r in rows:
                found[r[0]][0 if r[2] == "join" else 1].append(r[1])
            for room_id, (joined, invited) in found.items():
                value = (tuple(sorted(joined)), tuple(sorted(invited)))
                out[room_id] = value
                self._summary.set_if_current(room_id, value, generation)
        return out

    async def get_current_state_ids(
        self, room_id: str, types: Iterable[str] | None = None
    ) -> dict[StateKey, str]:
        """The room's current state map, optionally only for some event types."""
        if types is None:
            rows = await self.db.fetch(
                "SELECT type, state_key, event_id FROM current_state WHERE room_id = $1",
                room_id,
            )
        else:
            type_list = list(dict.fromkeys(types))
            if not type_list:
                return {}
            rows = await self.db.fetch(
                "SELECT type, state_key, event_id FROM current_state WHERE room_id = $1"
                f" AND type IN ({placeholders(len(type_list), start=2)})",
                room_id,
                *type_list,
            )
        return {(r[0], r[1]): r[2] for r in rows}

    async def get_current_state_ids_for_rooms(
        self, room_ids: Iterable[str]
    ) -> dict[str, dict[StateKey, str]]:
        """Several rooms' current state maps (cached; do not change them), the rooms
        not cached read in one query per 500 rooms."""
        return await self._cached_maps(
            self._state_maps,
            room_ids,
            "SELECT room_id, type, state_key, event_id FROM current_state",
            lambda r: ((r[1], r[2]), r[3]),
        )

    async def get_members_for_rooms(self, room_ids: Iterable[str]) -> dict[str, dict[str, str]]:
        """room -> user_id -> current membership, for several rooms at once (cached; do
        not change them)."""
        return await self._cached_maps(
            self._member_maps,
            room_ids,
            "SELECT room_id, user_id, membership FROM room_memberships",
            lambda r: (r[1], r[2]),
        )

    async def _cached_maps(
        self,
        cache: LruCache[str, dict[Any, str]],
        room_ids: Iterable[str],
        select: str,
        entry: Callable[[Row], tuple[Any, str]],
    ) -> dict[str, dict[Any, str]]:
        out: dict[str, dict[Any, str]] = {}
        missing: list[str] = []
        for room_id in dict.fromkeys(room_ids):
            cached = cache.get(room_id)
            if cached is None:
                missing.append(room_id)
            else:
                out[room_id] = cached
        # An invalidation between the read and the fill leaves the cache alone (the
        # rows read may predate that write).
        generation = cache.generation()
        for part in chunks(missing):
            found: dict[str, dict[Any, str]] = {r: {} for r in part}
            rows = await self.db.fetch(
                f"{select} WHERE room_id IN ({placeholders(len(part))})", *part
            )
            for r in rows:
                key, value = entry(r)
                found[r[0]][key] = value
            for room_id, mapping in found.items():
                out[room_id] = mapping
                cache.set_if_current(room_id, mapping, generation)
        return out

    async def get_current_state_event_id(
        self, room_id: str, event_type: str, state_key: str = ""
    ) -> str | None:
        return await self.db.fetchval(
            "SELECT event_id FROM current_state WHERE room_id = $1 AND type = $2"
            " AND state_key = $3",
            room_id,
            event_type,
            state_key,
        )

    async def get_rooms_for_user(
        self, user_id: str, memberships: Sequence[str] = ("join",)
    ) -> list[str]:
        """Room IDs where the user's current membership is one of `memberships`."""
        infos = await self.get_memberships_for_user(user_id, memberships)
        return [i.room_id for i in infos]

    async def memberships_snapshot(self, user_id: str) -> tuple[MembershipInfo, ...]:
        """All the user's membership rows, sorted by room ID, as the cached object itself: the
        same tuple until one of them changes, so callers may key their own derived
        caches on its identity (sliding sync's room order)."""
        cached = self._memberships.get(user_id)
        if cached is not None:
            return cached
        generation = self._memberships.generation()
        rows = await self.db.fetch(
            "SELECT room_id, user_id, membership, event_id, stream_ordering"
            " FROM room_memberships WHERE user_id = $1 ORDER BY room_id",
            user_id,
        )
        # Sorted here, by code point: PostgreSQL's ORDER BY follows the database's
        # collation, and callers binary-search this by room ID.
        result = tuple(
            sorted(
                (MembershipInfo(r[0], r[1], r[2], r[3], int(r[4])) for r in rows),
                key=lambda m: m.room_id,
            )
        )
        self._memberships.set_if_current(user_id, result, generation)
        return result

    async def get_memberships_for_user(
        self, user_id: str, memberships: Sequence[str] | None = None
    ) -> list[MembershipInfo]:
        """The user's membership rows (all, or those in `memberships`), by room ID."""
        if memberships is None:
            return list(await self.memberships_snapshot(user_id))
        else:
            ms = list(dict.fromkeys(memberships))
            if not ms:
                return []
            rows = await self.db.fetch(
                "SELECT room_id, user_id, membership, event_id, stream_ordering"
                " FROM room_memberships WHERE user_id = $1"
                f" AND membership IN ({placeholders(len(ms), start=2)}) ORDER BY room_id",
                user_id,
                *ms,
            )
        return [MembershipInfo(r[0], r[1], r[2], r[3], int(r[4])) for r in rows]

    async def get_users_in_room(self, room_id: str) -> list[str]:
        """Joined users, sorted."""
        cached = self._joined.get(room_id)
        if cached is None:
            generation = self._joined.generation()
            rows = await self.db.fetch(
                "SELECT user_id FROM room_memberships WHERE room_id = $1 AND membership = 'join'"
                " ORDER BY user_id",
                room_id,
            )
            cached = tuple(r[0] for r in rows)
            self._joined.set_if_current(room_id, cached, generation)
        return list(cached)

    async def get_joined_member_count(self, room_id: str) -> int:
        return int(
            await self.db.fetchval(
                "SELECT COUNT(*) FROM room_memberships WHERE room_id = $1 AND membership = 'join'",
                room_id,
            )
        )

    async def count_current_state(self, room_id: str, cap: int) -> int:
        """How many events the room's current state holds, counted up to `cap`: a
        range of the primary key, never the state itself, bounded however big the room
        (a room's size for limit_remote_rooms, asked by other servers too)."""
        return int(
            await self.db.fetchval(
                "SELECT COUNT(*) FROM (SELECT 1 FROM current_state WHERE room_id = $1"
                " LIMIT $2) AS counted",
                room_id,
                cap,
            )
        )

    async def get_members(self, room_id: str) -> dict[str, str]:
        """user_id -> current membership, for every user with a member event in the room."""
        rows = await self.db.fetch(
            "SELECT user_id, membership FROM room_memberships WHERE room_id = $1", room_id
        )
        return {r[0]: r[1] for r in rows}

    async def get_joined_hosts(self, room_id: str) -> set[str]:
        """Server names of the joined users (where to send the room's events)."""
        hosts = self._hosts.get(room_id)
        if hosts is None:
            generation = self._hosts.generation()
            members = await self.get_users_in_room(room_id)
            hosts = frozenset(u.partition(":")[2] for u in members)
            self._hosts.set_if_current(room_id, hosts, generation)
        return set(hosts)

    async def is_joined(self, room_id: str, user_id: str) -> bool:
        """Whether `user_id` is joined to the room. The room's cached member list (the
        send path keeps it warm for push) answers "yes" without a database read when it
        is small enough to scan (SCAN_MEMBERS_MAX); "no" is always read from the
        database, so a list cached before a join another process wrote never refuses a
        member. A stale "yes" (a kick not yet heard of) is only a pre-check's answer:
        the event's auth rules, against the room's state, still refuse the sender."""
        cached = self._joined.get(room_id)
        if cached is not None and len(cached) <= SCAN_MEMBERS_MAX and user_id in cached:
            return True
        return await self.get_membership(room_id, user_id) == "join"

    async def get_membership(self, room_id: str, user_id: str) -> str | None:
        return await self.db.fetchval(
            "SELECT membership FROM room_memberships WHERE room_id = $1 AND user_id = $2",
            room_id,
            user_id,
        )

    async def get_membership_info(self, room_id: str, user_id: str) -> MembershipInfo | None:
        row = await self.db.fetchrow(
            "SELECT room_id, user_id, membership, event_id, stream_ordering"
            " FROM room_memberships WHERE room_id = $1 AND user_id = $2",
            room_id,
            user_id,
        )
        return None if row is None else MembershipInfo(row[0], row[1], row[2], row[3], int(row[4]))
