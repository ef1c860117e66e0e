"""TransactionStore: idempotency records and the durable federation outbox.

- Client transaction IDs map (user, device, txn_id) to the event they created, so a
  retried PUT returns the same event instead of sending twice.
- Inbound federation transactions map (origin, txn_id) to the response we gave.
- The outbox holds, per destination and in order, PDUs (by event ID) and EDUs (as JSON)
  that must still be sent; the sender peeks a batch, sends it and acks it, so a crash
  between persisting an event and sending it loses nothing. For a destination that is
  backing off, federation_catchup holds each room's newest event instead of a row per
  event (federation/sender.py says why and what bounds the queue).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ._util import chunks, dump_json, load_json, now_ms, placeholders
from .database import Connection, Database
from .group_commit import GroupCommit

log = logging.getLogger(__name__)

# Queued PDUs turned into catch-up events per transaction of `compact`.
COMPACT_BATCH = 5_000

_ENQUEUE_PDU = (
    "INSERT INTO federation_outbox (destination, event_id, created_ts) VALUES ($1, $2, $3)"
)
# How stale enqueue_pdus' view of the destinations backing off may be.
DOWN_CACHE_S = 1.0
# Event batches (a room's chain each) queued for federation by one transaction at most.
MAX_ENQUEUE_GROUP = 256
# Client transaction lookups answered by one group (queries of 100 keys each).
MAX_TXN_LOOKUPS = 500
# (outbox rows (destination, event, ts), catch-up rows (destination, event)) of a batch.
_Enqueue = tuple[list[tuple[str, str, int]], list[tuple[str, str]]]

# Make an event ($2, by ID) its room's catch-up event for destination $1, unless a
# newer one is (an event purged meanwhile: nothing to send).
_CATCH_UP_EVENT = (
    "INSERT INTO federation_catchup (destination, room_id, event_id, stream_ordering)"
    " SELECT $1, e.room_id, e.event_id, e.stream_ordering FROM events e"
    " WHERE e.event_id = $2 ON CONFLICT (destination, room_id) DO UPDATE SET"
    " event_id = excluded.event_id, stream_ordering = excluded.stream_ordering"
    " WHERE excluded.stream_ordering > federation_catchup.stream_ordering"
)
# The same with the room and position given.
_CATCH_UP = (
    "INSERT INTO federation_catchup (destination, room_id, event_id, stream_ordering)"
    " VALUES ($1, $2, $3, $4) ON CONFLICT (destination, room_id) DO UPDATE SET"
    " event_id = excluded.event_id, stream_ordering = excluded.stream_ordering"
    " WHERE excluded.stream_ordering > federation_catchup.stream_ordering"
)


@dataclass(frozen=True)
class BacklogBounds:
    """What `TransactionStore.compact` keeps of a destination's queue (the sender's
    settings: federation/sender.py)."""

    max_pdus: int
    trimmable_edu_types: tuple[str, ...] = ()
    max_trimmable_edus: int = 0
    # EDUs of which the newest per (type, user) says all a peer needs (it resyncs a
    # user's device list when it sees a gap in the update's stream IDs).
    coalescable_edu_types: tuple[str, ...] = ()
    max_coalescable_edus: int = 0
    # EDUs the peer cannot fetch again (to-device messages) but that a destination
    # gone for good would otherwise make us keep for ever: a far larger cap, past
    # which the oldest go too (0: no cap).
    capped_edu_types: tuple[str, ...] = ()
    max_capped_edus: int = 0


@dataclass
class OutboxBatch:
    """A destination's catch-up events, then a contiguous prefix of its queue; ack
    `up_to_id` and `catch_up` once sent."""

    pdu_event_ids: list[str] = field(default_factory=list)
    edus: list[dict[str, Any]] = field(default_factory=list)
    up_to_id: int = 0
    # (room, event) of the catch-up events among pdu_event_ids (they come first)
    catch_up: list[tuple[str, str]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.pdu_event_ids or self.edus)


@dataclass(frozen=True)
class RetryState:
    destination: str
    failure_ts: int | None
    retry_last_ts: int
    retry_interval_ms: int


class TransactionStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        # Destinations backing off, for enqueue_pdus: one row per server that failed
        # (a few thousand on a big server), re-read at most every DOWN_CACHE_S.
        self._failing: frozenset[str] | None = None
        self._failing_read_at = 0.0
        self._enqueues: GroupCommit[_Enqueue, None] = GroupCommit(
            self._write_enqueues, max_group=MAX_ENQUEUE_GROUP, name="federation outbox"
        )
        self._txn_lookups: GroupCommit[tuple[str, str, str], str | None] = GroupCommit(
            self._client_txns, max_group=MAX_TXN_LOOKUPS, name="client txn lookups"
        )

    # -- client transaction IDs ---------------------------------------------------------

    async def get_client_txn(self, user_id: str, device_id: str | None, txn_id: str) -> str | None:
        """The event a client transaction created, if any. Every send asks: the asks
        made while a lookup runs share the next one (group_commit.py; one query for up
        to MAX_TXN_LOOKUPS)."""
        return await self._txn_lookups.submit((user_id, device_id or "", txn_id))

    async def _client_txns(self, keys: list[tuple[str, str, str]]) -> list[str | None]:
        found: dict[tuple[str, str, str], str] = {}
        unique = list(dict.fromkeys(keys))
        for part in chunks(unique, 100):
            where = " OR ".join(
                f"(user_id = ${3 * i + 1} AND device_id = ${3 * i + 2} AND txn_id = ${3 * i + 3})"
                for i in range(len(part))
            )
            rows = await self.db.fetch(
                f"SELECT user_id, device_id, txn_id, event_id FROM client_txns WHERE {where}",
                *(value for key in part for value in key),
            )
            found.update(((r[0], r[1], r[2]), r[3]) for r in rows)
        return [found.get(key) for key in keys]

    async def set_client_txn(
        self, user_id: str, device_id: str | None, txn_id: str, event_id: str
    ) -> str:
        """Record the event a transaction created; return the recorded one (first wins)."""
        async with self.db.transaction() as conn:
            await conn.execute(
                "INSERT INTO client_txns (user_id, device_id, txn_id, event_id, created_ts)"
                " VALUES ($1, $2, $3, $4, $5)"
                " ON CONFLICT (user_id, device_id, txn_id) DO NOTHING",
                user_id,
                device_id or "",
                txn_id,
                event_id,
                now_ms(),
            )
            return await conn.fetchval(
                "SELECT event_id FROM client_txns WHERE user_id = $1 AND device_id = $2"
                " AND txn_id = $3",
                user_id,
                device_id or "",
                txn_id,
            )

    # -- inbound federation transactions ------------------------------------------------

    async def get_inbound_txn(self, origin: str, txn_id: str) -> dict[str, Any] | None:
        raw = await self.db.fetchval(
            "SELECT response FROM federation_inbound_txns WHERE origin = $1 AND txn_id = $2",
            origin,
            txn_id,
        )
        return None if raw is None else load_json(raw)

    async def set_inbound_txn(self, origin: str, txn_id: str, response: dict[str, Any]) -> None:
        """Record our answer to a peer's transaction (its retry gets the same one).
        Every inbound transaction writes one, alongside other processes' writes: it
        allocates nothing, and two inbound workers answering the same retried
        transaction may write in either order."""
        async with self.db.transaction(turn="alongside") as conn:
            await conn.execute(
                "INSERT INTO federation_inbound_txns (origin, txn_id, response, received_ts)"
                " VALUES ($1, $2, $3, $4) ON CONFLICT (origin, txn_id) DO UPDATE"
                " SET response = excluded.response",
                origin,
                txn_id,
                dump_json(response),
                now_ms(),
            )

    # -- outbound queue -----------------------------------------------------------------

    async def enqueue_pdus(self, destinations: Iterable[str], event_id: str) -> None:
        """enqueue_pdu_batch for one event."""
        await self.enqueue_pdu_batch(destinations, [event_id])

    async def enqueue_pdu_batch(
        self, destinations: Iterable[str], event_ids: Sequence[str]
    ) -> None:
        """Queue persisted events (in this order) for each destination; for one that
        is backing off, make the newest its room's catch-up event instead
        (federation_catchup). Batches enqueued while another commits share its next
        transaction (group_commit.py): one commit, not one per event and room.

        Which destinations back off is read at most every DOWN_CACHE_S (this is every
        federated event's path). A stale answer costs nothing but efficiency: an event
        queued for a destination that went down meanwhile is delivered when it is back
        (the backlog bounded by `compact`), and a catch-up event is sent whatever the
        destination's state, so every event lands in one of the two."""
        ts = now_ms()
        dests = list(dict.fromkeys(destinations))
        if not dests or not event_ids:
            return
        failing = await self._failing_destinations()
        queued = [(d, e, ts) for e in event_ids for d in dests if d not in failing]
        caught_up = [(d, e) for e in event_ids for d in dests if d in failing]
        await self._enqueues.submit((queued, caught_up))

    async def _write_enqueues(self, requests: list[_Enqueue]) -> list[None]:
        # The outbox's stream lock (storage/postgres_locks.py): rows are numbered from its
        # sequence and acked as "every id up to N", so they must commit in id order
        # (a lower id committing after the sender acked a higher one would be deleted
        # unsent); other streams' writes and the push actions run beside.
        async with self.db.transaction(turn="alongside", stream="federation_outbox") as conn:
            await conn.executemany(_ENQUEUE_PDU, [row for queued, _ in requests for row in queued])
            await conn.executemany(
                _CATCH_UP_EVENT, [row for _, caught in requests for row in caught]
            )
        return [None] * len(requests)

    async def _failing_destinations(self) -> frozenset[str]:
        """The destinations with a recorded failure, as of at most DOWN_CACHE_S ago
        (or this process's own last change of a retry state)."""
        now = time.monotonic()
        if self._failing is None or now - self._failing_read_at > DOWN_CACHE_S:
            rows = await self.db.fetch(
                "SELECT destination FROM destination_retry WHERE failure_ts IS NOT NULL"
            )
            self._failing = frozenset(r[0] for r in rows)
            self._failing_read_at = now
        return self._failing

    async def enqueue_edu(
        self, destination: str, edu: dict[str, Any], *, transient: bool = False
    ) -> None:
        """Queue an EDU; a `transient` one (typing, presence: stale in seconds) is not
        queued for a destination that is backing off (as of DOWN_CACHE_S ago)."""
        if transient and destination in await self._failing_destinations():
            return
        async with self.db.transaction(turn="alongside", stream="federation_outbox") as conn:
            await conn.execute(
                "INSERT INTO federation_outbox (destination, edu, edu_type, created_ts)"
                " VALUES ($1, $2, $3, $4)",
                destination,
                dump_json(edu),
                str(edu.get("edu_type", "")),
                now_ms(),
            )

    async def peek(
        self, destination: str, pdu_limit: int = 50, edu_limit: int = 100
    ) -> OutboxBatch:
        """The destination's catch-up events (oldest first), then the oldest queued
        items, in order, within both limits.

        The queued part is a contiguous prefix of the queue (it stops at the first item
        that would exceed its kind's limit), so acking `up_to_id` never drops unsent
        items.
        """
        batch = OutboxBatch()
        for room_id, event_id in await self.db.fetch(
            "SELECT room_id, event_id FROM federation_catchup WHERE destination = $1"
            " ORDER BY stream_ordering LIMIT $2",
            destination,
            pdu_limit,
        ):
            batch.catch_up.append((room_id, event_id))
            batch.pdu_event_ids.append(event_id)
        rows = await self.db.fetch(
            "SELECT id, event_id, edu FROM federation_outbox WHERE destination = $1"
            " ORDER BY id LIMIT $2",
            destination,
            pdu_limit + edu_limit,
        )
        for row in rows:
            if row[1] is not None:
                if len(batch.pdu_event_ids) >= pdu_limit:
                    break
                batch.pdu_event_ids.append(row[1])
            else:
                if len(batch.edus) >= edu_limit:
                    break
                batch.edus.append(load_json(row[2]))
            batch.up_to_id = int(row[0])
        return batch

    async def ack(
        self, destination: str, up_to_id: int, catch_up: Sequence[tuple[str, str]] = ()
    ) -> int:
        """Drop the destination's items up to and including `up_to_id`, and the
        catch-up events sent (they were sent, or refused for good)."""
        async with self.db.transaction() as conn:
            await _drop_caught_up(conn, destination, catch_up)
            return await conn.execute(
                "DELETE FROM federation_outbox WHERE destination = $1 AND id <= $2",
                destination,
                up_to_id,
            )

    async def compact(self, destination: str, bounds: BacklogBounds) -> bool:
        """Bound a destination's backlog: past `max_pdus` queued PDUs, all of them
        become catch-up events (the newest per room); past `max_trimmable_edus` EDUs of
        the trimmable types, the oldest of those go; past `max_coalescable_edus` of the
        coalescable types, only the newest per (type, user) stays. Whether anything
        changed. Works in batches of COMPACT_BATCH rows, each its own transaction."""
        changed = False
        queued = await self.db.fetchval(
            "SELECT COUNT(*) FROM (SELECT 1 FROM federation_outbox WHERE destination = $1"
            " AND event_id IS NOT NULL LIMIT $2) backlog",
            destination,
            bounds.max_pdus + 1,
        )
        if int(queued) > bounds.max_pdus:
            changed = True
            while await self._fold_pdus(destination):
                pass
        trimmable = bounds.trimmable_edu_types
        if await self.trim_edus(destination, trimmable, bounds.max_trimmable_edus):
            changed = True
        capped, cap = bounds.capped_edu_types, bounds.max_capped_edus
        if cap > 0 and (lost := await self.trim_edus(destination, capped, cap)):
            changed = True
            log.warning(
                "%s has %d more %s queued than the cap of %d: dropped the oldest",
                destination,
                lost,
                "/".join(capped),
                cap,
            )
        coalescable = bounds.coalescable_edu_types
        if await self._nth_edu(destination, coalescable, bounds.max_coalescable_edus, False):
            changed = await self._coalesce_edus(destination, coalescable) or changed
        return changed

    async def trim_edus(self, destination: str, edu_types: Sequence[str], keep: int) -> int:
        """Keep the newest `keep` queued EDUs of `edu_types`; how many went."""
        cutoff = await self._nth_edu(destination, edu_types, keep, True)
        if cutoff is None:
            return 0
        return await self.db.execute(
            "DELETE FROM federation_outbox WHERE destination = $1 AND id <= $2"
            f" AND edu_type IN ({placeholders(len(edu_types), start=3)})",
            destination,
            cutoff,
            *edu_types,
        )

    async def _nth_edu(
        self, destination: str, edu_types: Sequence[str], n: int, newest_first: bool
    ) -> int | None:
        """The ID of the destination's queued EDU of `edu_types` after the first `n`
        (newest or oldest first); None if it has no more than `n` of them."""
        if not edu_types:
            return None
        found = await self.db.fetchval(
            "SELECT id FROM federation_outbox WHERE destination = $1 AND edu_type IN"
            f" ({placeholders(len(edu_types), start=3)}) ORDER BY id"
            f"{' DESC' if newest_first else ''} LIMIT 1 OFFSET $2",
            destination,
            n,
            *edu_types,
        )
        return None if found is None else int(found)

    async def _coalesce_edus(self, destination: str, edu_types: Sequence[str]) -> bool:
        """Keep only the newest queued EDU of `edu_types` per (type, user_id of its
        content), a page of COMPACT_BATCH rows at a time; whether any went."""
        types = placeholders(len(edu_types), start=4)
        newest: dict[tuple[str, str], int] = {}  # at most one entry per local user
        after, dropped = 0, False
        while True:
            rows = await self.db.fetch(
                "SELECT id, edu_type, edu FROM federation_outbox WHERE destination = $1"
                f" AND id > $2 AND edu_type IN ({types}) ORDER BY id LIMIT $3",
                destination,
                after,
                COMPACT_BATCH,
                *edu_types,
            )
            doomed: list[int] = []
            for row_id, edu_type, edu in rows:
                content = load_json(edu).get("content")
                user = content.get("user_id") if isinstance(content, dict) else None
                key = (str(edu_type), str(user))
                if key in newest:
                    doomed.append(newest[key])
                newest[key] = int(row_id)
            for part in chunks(doomed):
                await self.db.execute(
                    f"DELETE FROM federation_outbox WHERE id IN ({placeholders(len(part))})",
                    *part,
                )
            dropped = dropped or bool(doomed)
            if len(rows) < COMPACT_BATCH:
                return dropped
            after = int(rows[-1][0])

    async def _fold_pdus(self, destination: str) -> bool:
        """Turn the oldest COMPACT_BATCH queued PDUs into catch-up events; whether
        there may be more."""
        async with self.db.transaction() as conn:
            rows = await conn.fetch(
                "SELECT o.id, e.room_id, e.event_id, e.stream_ordering FROM federation_outbox o"
                " LEFT JOIN events e ON e.event_id = o.event_id WHERE o.destination = $1"
                " AND o.event_id IS NOT NULL ORDER BY o.id LIMIT $2",
                destination,
                COMPACT_BATCH,
            )
            newest: dict[str, tuple[str, int]] = {}
            for _id, room_id, event_id, ordering in rows:
                if room_id is None:
                    continue  # purged since: nothing to send
                if room_id not in newest or int(ordering) > newest[room_id][1]:
                    newest[room_id] = (event_id, int(ordering))
            await conn.executemany(
                _CATCH_UP, [(destination, r, e, so) for r, (e, so) in newest.items()]
            )
            for part in chunks([int(r[0]) for r in rows]):
                await conn.execute(
                    f"DELETE FROM federation_outbox WHERE id IN ({placeholders(len(part))})",
                    *part,
                )
        return len(rows) == COMPACT_BATCH

    async def ack_delivery(
        self,
        destination: str,
        up_to_id: int,
        event_ids: Iterable[str],
        ts: int | None = None,
        catch_up: Sequence[tuple[str, str]] = (),
    ) -> None:
        """`ack`, and in the same transaction remember the delivery for the admin API:
        the destination's last success (time, newest stream ordering) and, per room, the
        newest event it now has (`federation_destinations`, `destination_rooms`)."""
        ids = list(dict.fromkeys(event_ids))
        when = ts if ts is not None else now_ms()
        async with self.db.transaction() as conn:
            await _drop_caught_up(conn, destination, catch_up)
            await conn.execute(
                "DELETE FROM federation_outbox WHERE destination = $1 AND id <= $2",
                destination,
                up_to_id,
            )
            newest: dict[str, int] = {}
            for part in chunks(ids):
                for room_id, ordering in await conn.fetch(
                    "SELECT room_id, MAX(stream_ordering) FROM events"
                    f" WHERE event_id IN ({placeholders(len(part))}) GROUP BY room_id",
                    *part,
                ):
                    newest[room_id] = max(int(ordering), newest.get(room_id, int(ordering)))
            await conn.executemany(
                "INSERT INTO destination_rooms (destination, room_id, stream_ordering)"
                " VALUES ($1, $2, $3) ON CONFLICT (destination, room_id) DO UPDATE SET"
                " stream_ordering = excluded.stream_ordering"
                " WHERE excluded.stream_ordering > destination_rooms.stream_ordering",
                [(destination, room, so) for room, so in newest.items()],
            )
            top = max(newest.values(), default=None)
            await conn.execute(
                "INSERT INTO federation_destinations"
                " (destination, last_success_ts, last_successful_stream_ordering)"
                " VALUES ($1, $2, $3) ON CONFLICT (destination) DO UPDATE SET"
                " last_success_ts = excluded.last_success_ts,"
                " last_successful_stream_ordering = COALESCE("
                "excluded.last_successful_stream_ordering,"
                " federation_destinations.last_successful_stream_ordering)",
                destination,
                when,
                top,
            )

    async def destinations_with_pending(self) -> list[str]:
        rows = await self.db.fetch(
            "SELECT destination FROM federation_outbox UNION"
            " SELECT destination FROM federation_catchup ORDER BY destination"
        )
        return [r[0] for r in rows]

    # -- per-destination retry state ----------------------------------------------------

    async def get_retry_state(self, destination: str) -> RetryState | None:
        row = await self.db.fetchrow(
            "SELECT destination, failure_ts, retry_last_ts, retry_interval_ms"
            " FROM destination_retry WHERE destination = $1",
            destination,
        )
        return None if row is None else RetryState(row[0], row[1], int(row[2]), int(row[3]))

    async def set_retry_state(
        self, destination: str, failure_ts: int | None, retry_last_ts: int, retry_interval_ms: int
    ) -> None:
        await self.db.execute(
            "INSERT INTO destination_retry"
            " (destination, failure_ts, retry_last_ts, retry_interval_ms) VALUES ($1, $2, $3, $4)"
            " ON CONFLICT (destination) DO UPDATE SET failure_ts = excluded.failure_ts,"
            " retry_last_ts = excluded.retry_last_ts,"
            " retry_interval_ms = excluded.retry_interval_ms",
            destination,
            failure_ts,
            retry_last_ts,
            retry_interval_ms,
        )
        self._failing = None

    async def clear_retry_state(self, destination: str) -> None:
        await self.db.execute("DELETE FROM destination_retry WHERE destination = $1", destination)
        self._failing = None

    async def get_all_retry_states(self) -> list[RetryState]:
        rows = await self.db.fetch(
            "SELECT destination, failure_ts, retry_last_ts, retry_interval_ms FROM destination_retry"
        )
        return [RetryState(r[0], r[1], int(r[2]), int(r[3])) for r in rows]


async def _drop_caught_up(
    conn: Connection, destination: str, catch_up: Sequence[tuple[str, str]]
) -> None:
    """Delete the catch-up events sent, unless a newer event has taken a room's place."""
    if catch_up:
        await conn.executemany(
            "DELETE FROM federation_catchup WHERE destination = $1 AND room_id = $2"
            " AND event_id = $3",
            [(destination, room_id, event_id) for room_id, event_id in catch_up],
        )
