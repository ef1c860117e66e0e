"""EventStore: the event graph and timeline.

`persist_events` writes a batch of events, their graph edges, relations, state-group
links, the room's forward extremities and its current state in ONE transaction: either
all of it is visible afterwards or none of it. Every event gets a global, monotonic
`stream_ordering` (backfilled events get negative ones, below everything, so sync never
reports history as new). Events are stored as the exact PDU JSON; reads rebuild `Event`
objects with the room version from the rooms table and keep them in an LRU cache.
Redactions are recorded (`redacted_because`), never applied to the stored JSON.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

from homeserver.events import Event, get_room_version
from homeserver.events.redaction import redact
from homeserver.events.relations import relation_of

from ._util import chunks, dump_json, load_json, now_ms, placeholders
from .cache import LruCache
from .current_state import MembershipSource, apply_current_state_delta, upsert_memberships
from .database import Connection, Database, Row
from .errors import StorageError
from .search import event_rows, index_rows, unindex_event
from .sliding_sync import record_bumps

StateKey = tuple[str, str]


@dataclass
class PersistItem:
    """One event to persist and what the room service decided about it."""

    event: Event
    state_group: int | None = None  # the state AFTER this event
    rejected_reason: str | None = None
    outlier: bool = False
    soft_failed: bool = False


class TimelineEvent(NamedTuple):
    stream_ordering: int
    event: Event


@dataclass
class _Cached:
    event: Event
    redacted_because: str | None
    soft_failed: bool
    outlier: bool


_EVENT_COLUMNS = (
    "e.event_id, e.json, e.rejected_reason, e.redacted_because, e.soft_failed, e.outlier,"
    " e.stream_ordering, r.room_version"
)
_EVENT_FROM = "events e LEFT JOIN rooms r ON r.room_id = e.room_id"
# Events that belong on a client-visible timeline.
_TIMELINE = "NOT e.outlier AND NOT e.soft_failed AND e.rejected_reason IS NULL"


class EventStore:
    def __init__(self, db: Database, cache_size: int = 10_000) -> None:
        self.db = db
        self._cache: LruCache[str, _Cached] = LruCache(cache_size, "getEvent")
        # Told (after commit) in which room whose membership rows a persist changed.
        self.membership_observers: list[Callable[[str, set[str]], None]] = []
        # Forward extremities per room: read on every send, written only here.
        self._extremities: LruCache[str, list[str]] = LruCache(
            cache_size, "get_latest_event_ids_in_room"
        )

    # -- writing ----------------------------------------------------------------------

    async def persist_events(
        self,
        room_id: str,
        items: Sequence[PersistItem],
        *,
        new_extremities: Sequence[str] | None = None,
        current_state_delta: tuple[Iterable[StateKey], Mapping[StateKey, str]] | None = None,
        out_of_band_memberships: Sequence[str] = (),
        backfilled: bool = False,
        client_txns: Sequence[tuple[str, str | None, str, str]] = (),
        in_commit_order: Callable[[], None] | None = None,
    ) -> list[int]:
        """Persist `items` atomically; return their stream orderings (in item order).

        - `new_extremities` replaces the room's forward extremities.
        - `current_state_delta = (to_remove, to_insert)` updates current state and the
          membership table (member events may be in this batch or already stored).
        - `out_of_band_memberships`: IDs of member events in the batch (typically outlier
          invites from rooms we are not in) that update room_memberships only.
        - `backfilled`: history; gets stream orderings below every existing one.
        - `client_txns`: (user, device, txn_id, event_id) of the client requests that
          created these events, recorded atomically with them so a retried request after
          a crash finds its event instead of sending it twice.
        - `in_commit_order`: called once, synchronously, at the end of the transaction
          while the write lock is held, so successive calls happen in commit (= stream)
          order. If the commit then fails the exception propagates to the caller.
        An event already stored keeps its row; an outlier re-persisted as a non-outlier is
        promoted (new stream ordering, flags and state group updated).
        """
        for item in items:
            if item.event.room_id != room_id:
                raise StorageError(
                    f"{item.event.event_id} is in {item.event.room_id}, not {room_id}"
                )
        async with self.db.transaction() as conn:
            orderings, fresh = await self._persist_txn(
                conn, room_id, items, backfilled, new_extremities
            )
            known = {
                item.event.event_id: MembershipSource(item.event.membership or "", so)
                for item, so in zip(items, orderings, strict=True)
                if item.event.type == "m.room.member"
            }
            if current_state_delta is not None:
                to_remove, to_insert = current_state_delta
                await apply_current_state_delta(conn, room_id, to_remove, to_insert, known)
            if out_of_band_memberships:
                by_id = {i.event.event_id: i.event for i in items}
                members = []
                for event_id in out_of_band_memberships:
                    ev = by_id.get(event_id)
                    if ev is None or ev.type != "m.room.member" or ev.state_key is None:
                        raise StorageError(f"{event_id} is not a member event of this batch")
                    members.append((ev.state_key, event_id))
                await upsert_memberships(conn, room_id, members, known)
            if client_txns:
                created = now_ms()
                await conn.executemany(
                    "INSERT INTO client_txns (user_id, device_id, txn_id, event_id, created_ts)"
                    " VALUES ($1, $2, $3, $4, $5)"
                    " ON CONFLICT (user_id, device_id, txn_id) DO NOTHING",
                    [(u, d or "", t, e, created) for u, d, t, e in client_txns],
                )
            if in_commit_order is not None:
                in_commit_order()
        touched: set[str] = set(
            ev.state_key
            for item in items
            if (ev := item.event).type == "m.room.member" and ev.state_key is not None
        )
        if current_state_delta is not None:
            to_remove, to_insert = current_state_delta
            touched.update(k for t, k in [*to_remove, *to_insert] if t == "m.room.member")
        if touched:
            for observer in self.membership_observers:
                observer(room_id, touched)
        if new_extremities is not None:
            self._extremities.invalidate(room_id)
            self._extremities.set(room_id, sorted(dict.fromkeys(new_extremities)))
        for item in fresh:
            item.event.rejected_reason = item.rejected_reason
            self._cache.invalidate(item.event.event_id)
            self._cache.set(
                item.event.event_id, _Cached(item.event, None, item.soft_failed, item.outlier)
            )
        return orderings

    async def _persist_txn(
        self,
        conn: Connection,
        room_id: str,
        items: Sequence[PersistItem],
        backfilled: bool,
        new_extremities: Sequence[str] | None,
    ) -> tuple[list[int], list[PersistItem]]:
        """Insert the rows; return (stream ordering per item, items actually written)."""
        if await conn.fetchval("SELECT 1 FROM rooms WHERE room_id = $1", room_id) is None:
            raise StorageError(f"cannot persist events of unknown room {room_id}")
        ids = [i.event.event_id for i in items]
        existing: dict[str, tuple[int, bool]] = {}
        for part in chunks(list(dict.fromkeys(ids))):
            for r in await conn.fetch(
                "SELECT event_id, stream_ordering, outlier FROM events"
                f" WHERE event_id IN ({placeholders(len(part))})",
                *part,
            ):
                existing[r[0]] = (int(r[1]), bool(r[2]))

        next_pos = await self._allocator(conn, backfilled)
        assigned: dict[str, int] = {}
        new_items: list[PersistItem] = []
        promoted: list[PersistItem] = []
        for item in items:
            eid = item.event.event_id
            if eid in assigned:
                continue
            old = existing.get(eid)
            if old is None:
                assigned[eid] = next_pos()
                new_items.append(item)
            elif old[1] and not item.outlier:
                assigned[eid] = next_pos()
                promoted.append(item)
            else:
                assigned[eid] = old[0]

        received = now_ms()
        await conn.executemany(
            "INSERT INTO events (stream_ordering, event_id, room_id, type, state_key, sender,"
            " depth, origin_server_ts, received_ts, outlier, soft_failed, rejected_reason, json)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
            [
                (
                    assigned[i.event.event_id],
                    i.event.event_id,
                    room_id,
                    i.event.type,
                    i.event.state_key,
                    i.event.sender,
                    i.event.depth,
                    i.event.origin_server_ts,
                    received,
                    i.outlier,
                    i.soft_failed,
                    i.rejected_reason,
                    dump_json(i.event.pdu),
                )
                for i in new_items
            ],
        )
        await conn.executemany(
            "UPDATE events SET stream_ordering = $2, outlier = $3, soft_failed = $4,"
            " rejected_reason = $5 WHERE event_id = $1",
            [
                (
                    i.event.event_id,
                    assigned[i.event.event_id],
                    False,
                    i.soft_failed,
                    i.rejected_reason,
                )
                for i in promoted
            ],
        )
        await conn.executemany(
            "INSERT INTO event_edges (event_id, prev_event_id, room_id) VALUES ($1, $2, $3)",
            [
                (i.event.event_id, prev, room_id)
                for i in new_items
                for prev in dict.fromkeys(i.event.prev_event_ids)
            ],
        )
        await conn.executemany(
            "INSERT INTO event_auth (event_id, auth_id) VALUES ($1, $2)",
            [
                (i.event.event_id, auth)
                for i in new_items
                for auth in dict.fromkeys(i.event.auth_event_ids)
            ],
        )
        relations = [(i.event.event_id, relation_of(i.event)) for i in new_items]
        await conn.executemany(
            "INSERT INTO event_relations (event_id, relates_to_id, rel_type, aggregation_key)"
            " VALUES ($1, $2, $3, $4)",
            [(eid, *rel) for eid, rel in relations if rel is not None],
        )
        redactions = [
            (i.event.event_id, i.event.redacts)
            for i in new_items
            if i.event.type == "m.room.redaction" and isinstance(i.event.redacts, str)
        ]
        if redactions:
            await conn.executemany(
                "INSERT INTO event_redactions (event_id, redacts) VALUES ($1, $2)"
                " ON CONFLICT (event_id) DO NOTHING",
                redactions,
            )
        await conn.executemany(
            "INSERT INTO event_to_state_groups (event_id, state_group) VALUES ($1, $2)"
            " ON CONFLICT (event_id) DO UPDATE SET state_group = excluded.state_group",
            [
                (i.event.event_id, i.state_group)
                for i in [*new_items, *promoted]
                if i.state_group is not None
            ],
        )
        timeline = [
            (i.event, assigned[i.event.event_id])
            for i in [*new_items, *promoted]
            if not i.outlier and not i.rejected_reason and not i.soft_failed
        ]
        await index_rows(conn, event_rows(timeline))
        await record_bumps(conn, timeline)
        if new_extremities is not None:
            await _replace_extremities(conn, room_id, new_extremities)
        return [assigned[eid] for eid in ids], [*new_items, *promoted]

    @staticmethod
    async def _allocator(conn: Connection, backfilled: bool) -> Any:
        """A counter handing out stream orderings (safe: we hold the write lock)."""
        if backfilled:
            low = await conn.fetchval("SELECT MIN(stream_ordering) FROM events")
            pos = min(int(low or 0), 0)
            step = -1
        else:
            high = await conn.fetchval("SELECT MAX(stream_ordering) FROM events")
            pos = max(int(high or 0), 0)
            step = 1

        def next_pos() -> int:
            nonlocal pos
            pos += step
            return pos

        return next_pos

    async def update_forward_extremities(
        self, room_id: str, add: Sequence[str], remove: Sequence[str]
    ) -> None:
        self._extremities.invalidate(room_id)
        async with self.db.transaction() as conn:
            await conn.executemany(
                "DELETE FROM event_forward_extremities WHERE room_id = $1 AND event_id = $2",
                [(room_id, e) for e in remove],
            )
            await conn.executemany(
                "INSERT INTO event_forward_extremities (room_id, event_id) VALUES ($1, $2)"
                " ON CONFLICT (room_id, event_id) DO NOTHING",
                [(room_id, e) for e in add],
            )

    def forget_events(self, room_id: str, event_ids: Iterable[str]) -> None:
        """Drop cached copies of events that were deleted (an admin purge)."""
        self._cache.invalidate_many(event_ids)
        self._extremities.invalidate(room_id)

    async def mark_redacted(self, event_id: str, redaction_event_id: str) -> bool:
        """Record that `redaction_event_id` (already checked by the caller) redacts it;
        its text leaves the search index."""
        async with self.db.transaction() as conn:
            await unindex_event(conn, event_id)
            changed = await conn.execute(
                "UPDATE events SET redacted_because = $2 WHERE event_id = $1",
                event_id,
                redaction_event_id,
            )
        self._cache.invalidate(event_id)
        return changed > 0

    # -- reading single events ----------------------------------------------------------

    async def get_event(self, event_id: str, *, redact_if_needed: bool = False) -> Event | None:
        return (await self.get_events([event_id], redact_if_needed=redact_if_needed)).get(event_id)

    async def get_events(
        self, event_ids: Iterable[str], *, redact_if_needed: bool = False
    ) -> dict[str, Event]:
        """The stored events among `event_ids` (missing ones are left out).

        Events come back exactly as stored, with `rejected_reason` set. With
        `redact_if_needed`, redacted events come back pruned per their room version.
        """
        cached = await self._get_cached(event_ids)
        out: dict[str, Event] = {}
        for eid, c in cached.items():
            if redact_if_needed and c.redacted_because is not None:
                pruned = Event(redact(c.event.pdu, c.event.room_version), c.event.room_version, eid)
                pruned.rejected_reason = c.event.rejected_reason
                out[eid] = pruned
            else:
                out[eid] = c.event
        return out

    async def _get_cached(self, event_ids: Iterable[str]) -> dict[str, _Cached]:
        found: dict[str, _Cached] = {}
        missing: list[str] = []
        for eid in dict.fromkeys(event_ids):
            c = self._cache.get(eid)
            if c is None:
                missing.append(eid)
            else:
                found[eid] = c
        if missing:
            generation = self._cache.generation()
            for part in chunks(missing):
                rows = await self.db.fetch(
                    f"SELECT {_EVENT_COLUMNS} FROM {_EVENT_FROM}"
                    f" WHERE e.event_id IN ({placeholders(len(part))})",
                    *part,
                )
                for row in rows:
                    c = self._row_to_cached(row)
                    if c is not None:
                        found[c.event.event_id] = c
                        self._cache.set_if_current(c.event.event_id, c, generation)
        return found

    async def read_stream(self, since: int, upto: int, limit: int) -> list[tuple[Event, int, bool]]:
        """The accepted events at stream positions in (since, upto], in stream order, at
        most `limit`: (event, stream ordering, outlier). Rejected and soft-failed events
        are left out. One query with the events' JSON (a worker following another
        process's writes holds none of them yet; the two-step read of `get_events` would
        cost a second round trip per batch), and each event enters the cache."""
        generation = self._cache.generation()
        rows = await self.db.fetch(
            f"SELECT {_EVENT_COLUMNS} FROM {_EVENT_FROM}"
            " WHERE e.stream_ordering > $1 AND e.stream_ordering <= $2"
            " AND NOT e.soft_failed AND e.rejected_reason IS NULL"
            " ORDER BY e.stream_ordering LIMIT $3",
            since,
            upto,
            limit,
        )
        out: list[tuple[Event, int, bool]] = []
        for row in rows:
            cached = self._cache.get(row[0])
            if cached is None:
                cached = self._row_to_cached(row)
                if cached is None:
                    continue
                self._cache.set_if_current(row[0], cached, generation)
            out.append((cached.event, int(row[6]), bool(row[5])))
        return out

    @staticmethod
    def _row_to_cached(row: Row) -> _Cached | None:
        if row[7] is None:
            return None  # room unknown: cannot happen through persist_events
        event = Event(load_json(row[1]), get_room_version(row[7]), row[0])
        event.rejected_reason = row[2]
        return _Cached(event, row[3], bool(row[4]), bool(row[5]))

    async def have_events(self, event_ids: Iterable[str]) -> set[str]:
        """Which of `event_ids` are stored (outliers and rejected events included)."""
        ids = list(dict.fromkeys(event_ids))
        have = {e for e in ids if e in self._cache}
        rest = [e for e in ids if e not in have]
        for part in chunks(rest):
            rows = await self.db.fetch(
                f"SELECT event_id FROM events WHERE event_id IN ({placeholders(len(part))})",
                *part,
            )
            have.update(r[0] for r in rows)
        return have

    async def get_redactions_of(self, event_ids: Iterable[str]) -> dict[str, list[str]]:
        """target event ID -> IDs of stored redaction events naming it (any status)."""
        out: dict[str, list[str]] = {}
        for part in chunks(list(dict.fromkeys(event_ids))):
            rows = await self.db.fetch(
                "SELECT redacts, event_id FROM event_redactions"
                f" WHERE redacts IN ({placeholders(len(part))})",
                *part,
            )
            for r in rows:
                out.setdefault(r[0], []).append(r[1])
        return out

    async def get_redacted_because(self, event_ids: Iterable[str]) -> dict[str, str]:
        """event_id -> ID of the redaction that redacted it, for redacted events only."""
        cached = await self._get_cached(event_ids)
        return {e: c.redacted_because for e, c in cached.items() if c.redacted_because}

    async def get_redaction_events(self, event_ids: Iterable[str]) -> dict[str, Event]:
        """event_id -> the redaction event that redacted it, for redacted events only
        (what client formatting puts in `unsigned.redacted_because`)."""
        redacted = await self.get_redacted_because(event_ids)
        if not redacted:
            return {}
        loaded = await self.get_events(set(redacted.values()))
        return {e: loaded[r] for e, r in redacted.items() if r in loaded}

    async def get_rejected(self, event_id: str) -> str | None:
        """The rejection reason, or None if accepted (or unknown)."""
        c = (await self._get_cached([event_id])).get(event_id)
        return None if c is None else c.event.rejected_reason

    async def is_soft_failed(self, event_id: str) -> bool:
        c = (await self._get_cached([event_id])).get(event_id)
        return bool(c and c.soft_failed)

    async def is_outlier(self, event_id: str) -> bool:
        c = (await self._get_cached([event_id])).get(event_id)
        return bool(c and c.outlier)

    async def get_prev_events(self, event_id: str) -> list[str]:
        event = await self.get_event(event_id)
        return [] if event is None else event.prev_event_ids

    async def get_auth_event_ids(self, event_id: str) -> list[str]:
        event = await self.get_event(event_id)
        return [] if event is None else event.auth_event_ids

    async def get_auth_chain_ids(self, event_ids: Iterable[str]) -> set[str]:
        """Every event reachable through auth_events from `event_ids` (excluding them)."""
        ids = list(dict.fromkeys(event_ids))
        if not ids:
            return set()
        seen: set[str] = set()
        frontier = ids
        while frontier:
            nxt: list[str] = []
            for part in chunks(frontier):
                rows = await self.db.fetch(
                    f"SELECT auth_id FROM event_auth WHERE event_id IN ({placeholders(len(part))})",
                    *part,
                )
                for r in rows:
                    if r[0] not in seen:
                        seen.add(r[0])
                        nxt.append(r[0])
            frontier = nxt
        return seen

    async def get_relations(
        self, event_id: str, rel_type: str | None = None, limit: int = 100
    ) -> list[tuple[str, str, str | None]]:
        """(event_id, rel_type, aggregation_key) of events relating to `event_id`."""
        sql = (
            "SELECT r.event_id, r.rel_type, r.aggregation_key FROM event_relations r"
            " JOIN events e ON e.event_id = r.event_id WHERE r.relates_to_id = $1"
        )
        args: list[Any] = [event_id]
        if rel_type is not None:
            sql += " AND r.rel_type = $2"
            args.append(rel_type)
        sql += f" AND {_TIMELINE} ORDER BY e.stream_ordering LIMIT ${len(args) + 1}"
        rows = await self.db.fetch(sql, *args, limit)
        return [(r[0], r[1], r[2]) for r in rows]

    # -- graph and stream positions -----------------------------------------------------

    async def get_forward_extremities(self, room_id: str) -> list[str]:
        cached = self._extremities.get(room_id)
        if cached is not None:
            return list(cached)
        generation = self._extremities.generation()
        rows = await self.db.fetch(
            "SELECT event_id FROM event_forward_extremities WHERE room_id = $1 ORDER BY event_id",
            room_id,
        )
        result = [r[0] for r in rows]
        self._extremities.set_if_current(room_id, result, generation)
        return list(result)

    async def get_max_depth(self, event_ids: Iterable[str]) -> int:
        """The largest depth among the stored events of `event_ids` (0 if none)."""
        events = await self.get_events(event_ids)
        return max((e.depth for e in events.values()), default=0)

    def forget_extremities(self, room_id: str) -> None:
        """Another process may have written the room: read its tips afresh."""
        self._extremities.invalidate(room_id)

    async def get_stream_ordering(self, event_id: str) -> int | None:
        sql = "SELECT stream_ordering FROM events WHERE event_id = $1"
        return await self.db.fetchval(sql, event_id)

    async def get_current_stream_position(self) -> int:
        """The highest stream ordering handed out so far (0 for an empty database)."""
        return max(int(await self.db.fetchval("SELECT MAX(stream_ordering) FROM events") or 0), 0)

    async def get_room_events_between(
        self,
        room_id: str,
        from_stream: int,
        to_stream: int | None,
        limit: int,
        direction: Literal["f", "b"] = "b",
    ) -> list[TimelineEvent]:
        """Timeline events of a room between two stream positions.

        A position means "everything at or below it was seen". Forwards ("f"): events with
        from < ordering <= to, ascending. Backwards ("b"): to < ordering <= from,
        descending. `to_stream` None means no bound. Outliers, soft-failed and rejected
        events are never returned.
        """
        if direction == "f":
            upper = to_stream if to_stream is not None else 2**62
            sql = (
                f"SELECT e.stream_ordering, e.event_id FROM events e WHERE e.room_id = $1"
                f" AND e.stream_ordering > $2 AND e.stream_ordering <= $3 AND {_TIMELINE}"
                " ORDER BY e.stream_ordering ASC LIMIT $4"
            )
            rows = await self.db.fetch(sql, room_id, from_stream, upper, limit)
        elif direction == "b":
            lower = to_stream if to_stream is not None else -(2**62)
            sql = (
                f"SELECT e.stream_ordering, e.event_id FROM events e WHERE e.room_id = $1"
                f" AND e.stream_ordering <= $2 AND e.stream_ordering > $3 AND {_TIMELINE}"
                " ORDER BY e.stream_ordering DESC LIMIT $4"
            )
            rows = await self.db.fetch(sql, room_id, from_stream, lower, limit)
        else:
            raise ValueError(f"direction must be 'f' or 'b', not {direction!r}")
        return await self._timeline(rows)

    async def get_events_after(
        self, stream_pos: int, room_ids: Iterable[str], limit: int
    ) -> list[TimelineEvent]:
        """Timeline events in `room_ids` with ordering > stream_pos, oldest first, capped."""
        rooms = list(dict.fromkeys(room_ids))
        rows: list[Row] = []
        for part in chunks(rooms):
            rows.extend(
                await self.db.fetch(
                    "SELECT e.stream_ordering, e.event_id FROM events e"
                    f" WHERE e.room_id IN ({placeholders(len(part), start=3)})"
                    f" AND e.stream_ordering > $1 AND {_TIMELINE}"
                    " ORDER BY e.stream_ordering ASC LIMIT $2",
                    stream_pos,
                    limit,
                    *part,
                )
            )
        rows.sort(key=lambda r: r[0])
        return await self._timeline(rows[:limit])

    async def _timeline(self, rows: Sequence[Row]) -> list[TimelineEvent]:
        events = await self.get_events([r[1] for r in rows])
        return [TimelineEvent(int(r[0]), events[r[1]]) for r in rows if r[1] in events]


async def _replace_extremities(conn: Connection, room_id: str, event_ids: Sequence[str]) -> None:
    await conn.execute("DELETE FROM event_forward_extremities WHERE room_id = $1", room_id)
    await conn.executemany(
        "INSERT INTO event_forward_extremities (room_id, event_id) VALUES ($1, $2)",
        [(room_id, e) for e in dict.fromkeys(event_ids)],
    )
