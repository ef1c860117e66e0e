"""Sliding sync's stored state (migration 0014): room bump stamps, connection positions."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from homeserver.events import Event

from ._util import chunks, dump_json, load_json, now_ms, placeholders
from .database import Connection, Database

# Sliding sync connections (conn_ids) one device may have at once (matrix-rust-sdk uses 3).
MAX_CONNECTIONS_PER_DEVICE = 16

# Events that move a room up the list (Synapse's choice).
BUMP_EVENT_TYPES = frozenset(
    {
        "m.room.create",
        "m.room.message",
        "m.room.encrypted",
        "m.sticker",
        "m.call.invite",
        "m.poll.start",
        "org.matrix.msc3381.poll.start",
        "m.beacon",
        "org.matrix.msc3672.beacon",
    }
)


async def record_bumps(conn: Connection, items: Sequence[tuple[Event, int]]) -> None:
    """In the persisting transaction: raise rooms' bump stamps (never lower them, so a
    backfilled old message leaves the room where it is)."""
    newest: dict[str, int] = {}
    for event, stream in items:
        if event.type in BUMP_EVENT_TYPES and stream > 0:
            newest[event.room_id] = max(stream, newest.get(event.room_id, 0))
    if newest:
        await conn.executemany(
            "INSERT INTO room_bump_stamps (room_id, stream_ordering) VALUES ($1, $2)"
            " ON CONFLICT (room_id) DO UPDATE SET stream_ordering = excluded.stream_ordering"
            " WHERE excluded.stream_ordering > room_bump_stamps.stream_ordering",
            list(newest.items()),
        )


@dataclass
class Snapshot:
    """What one position of a connection covered."""

    token: str  # the sync StreamToken the position ends at
    rooms: dict[str, dict[str, Any]]  # room_id -> {"ts": events position sent, "rs": key}


class SlidingSyncStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def bump_stamps(self, room_ids: Iterable[str]) -> dict[str, int]:
        out: dict[str, int] = {}
        for part in chunks(list(room_ids)):
            rows = await self.db.fetch(
                "SELECT room_id, stream_ordering FROM room_bump_stamps"
                f" WHERE room_id IN ({placeholders(len(part))})",
                *part,
            )
            out.update((r[0], int(r[1])) for r in rows)
        return out

    async def get(self, user_id: str, device_id: str, conn_id: str, pos: int) -> Snapshot | None:
        row = await self.db.fetchrow(
            "SELECT token, rooms FROM sliding_sync_positions WHERE user_id = $1"
            " AND device_id = $2 AND conn_id = $3 AND pos = $4",
            user_id,
            device_id,
            conn_id,
            pos,
        )
        return None if row is None else Snapshot(row[0], load_json(row[1]))

    async def put(
        self,
        user_id: str,
        device_id: str,
        conn_id: str,
        pos: int,
        snapshot: Snapshot,
        keep: int | None,
        *,
        rooms_json: str | None = None,
    ) -> None:
        """Store a new position; drop the connection's others except `keep` (the one
        the request acknowledged: a retry of it must still work). `rooms_json`: the
        snapshot's rooms already serialised. Written alongside other processes' writes
        (every sliding sync response of a client reader writes one): positions are
        random, not allocated, and the rows are this device's alone."""
        async with self.db.transaction(turn="alongside") as conn:
            await conn.execute(
                "DELETE FROM sliding_sync_positions WHERE user_id = $1 AND device_id = $2"
                " AND conn_id = $3 AND pos <> $4",
                user_id,
                device_id,
                conn_id,
                -1 if keep is None else keep,
            )
            await conn.execute(
                "INSERT INTO sliding_sync_positions (user_id, device_id, conn_id, pos, token,"
                " rooms, created_ts) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                user_id,
                device_id,
                conn_id,
                pos,
                snapshot.token,
                rooms_json if rooms_json is not None else dump_json(snapshot.rooms),
                now_ms(),
            )
            # A device keeps at most MAX_CONNECTIONS_PER_DEVICE connections (a client
            # inventing conn_ids cannot fill the table): the least recently used go.
            await conn.execute(
                "DELETE FROM sliding_sync_positions WHERE user_id = $1 AND device_id = $2"
                " AND conn_id NOT IN (SELECT conn_id FROM sliding_sync_positions"
                " WHERE user_id = $1 AND device_id = $2 GROUP BY conn_id"
                " ORDER BY MAX(created_ts) DESC, conn_id LIMIT $3)",
                user_id,
                device_id,
                MAX_CONNECTIONS_PER_DEVICE,
            )

    async def expire(self, before_ts: int) -> int:
        return await self.db.execute(
            "DELETE FROM sliding_sync_positions WHERE created_ts < $1", before_ts
        )
