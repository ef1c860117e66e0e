"""DelayedEventStore: the events users scheduled for later (MSC4140), table delayed_events.

A row is scheduled while `finalised_ts` is NULL and finalised once sent, cancelled or
failed. Every change of a scheduled row is one conditional statement (`... AND
finalised_ts IS NULL`), so of two racing changes (the owner's cancel and the timer's
send) exactly one wins and the other sees "not found".

Bounds (rows a user can make us hold): `add` refuses past `limit` scheduled rows per
user; finalised rows are kept FINALISED_KEEP_MS and at most FINALISED_PER_USER per
user (the oldest are deleted as new ones are finalised).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ._util import dump_json, load_json
from .database import Database

FINALISED_KEEP_MS = 24 * 3600 * 1000
FINALISED_PER_USER = 50
_COLUMNS = (
    "delay_id, user_id, device_id, room_id, event_type, state_key, content, delay_ms,"
    " send_ts, finalised_ts, outcome, reason, event_id, error"
)


class TooManyScheduled(Exception):
    """The user already has as many scheduled delayed events as allowed."""


@dataclass(frozen=True)
class DelayedEvent:
    delay_id: str
    user_id: str
    device_id: str | None
    room_id: str
    event_type: str
    state_key: str | None
    content: dict[str, Any]
    delay_ms: int
    send_ts: int
    finalised_ts: int | None = None
    outcome: str | None = None  # "send" | "cancel"
    reason: str | None = None  # "action" | "delay" | "error"
    event_id: str | None = None
    error: dict[str, Any] | None = None

    @property
    def scheduled(self) -> bool:
        return self.finalised_ts is None


def _row(r: Sequence[Any]) -> DelayedEvent:
    return DelayedEvent(
        delay_id=r[0],
        user_id=r[1],
        device_id=r[2],
        room_id=r[3],
        event_type=r[4],
        state_key=r[5],
        content=load_json(r[6]),
        delay_ms=int(r[7]),
        send_ts=int(r[8]),
        finalised_ts=None if r[9] is None else int(r[9]),
        outcome=r[10],
        reason=r[11],
        event_id=r[12],
        error=None if r[13] is None else load_json(r[13]),
    )


class DelayedEventStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def add(self, event: DelayedEvent, limit: int, txn_key: str | None = None) -> str:
        """Schedule `event` and return its delay_id, or the delay_id the same client
        transaction (`txn_key`) already got; TooManyScheduled if its user has `limit`
        scheduled already."""
        async with self.db.transaction() as conn:
            if txn_key is not None:
                existing = await conn.fetchval(
                    "SELECT delay_id FROM delayed_events WHERE user_id = $1 AND txn_key = $2",
                    event.user_id,
                    txn_key,
                )
                if existing is not None:
                    return str(existing)
            count = await conn.fetchval(
                "SELECT COUNT(*) FROM delayed_events WHERE user_id = $1 AND finalised_ts IS NULL",
                event.user_id,
            )
            if int(count) >= limit:
                raise TooManyScheduled()
            await conn.execute(
                "INSERT INTO delayed_events (delay_id, user_id, device_id, room_id,"
                " event_type, state_key, content, delay_ms, send_ts, txn_key)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                event.delay_id,
                event.user_id,
                event.device_id,
                event.room_id,
                event.event_type,
                event.state_key,
                dump_json(event.content),
                event.delay_ms,
                event.send_ts,
                txn_key,
            )
        return event.delay_id

    async def get(self, delay_id: str) -> DelayedEvent | None:
        row = await self.db.fetchrow(
            f"SELECT {_COLUMNS} FROM delayed_events WHERE delay_id = $1", delay_id
        )
        return None if row is None else _row(row)

    async def of_user(self, user_id: str, now: int) -> list[DelayedEvent]:
        """The user's delayed events: scheduled ones by send time, then the finalised
        ones still kept, oldest first."""
        rows = await self.db.fetch(
            f"SELECT {_COLUMNS} FROM delayed_events WHERE user_id = $1"
            " AND (finalised_ts IS NULL OR finalised_ts > $2)"
            " ORDER BY finalised_ts IS NOT NULL, COALESCE(finalised_ts, send_ts), delay_id",
            user_id,
            now - FINALISED_KEEP_MS,
        )
        return [_row(r) for r in rows]

    async def restart(self, delay_id: str, now: int) -> bool:
        """Start the delay over from `now`; False if not scheduled (any more)."""
        changed = await self.db.execute(
            "UPDATE delayed_events SET send_ts = $2 + delay_ms"
            " WHERE delay_id = $1 AND finalised_ts IS NULL",
            delay_id,
            now,
        )
        return changed > 0

    async def finalise(
        self,
        event: DelayedEvent,
        outcome: str,
        reason: str,
        now: int,
        *,
        event_id: str | None = None,
        error: dict[str, Any] | None = None,
    ) -> bool:
        """Mark `event` finalised; False if it already was (someone else won). Prunes
        the owner's finalised rows past FINALISED_PER_USER in the same transaction."""
        async with self.db.transaction() as conn:
            changed = await conn.execute(
                "UPDATE delayed_events SET finalised_ts = $2, outcome = $3, reason = $4,"
                " event_id = $5, error = $6 WHERE delay_id = $1 AND finalised_ts IS NULL",
                event.delay_id,
                now,
                outcome,
                reason,
                event_id,
                None if error is None else dump_json(error),
            )
            if changed:
                await conn.execute(
                    "DELETE FROM delayed_events WHERE user_id = $1"
                    " AND finalised_ts IS NOT NULL AND delay_id NOT IN ("
                    " SELECT delay_id FROM delayed_events WHERE user_id = $1"
                    " AND finalised_ts IS NOT NULL"
                    " ORDER BY finalised_ts DESC, delay_id LIMIT $2)",
                    event.user_id,
                    FINALISED_PER_USER,
                )
        return changed > 0

    async def due(self, now: int, limit: int) -> list[DelayedEvent]:
        """Scheduled events whose time has come, earliest first."""
        rows = await self.db.fetch(
            f"SELECT {_COLUMNS} FROM delayed_events"
            " WHERE finalised_ts IS NULL AND send_ts <= $1 ORDER BY send_ts LIMIT $2",
            now,
            limit,
        )
        return [_row(r) for r in rows]

    async def next_send_ts(self) -> int | None:
        value = await self.db.fetchval(
            "SELECT MIN(send_ts) FROM delayed_events WHERE finalised_ts IS NULL"
        )
        return None if value is None else int(value)

    async def scheduled_state(self) -> list[tuple[str, str, str]]:
        """(room, type, state key) of every scheduled state event (loaded at start)."""
        rows = await self.db.fetch(
            "SELECT room_id, event_type, state_key FROM delayed_events"
            " WHERE finalised_ts IS NULL AND state_key IS NOT NULL"
        )
        return [(r[0], r[1], r[2]) for r in rows]

    async def drop_state_of_others(
        self, room_id: str, event_type: str, state_key: str, sender: str
    ) -> int:
        """Delete the scheduled state events for this piece of state that `sender` does
        not own: someone else set it, so theirs would overwrite a newer decision."""
        return await self.db.execute(
            "DELETE FROM delayed_events WHERE room_id = $1 AND event_type = $2"
            " AND state_key = $3 AND user_id <> $4 AND finalised_ts IS NULL",
            room_id,
            event_type,
            state_key,
            sender,
        )

    async def prune(self, now: int) -> int:
        """Delete finalised rows older than FINALISED_KEEP_MS."""
        return await self.db.execute(
            "DELETE FROM delayed_events WHERE finalised_ts IS NOT NULL AND finalised_ts <= $1",
            now - FINALISED_KEEP_MS,
        )
