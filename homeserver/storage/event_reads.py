"""The event store's reads: single events (from an LRU cache, else the exact stored
PDU JSON rebuilt with the room version), redactions, the graph (forward extremities,
auth chains, relations) and the stream (timelines between positions, what follows a
position). EventStore (events.py) adds the writes, which keep these caches current.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from homeserver.events import Event, get_room_version
from homeserver.events.redaction import redact

from ._util import chunks, load_json, placeholders
from .cache import LruCache
from .database import Database, Row
from .stream_marks import newest_sql

if TYPE_CHECKING:  # PostgreSQL only: asyncpg is not loaded by a SQLite server
    from .event_positions import ConcurrentEventPositions


class TimelineEvent(NamedTuple):
    stream_ordering: int
    event: Event


@dataclass
class CachedEvent:
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


class EventReads:
    def __init__(self, db: Database, cache_size: int = 10_000) -> None:
        self.db = db
        self._cache: LruCache[str, CachedEvent] = LruCache(cache_size, "getEvent")
        # Forward extremities per room: read on every send, written only by EventStore.
        self._extremities: LruCache[str, list[str]] = LruCache(
            cache_size, "get_latest_event_ids_in_room"
        )
        # With several writing processes (event_positions.py): the claims of positions
        # and the visible position, set by the composition.
        self.concurrent_positions: ConcurrentEventPositions | None = None

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

    async def _get_cached(self, event_ids: Iterable[str]) -> dict[str, CachedEvent]:
        found: dict[str, CachedEvent] = {}
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

    async def read_stream(
        self, since: int, upto: int, limit: int, written_by: str | None = None
    ) -> list[tuple[Event, int, bool]]:
        """The accepted events at stream positions in (since, upto], in stream order, at
        most `limit`: (event, stream ordering, outlier); with `written_by`, only those
        that process persisted. Rejected and soft-failed events are left out. One query
        with the events' JSON (a worker following another process's writes holds none
        of them yet; the two-step read of `get_events` would cost a second round trip
        per batch), and each event enters the cache."""
        generation = self._cache.generation()
        writer = "" if written_by is None else " AND e.instance_name = $4"
        rows = await self.db.fetch(
            f"SELECT {_EVENT_COLUMNS} FROM {_EVENT_FROM}"
            " WHERE e.stream_ordering > $1 AND e.stream_ordering <= $2"
            f" AND NOT e.soft_failed AND e.rejected_reason IS NULL{writer}"
            " ORDER BY e.stream_ordering LIMIT $3",
            since,
            upto,
            limit,
            *(() if written_by is None else (written_by,)),
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
    def _row_to_cached(row: Row) -> CachedEvent | None:
        if row[7] is None:
            return None  # room unknown: cannot happen through persist_events
        event = Event(load_json(row[1]), get_room_version(row[7]), row[0])
        event.rejected_reason = row[2]
        return CachedEvent(event, row[3], bool(row[4]), bool(row[5]))

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
        """The newest complete stream position: every event at or below it is stored
        (0 for an empty database). With several writing processes, one below the
        lowest position still being written (event_positions.py)."""
        if self.concurrent_positions is not None:
            return await self.concurrent_positions.visible()
        return max(int(await self.db.fetchval(f"SELECT {newest_sql('events')}") or 0), 0)

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
