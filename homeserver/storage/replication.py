"""What a worker reads to follow the event stream that another process writes."""

from __future__ import annotations

from homeserver.events import Event

from .database import Database
from .events import EventStore


class ReplicationStore:
    def __init__(self, db: Database, events: EventStore) -> None:
        self.db = db
        self._events = events

    async def events_after(
        self, since: int, upto: int, limit: int
    ) -> list[tuple[Event, int, bool]]:
        """Events announced in (since, upto], in stream order, at most `limit`:
        (event, stream ordering, outlier). Rejected and soft-failed events are left out,
        as the writer tells its listeners nothing of them."""
        rows = await self.db.fetch(
            "SELECT stream_ordering, event_id, outlier FROM events WHERE stream_ordering > $1"
            " AND stream_ordering <= $2 AND NOT soft_failed AND rejected_reason IS NULL"
            " ORDER BY stream_ordering LIMIT $3",
            since,
            upto,
            limit,
        )
        loaded = await self._events.get_events([r[1] for r in rows])
        return [(loaded[r[1]], int(r[0]), bool(r[2])) for r in rows if r[1] in loaded]
