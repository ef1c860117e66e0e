"""EventStore: the event graph and timeline.

`persist_events` writes a batch of events, their graph edges, relations, state-group
links, the room's forward extremities and its current state in ONE transaction: either
all of it is visible afterwards or none of it. Every event gets a global, monotonic
`stream_ordering` (backfilled events get negative ones, below everything, so sync never
reports history as new). Events are stored as the exact PDU JSON; reads rebuild `Event`
objects with the room version from the rooms table and keep them in an LRU cache
(event_reads.py: every read; this module: every write).
Redactions are recorded (`redacted_because`); the stored JSON keeps the content until
redaction_retention.py erases it (redaction_retention_period later).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from homeserver.events import Event
from homeserver.events.relations import relation_of

from ._util import MAX_IN_LIST, chunks, dump_json, now_ms, placeholders
from .current_state import MembershipSource, apply_current_state_delta, upsert_memberships
from .database import Connection, Database
from .errors import DatabaseUnavailableError, IntegrityError, StorageError
from .event_reads import CachedEvent, EventReads
from .group_commit import GroupCommit
from .search import event_rows, index_rows, unindex_event
from .sliding_sync import record_bumps
from .stream_marks import newest_sql

StateKey = tuple[str, str]


@dataclass
class PersistItem:
    """One event to persist and what the room service decided about it."""

    event: Event
    state_group: int | None = None  # the state AFTER this event
    rejected_reason: str | None = None
    outlier: bool = False
    soft_failed: bool = False


@dataclass
class PersistRequest:
    """One persist_events call (see there)."""

    room_id: str
    items: Sequence[PersistItem]
    new_extremities: Sequence[str] | None
    current_state_delta: tuple[Iterable[StateKey], Mapping[StateKey, str]] | None
    out_of_band_memberships: Sequence[str]
    backfilled: bool
    client_txns: Sequence[tuple[str, str | None, str, str]]
    in_commit_order: Callable[[], None] | None


# Requests (one room's batch each) written by one grouped transaction at most.
MAX_GROUP = 64
# Attempts at a transaction whose insert met another process's copy of an event.
DUPLICATE_RETRIES = 3
# How long a write whose COMMIT answer was lost waits for the database to say whether
# it committed (a PostgreSQL restart takes seconds).
COMMIT_CHECK_S = 30.0

log = logging.getLogger(__name__)


class EventStore(EventReads):
    """The event store: the reads (event_reads.EventReads) and every write."""

    def __init__(self, db: Database, cache_size: int = 10_000) -> None:
        super().__init__(db, cache_size)
        # Which process writes (events.instance_name): the composition sets its name.
        self.instance_name: str | None = None
        # enable_search: false (Synapse's): nothing is indexed (a search index costs a
        # row and its text per message), set by the composition.
        self.index_for_search = True
        # Told (after commit) in which room whose membership rows a persist changed.
        self.membership_observers: list[Callable[[str, set[str]], None]] = []
        # Told the room of each committed change of its current state.
        self.state_observers: list[Callable[[str], None]] = []
        self._groups: GroupCommit[PersistRequest, list[int]] = GroupCommit(
            self._persist_requests, max_group=MAX_GROUP, name="persist events"
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
        grouped: bool = False,
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
          order. If the commit then fails the exception propagates to the caller; if
          the transaction was a group's, the request is retried alone and the hook is
          called again.
        - `grouped`: share a transaction with other rooms' requests arriving meanwhile
          (group_commit.py); still atomic per request.
        An event already stored keeps its row; an outlier re-persisted as a non-outlier is
        promoted (new stream ordering, flags and state group updated).
        """
        for item in items:
            if item.event.room_id != room_id:
                raise StorageError(
                    f"{item.event.event_id} is in {item.event.room_id}, not {room_id}"
                )
        request = PersistRequest(
            room_id,
            items,
            new_extremities,
            current_state_delta,
            out_of_band_memberships,
            backfilled,
            client_txns,
            in_commit_order,
        )
        if grouped and not backfilled:
            return await self._groups.submit(request)
        return (await self._persist_requests([request]))[0]

    async def _persist_requests(self, requests: list[PersistRequest]) -> list[list[int]]:
        """Several rooms' requests (all backfilled or none) in ONE transaction.

        With several writing processes a transaction that claims its positions runs
        beside theirs (event_positions.py): one may store an event (an outlier, an
        invite) that this one found missing before its insert. That insert then fails
        as a duplicate, and the requests are written again, finding the event stored."""
        for attempt in range(1, DUPLICATE_RETRIES + 1):
            try:
                return await self._persist_requests_once(requests)
            except IntegrityError:
                if self.concurrent_positions is None or attempt == DUPLICATE_RETRIES:
                    raise
        raise AssertionError("unreachable")

    async def _persist_requests_once(self, requests: list[PersistRequest]) -> list[list[int]]:
        claimed = self.concurrent_positions is not None and not requests[0].backfilled
        written: list[tuple[list[int], list[PersistItem]]] = []
        committing = False
        try:
            async with self.db.transaction(turn="own" if claimed else "alone") as conn:
                written = await self._write_requests(conn, requests)
                committing = True  # what fails from here on is the COMMIT
        except DatabaseUnavailableError:
            # The connection was lost at COMMIT: the database may have committed. If it
            # did, this is a success like any other (announced, pushed, sent to other
            # servers); answering an error would leave the events stored but unsent.
            if not committing:
                raise
            fresh = _fresh_positions(requests, written)
            if not fresh or not await _committed(self.db, *fresh[0]):
                raise
            log.warning("A COMMIT's answer was lost, but it committed: carrying on")
        for request, (_, fresh_items) in zip(requests, written, strict=True):
            self._after_commit(request, fresh_items)
        return [orderings for orderings, _ in written]

    async def _write_requests(
        self, conn: Connection, requests: list[PersistRequest]
    ) -> list[tuple[list[int], list[PersistItem]]]:
        """Every row of `requests`, in the open transaction, then their commit-order
        hooks."""
        written = await self._persist_txn(conn, requests)
        txns: list[tuple[str, str | None, str, str]] = []
        for request, (orderings, _) in zip(requests, written, strict=True):
            await _apply_memberships(conn, request, orderings)
            txns.extend(request.client_txns)
        if txns:
            created = now_ms()
            await conn.executemany(
                "INSERT INTO client_txns (user_id, device_id, txn_id, event_id, created_ts)"
                " VALUES ($1, $2, $3, $4, $5)"
                " ON CONFLICT (user_id, device_id, txn_id) DO NOTHING",
                [(u, d or "", t, e, created) for u, d, t, e in txns],
            )
        for request in requests:
            if request.in_commit_order is not None:
                request.in_commit_order()
        return written

    def _after_commit(self, request: PersistRequest, fresh: list[PersistItem]) -> None:
        """Observers and caches, once the request's rows are committed."""
        room_id = request.room_id
        touched: set[str] = set(
            ev.state_key
            for item in request.items
            if (ev := item.event).type == "m.room.member" and ev.state_key is not None
        )
        if request.current_state_delta is not None:
            to_remove, to_insert = request.current_state_delta
            touched.update(k for t, k in [*to_remove, *to_insert] if t == "m.room.member")
            if to_remove or to_insert:
                for state_observer in self.state_observers:
                    state_observer(room_id)
        if touched:
            for observer in self.membership_observers:
                observer(room_id, touched)
        if request.new_extremities is not None:
            self._extremities.invalidate(room_id)
            self._extremities.set(room_id, sorted(dict.fromkeys(request.new_extremities)))
        for item in fresh:
            item.event.rejected_reason = item.rejected_reason
            self._cache.invalidate(item.event.event_id)
            self._cache.set(
                item.event.event_id, CachedEvent(item.event, None, item.soft_failed, item.outlier)
            )

    async def _persist_txn(
        self, conn: Connection, requests: list[PersistRequest]
    ) -> list[tuple[list[int], list[PersistItem]]]:
        """Insert the rows, one statement per table for all requests; per request,
        (stream ordering per item, items actually written)."""
        rooms = list(dict.fromkeys(r.room_id for r in requests))
        ids = list(dict.fromkeys(i.event.event_id for r in requests for i in r.items))
        backfilled = requests[0].backfilled
        known_rooms, existing, last = await _read_before_write(conn, rooms, ids, backfilled)
        for room_id in rooms:
            if room_id not in known_rooms:
                raise StorageError(f"cannot persist events of unknown room {room_id}")
        assigned: dict[str, int] = {}
        new_items: list[PersistItem] = []
        promoted: list[PersistItem] = []
        fresh_per_request: list[list[PersistItem]] = []
        numbered: list[str] = []  # events that get a new position
        for request in requests:
            fresh: list[PersistItem] = []
            for item in request.items:
                eid = item.event.event_id
                if eid in assigned:
                    continue
                old = existing.get(eid)
                if old is None:
                    new_items.append(item)
                    fresh.append(item)
                elif old[1] and not item.outlier:
                    promoted.append(item)
                    fresh.append(item)
                else:
                    assigned[eid] = old[0]
                    continue
                assigned[eid] = 0  # numbered below, in this order
                numbered.append(eid)
            fresh_per_request.append(fresh)
        next_pos = await self._positions(conn, last, backfilled, len(numbered))
        for eid in numbered:
            assigned[eid] = next_pos()

        received = now_ms()
        await conn.executemany(
            "INSERT INTO events (stream_ordering, event_id, room_id, type, state_key, sender,"
            " depth, origin_server_ts, received_ts, outlier, soft_failed, rejected_reason, json,"
            " instance_name)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
            [
                (
                    assigned[i.event.event_id],
                    i.event.event_id,
                    i.event.room_id,
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
                    self.instance_name,
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
                (i.event.event_id, prev, i.event.room_id)
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
        if self.index_for_search:
            await index_rows(conn, event_rows(timeline))
        await record_bumps(conn, timeline)
        extremities = {
            r.room_id: r.new_extremities for r in requests if r.new_extremities is not None
        }
        if extremities:
            await _replace_extremities(conn, extremities)
        return [
            ([assigned[i.event.event_id] for i in request.items], fresh)
            for request, fresh in zip(requests, fresh_per_request, strict=True)
        ]

    async def _positions(
        self, conn: Connection, last: int, backfilled: bool, count: int
    ) -> Callable[[], int]:
        """Hands out the transaction's `count` new stream positions: claimed when
        several processes write events at once (event_positions.py), else after `last`
        (safe: every writer of the database waits for this transaction)."""
        positions = self.concurrent_positions
        if positions is None or backfilled or count <= 0:
            return _counter(last, backfilled)
        return _counter(await positions.claim(conn, count) - 1, False)

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

    def forget_cached(self, event_ids: Iterable[str]) -> None:
        """Drop cached copies of events whose stored JSON changed (content erased)."""
        self._cache.invalidate_many(event_ids)

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
            if changed:  # its content is erased later (redaction_retention.py)
                await conn.execute(
                    "INSERT INTO redactions_to_prune (event_id, redacted_ts) VALUES ($1, $2)"
                    " ON CONFLICT (event_id) DO NOTHING",
                    event_id,
                    now_ms(),
                )
        self._cache.invalidate(event_id)
        return changed > 0


def _fresh_positions(
    requests: Sequence[PersistRequest], written: Sequence[tuple[list[int], list[PersistItem]]]
) -> list[tuple[str, int]]:
    """(event ID, new stream position) of each event a transaction wrote or promoted."""
    out: list[tuple[str, int]] = []
    for request, (orderings, fresh) in zip(requests, written, strict=True):
        new = {item.event.event_id for item in fresh}
        position = dict(zip((i.event.event_id for i in request.items), orderings, strict=True))
        out += [(event_id, position[event_id]) for event_id in new]
    return out


async def _committed(db: Database, event_id: str, position: int) -> bool:
    """Whether a transaction whose COMMIT answer was lost committed: its event is
    stored at the position it gave it. Waits for the database to be back, up to
    COMMIT_CHECK_S (then the error is the answer: the client retries with its
    transaction ID, which finds the event if it is there)."""
    deadline = time.monotonic() + COMMIT_CHECK_S
    delay = 0.05
    while True:
        try:
            stored = await db.fetchval(
                "SELECT stream_ordering FROM events WHERE event_id = $1", event_id
            )
            return stored is not None and int(stored) == position
        except DatabaseUnavailableError:
            if time.monotonic() + delay > deadline:
                raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)


async def _replace_extremities(conn: Connection, extremities: Mapping[str, Sequence[str]]) -> None:
    """Set each room's forward extremities (one DELETE per 500 rooms, one INSERT)."""
    rooms = list(extremities)
    for part in chunks(rooms):
        await conn.execute(
            f"DELETE FROM event_forward_extremities WHERE room_id IN ({placeholders(len(part))})",
            *part,
        )
    await conn.executemany(
        "INSERT INTO event_forward_extremities (room_id, event_id) VALUES ($1, $2)",
        [(room_id, e) for room_id in rooms for e in dict.fromkeys(extremities[room_id])],
    )


async def _apply_memberships(
    conn: Connection, request: PersistRequest, orderings: Sequence[int]
) -> None:
    """A request's current-state delta and out-of-band memberships."""
    if request.current_state_delta is None and not request.out_of_band_memberships:
        return
    room_id = request.room_id
    known = {
        item.event.event_id: MembershipSource(item.event.membership or "", so)
        for item, so in zip(request.items, orderings, strict=True)
        if item.event.type == "m.room.member"
    }
    if request.current_state_delta is not None:
        to_remove, to_insert = request.current_state_delta
        await apply_current_state_delta(conn, room_id, to_remove, to_insert, known)
    if request.out_of_band_memberships:
        by_id = {i.event.event_id: i.event for i in request.items}
        members = []
        for event_id in request.out_of_band_memberships:
            ev = by_id.get(event_id)
            if ev is None or ev.type != "m.room.member" or ev.state_key is None:
                raise StorageError(f"{event_id} is not a member event of this batch")
            members.append((ev.state_key, event_id))
        await upsert_memberships(conn, room_id, members, known)


async def _read_before_write(
    conn: Connection, rooms: list[str], ids: list[str], backfilled: bool
) -> tuple[set[str], dict[str, tuple[int, bool]], int]:
    """Which of `rooms` exist, which of the events `ids` are stored (stream ordering,
    outlier), and the newest stream ordering (the lowest for backfill: they count down
    from 0). One round trip when the lists are short (every send, every federation
    transaction), under the write lock: each round trip saved shortens the time every
    writer of the deployment waits for it."""
    # A purge may have deleted the newest rows: their positions stay taken (stream_marks).
    edge = (
        "SELECT MIN(stream_ordering) FROM events"
        if backfilled
        else f"SELECT {newest_sql('events')}"
    )
    known: set[str] = set()
    existing: dict[str, tuple[int, bool]] = {}
    if len(rooms) + len(ids) > MAX_IN_LIST:
        for part in chunks(rooms):
            sql = f"SELECT room_id FROM rooms WHERE room_id IN ({placeholders(len(part))})"
            known.update(r[0] for r in await conn.fetch(sql, *part))
        for part in chunks(ids):
            sql = (
                "SELECT event_id, stream_ordering, outlier FROM events"
                f" WHERE event_id IN ({placeholders(len(part))})"
            )
            existing.update({r[0]: (int(r[1]), bool(r[2])) for r in await conn.fetch(sql, *part)})
        last = await conn.fetchval(edge)
        return known, existing, int(last or 0)
    parts = [f"SELECT 2, '', ({edge}), FALSE"]
    if rooms:
        parts.append(
            f"SELECT 0, room_id, 0, FALSE FROM rooms WHERE room_id IN ({placeholders(len(rooms))})"
        )
    if ids:  # (a request may carry only memberships)
        parts.append(
            "SELECT 1, event_id, stream_ordering, outlier FROM events"
            f" WHERE event_id IN ({placeholders(len(ids), len(rooms) + 1)})"
        )
    rows = await conn.fetch(" UNION ALL ".join(parts), *rooms, *ids)
    last = 0
    for kind, key, position, outlier in rows:
        if kind == 0:
            known.add(key)
        elif kind == 1:
            existing[key] = (int(position), bool(outlier))
        else:
            last = int(position or 0)
    return known, existing, last


def _counter(last: int, backfilled: bool) -> Callable[[], int]:
    """Hands out stream orderings after `last` (safe: the write lock is held); backfilled
    events count down from 0."""
    step = -1 if backfilled else 1
    pos = min(last, 0) if backfilled else max(last, 0)

    def next_pos() -> int:
        nonlocal pos
        pos += step
        return pos

    return next_pos
