"""AppServiceStore: each appservice's position in the event stream (migration 0015)."""

from __future__ import annotations

from .database import Database


class AppServiceStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def get_position(self, service_id: str) -> int | None:
        value = await self.db.fetchval(
            "SELECT stream_ordering FROM appservice_positions WHERE service_id = $1", service_id
        )
        return None if value is None else int(value)

    async def set_position(self, service_id: str, stream_ordering: int) -> None:
        await self.db.execute(
            "INSERT INTO appservice_positions (service_id, stream_ordering) VALUES ($1, $2)"
            " ON CONFLICT (service_id) DO UPDATE SET stream_ordering = excluded.stream_ordering",
            service_id,
            stream_ordering,
        )
