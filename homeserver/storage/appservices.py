"""AppServiceStore: each appservice's position in the event stream (migration 0015)."""

from __future__ import annotations

from homeserver.events import Event

from .database import Database
from .events import EventStore


class AppServiceStore:
    def __init__(self, db: Database, events: EventStore) -> None:
        self.db = db
        self._events = events

    async def timeline_after(self, since: int, upto: int, limit: int) -> list[tuple[Event, int]]:
        """Timeline events of every room in (since, upto], oldest first, at most `limit`
        (an appservice catching up after a restart)."""
        rows = await self.db.fetch(
            "SELECT stream_ordering, event_id FROM events WHERE stream_ordering > $1"
            " AND stream_ordering <= $2 AND NOT outlier AND NOT soft_failed"
            " AND rejected_reason IS NULL ORDER BY stream_ordering LIMIT $3",
            since,
            upto,
            limit,
        )
        loaded = await self._events.get_events([r[1] for r in rows])
        return [(loaded[r[1]], int(r[0])) for r in rows if r[1] in loaded]

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
