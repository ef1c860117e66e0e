"""TransactionStore: idempotency records and the durable federation outbox.

- Client transaction IDs map (user, device, txn_id) to the event they created, so a
  retried PUT returns the same event instead of sending twice.
- Inbound federation transactions map (origin, txn_id) to the response we gave.
- The outbox holds, per destination and in order, PDUs (by event ID) and EDUs (as JSON)
  that must still be sent; the sender peeks a batch, sends it and acks it, so a crash
  between persisting an event and sending it loses nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ._util import chunks, dump_json, load_json, now_ms, placeholders
from .database import Database


@dataclass
class OutboxBatch:
    """A contiguous prefix of a destination's queue; ack `up_to_id` once sent."""

    pdu_event_ids: list[str] = field(default_factory=list)
    edus: list[dict[str, Any]] = field(default_factory=list)
    up_to_id: int = 0

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

    # -- client transaction IDs ---------------------------------------------------------

    async def get_client_txn(self, user_id: str, device_id: str | None, txn_id: str) -> str | None:
        return await self.db.fetchval(
            "SELECT event_id FROM client_txns WHERE user_id = $1 AND device_id = $2"
            " AND txn_id = $3",
            user_id,
            device_id or "",
            txn_id,
        )

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
        await self.db.execute(
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
        ts = now_ms()
        await self.db.executemany(
            "INSERT INTO federation_outbox (destination, event_id, created_ts) VALUES ($1, $2, $3)",
            [(d, event_id, ts) for d in dict.fromkeys(destinations)],
        )

    async def enqueue_edu(self, destination: str, edu: dict[str, Any]) -> None:
        await self.db.execute(
            "INSERT INTO federation_outbox (destination, edu, created_ts) VALUES ($1, $2, $3)",
            destination,
            dump_json(edu),
            now_ms(),
        )

    async def peek(
        self, destination: str, pdu_limit: int = 50, edu_limit: int = 100
    ) -> OutboxBatch:
        """The oldest queued items for `destination`, in order, within both limits.

        The batch is a contiguous prefix of the queue (it stops at the first item that
        would exceed its kind's limit), so acking `up_to_id` never drops unsent items.
        """
        rows = await self.db.fetch(
            "SELECT id, event_id, edu FROM federation_outbox WHERE destination = $1"
            " ORDER BY id LIMIT $2",
            destination,
            pdu_limit + edu_limit,
        )
        batch = OutboxBatch()
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

    async def ack(self, destination: str, up_to_id: int) -> int:
        """Drop the destination's items up to and including `up_to_id` (they were sent)."""
        return await self.db.execute(
            "DELETE FROM federation_outbox WHERE destination = $1 AND id <= $2",
            destination,
            up_to_id,
        )

    async def ack_delivery(
        self, destination: str, up_to_id: int, event_ids: Iterable[str], ts: int | None = None
    ) -> None:
        """`ack`, and in the same transaction remember the delivery for the admin API:
        the destination's last success (time, newest stream ordering) and, per room, the
        newest event it now has (`federation_destinations`, `destination_rooms`)."""
        ids = list(dict.fromkeys(event_ids))
        when = ts if ts is not None else now_ms()
        async with self.db.transaction() as conn:
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
            "SELECT DISTINCT destination FROM federation_outbox ORDER BY destination"
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

    async def clear_retry_state(self, destination: str) -> None:
        await self.db.execute("DELETE FROM destination_retry WHERE destination = $1", destination)

    async def get_all_retry_states(self) -> list[RetryState]:
        rows = await self.db.fetch(
            "SELECT destination, failure_ts, retry_last_ts, retry_interval_ms FROM destination_retry"
        )
        return [RetryState(r[0], r[1], int(r[2]), int(r[3])) for r in rows]
