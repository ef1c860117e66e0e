"""RoomReadStore: the rooms area's own queries (forgotten rooms, time lookups, txn IDs).

Kept apart from the core stores (migration 0003) so the client rooms area owns its
schema; every query here is an indexed lookup.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from ._util import chunks, now_ms, placeholders
from .database import Database

# Events that belong on a client-visible timeline (same rule as EventStore).
_TIMELINE = "NOT outlier AND NOT soft_failed AND rejected_reason IS NULL"


class RoomReadStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # -- forgotten rooms ---------------------------------------------------------------

    async def forget_room(self, user_id: str, room_id: str) -> None:
        await self.db.execute(
            "INSERT INTO room_forgotten (user_id, room_id, forgotten_ts) VALUES ($1, $2, $3)"
            " ON CONFLICT (user_id, room_id) DO NOTHING",
            user_id,
            room_id,
            now_ms(),
        )

    async def unforget_room(self, user_id: str, room_id: str) -> None:
        await self.db.execute(
            "DELETE FROM room_forgotten WHERE user_id = $1 AND room_id = $2", user_id, room_id
        )

    async def is_forgotten(self, user_id: str, room_id: str) -> bool:
        row = await self.db.fetchval(
            "SELECT 1 FROM room_forgotten WHERE user_id = $1 AND room_id = $2", user_id, room_id
        )
        return row is not None

    async def get_forgotten_rooms(self, user_id: str) -> set[str]:
        rows = await self.db.fetch("SELECT room_id FROM room_forgotten WHERE user_id = $1", user_id)
        return {r[0] for r in rows}

    # -- timeline lookups ----------------------------------------------------------------

    async def event_closest_to_ts(
        self, room_id: str, ts: int, direction: Literal["f", "b"]
    ) -> tuple[str, int] | None:
        """(event_id, origin_server_ts) of the first timeline event at/after `ts` ("f") or
        at/before it ("b")."""
        if direction == "f":
            sql = (
                "SELECT event_id, origin_server_ts FROM events WHERE room_id = $1"
                f" AND origin_server_ts >= $2 AND {_TIMELINE}"
                " ORDER BY origin_server_ts ASC, stream_ordering ASC LIMIT 1"
            )
        else:
            sql = (
                "SELECT event_id, origin_server_ts FROM events WHERE room_id = $1"
                f" AND origin_server_ts <= $2 AND {_TIMELINE}"
                " ORDER BY origin_server_ts DESC, stream_ordering DESC LIMIT 1"
            )
        row = await self.db.fetchrow(sql, room_id, ts)
        return None if row is None else (row[0], int(row[1]))

    async def last_event_at(self, room_id: str, stream_pos: int) -> str | None:
        """The room's last timeline event at or below a stream position."""
        return await self.db.fetchval(
            "SELECT event_id FROM events WHERE room_id = $1 AND stream_ordering <= $2"
            f" AND {_TIMELINE} ORDER BY stream_ordering DESC LIMIT 1",
            room_id,
            stream_pos,
        )

    async def max_room_stream(self, room_id: str) -> int | None:
        value = await self.db.fetchval(
            "SELECT MAX(stream_ordering) FROM events WHERE room_id = $1", room_id
        )
        return None if value is None else int(value)

    async def min_room_stream(self, room_id: str) -> int | None:
        value = await self.db.fetchval(
            "SELECT MIN(stream_ordering) FROM events WHERE room_id = $1", room_id
        )
        return None if value is None else int(value)

    # -- state groups --------------------------------------------------------------------

    async def get_prev_groups(self, groups: Iterable[int]) -> dict[int, int]:
        """state group -> the group it was derived from (its parent), where there is one."""
        ids = list(dict.fromkeys(groups))
        out: dict[int, int] = {}
        for part in chunks(ids):
            rows = await self.db.fetch(
                "SELECT id, prev_group FROM state_groups"
                f" WHERE id IN ({placeholders(len(part))}) AND prev_group IS NOT NULL",
                *part,
            )
            out.update({int(r[0]): int(r[1]) for r in rows})
        return out

    # -- transaction IDs -----------------------------------------------------------------

    async def get_txn_ids(
        self, user_id: str, device_id: str | None, event_ids: Iterable[str]
    ) -> dict[str, str]:
        """event_id -> transaction ID, for events this device sent with one."""
        ids = list(dict.fromkeys(event_ids))
        out: dict[str, str] = {}
        for part in chunks(ids):
            rows = await self.db.fetch(
                "SELECT event_id, txn_id FROM client_txns WHERE user_id = $1 AND device_id = $2"
                f" AND event_id IN ({placeholders(len(part), start=3)})",
                user_id,
                device_id or "",
                *part,
            )
            out.update({r[0]: r[1] for r in rows})
        return out
