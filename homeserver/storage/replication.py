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
        return await self._events.read_stream(since, upto, limit)

    async def worker_position(self, instance: str, stream: str) -> int | None:
        """How far `instance` has handled `stream` (None: it never ran)."""
        value = await self.db.fetchval(
            "SELECT position FROM worker_positions WHERE instance = $1 AND stream = $2",
            instance,
            stream,
        )
        return None if value is None else int(value)

    async def set_worker_position(self, instance: str, stream: str, position: int) -> None:
        await self.db.execute(
            "INSERT INTO worker_positions (instance, stream, position) VALUES ($1, $2, $3)"
            " ON CONFLICT (instance, stream) DO UPDATE SET position = excluded.position",
            instance,
            stream,
            position,
        )

    async def latest_in_room(self, room_id: str) -> int:
        """The room's newest stream position (0 for none): whether someone else wrote it."""
        value = await self.db.fetchval(
            "SELECT MAX(stream_ordering) FROM events WHERE room_id = $1", room_id
        )
        return int(value or 0)
