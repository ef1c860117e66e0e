"""PresenceStore: the last known presence of each user (local and remote)."""

from __future__ import annotations

from dataclasses import dataclass

from .database import Database


@dataclass(frozen=True)
class PresenceRow:
    user_id: str
    state: str
    status_msg: str | None
    last_active_ts: int
    currently_active: bool
    stream_id: int


class PresenceStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def get_max_stream_id(self) -> int:
        return int(await self.db.fetchval("SELECT MAX(stream_id) FROM presence") or 0)

    async def upsert(self, row: PresenceRow) -> None:
        await self.upsert_many([row])

    async def upsert_many(self, rows: list[PresenceRow]) -> None:
        """Store the rows (one per user) in one transaction, alongside other processes'
        writes: positions come from the presence writer's counter, not from this
        table, and the rows go in user order, so two batches touching the same users
        wait for each other rather than deadlock."""
        async with self.db.transaction(turn="alongside") as conn:
            await conn.executemany(
                "INSERT INTO presence (user_id, state, status_msg, last_active_ts,"
                " currently_active, stream_id) VALUES ($1, $2, $3, $4, $5, $6)"
                " ON CONFLICT (user_id) DO UPDATE SET state = excluded.state,"
                " status_msg = excluded.status_msg,"
                " last_active_ts = excluded.last_active_ts,"
                " currently_active = excluded.currently_active,"
                " stream_id = excluded.stream_id",
                [
                    (
                        r.user_id,
                        r.state,
                        r.status_msg,
                        r.last_active_ts,
                        r.currently_active,
                        r.stream_id,
                    )
                    for r in sorted(rows, key=lambda r: r.user_id)
                ],
            )

    async def get_all(self) -> list[PresenceRow]:
        """Every stored presence (loaded once at startup into the presence service)."""
        rows = await self.db.fetch(
            "SELECT user_id, state, status_msg, last_active_ts, currently_active, stream_id"
            " FROM presence"
        )
        return [PresenceRow(r[0], r[1], r[2], int(r[3]), bool(r[4]), int(r[5])) for r in rows]
