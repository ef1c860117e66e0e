"""Rooms' message retention policies (MSC1763) as the database holds them, and the
reads that apply them: which events clients may no longer be served, and where a purge
job's cut falls in a room.

A room's policy is its current `m.room.retention` state event (read from current_state
through a partial index on that type, migration 0065), else the server's default policy
(config/retention.py). Nothing is cached here: a policy change is seen by the next
read on every process, with one indexed query per read (per batch of rooms).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from homeserver.config.retention import RetentionSettings
from homeserver.events.retention import RETENTION_TYPE, room_lifetimes

from ._util import chunks, placeholders
from .database import Database

if TYPE_CHECKING:
    from homeserver.events import Event

    from .events import EventStore

# Past any stream ordering: "everything up to now".
FAR_FUTURE = 2**62


def clock_ms() -> int:
    """The wall clock in milliseconds (tests monkeypatch this module's function)."""
    return int(time.time() * 1000)


class RoomRetention:
    def __init__(
        self, db: Database, events: EventStore, settings: RetentionSettings | None = None
    ) -> None:
        self.db = db
        self._events = events
        self.settings = settings or RetentionSettings()

    @property
    def enabled(self) -> bool:
        return self.settings.enabled

    async def room_max_lifetimes(self, room_ids: Iterable[str]) -> dict[str, int | None]:
        """room -> the max_lifetime its retention event states (rooms without a usable
        event, or whose event states no max_lifetime, are absent)."""
        wanted = sorted(set(room_ids))
        found: dict[str, str] = {}
        for part in chunks(wanted):
            rows = await self.db.fetch(
                f"SELECT room_id, event_id FROM current_state WHERE type = '{RETENTION_TYPE}'"
                f" AND state_key = '' AND room_id IN ({placeholders(len(part))})",
                *part,
            )
            found.update((r[0], r[1]) for r in rows)
        return await self._lifetimes(found)

    async def rooms_with_policies(self) -> dict[str, int | None]:
        """Every room whose current state holds a retention event stating a policy ->
        its max_lifetime (None: the event sets only min_lifetime)."""
        rows = await self.db.fetch(
            f"SELECT room_id, event_id FROM current_state WHERE type = '{RETENTION_TYPE}'"
            " AND state_key = ''"
        )
        return await self._lifetimes({r[0]: r[1] for r in rows})

    async def _lifetimes(self, event_of: dict[str, str]) -> dict[str, int | None]:
        loaded = await self._events.get_events(event_of.values()) if event_of else {}
        out: dict[str, int | None] = {}
        for room_id, event_id in event_of.items():
            event = loaded.get(event_id)
            lifetimes = room_lifetimes(event.content) if event is not None else None
            if lifetimes is not None:
                out[room_id] = lifetimes[1]
        return out

    async def drop_expired(self, events: Sequence[Event], now_ms: int | None = None) -> list[Event]:
        """`events` without the messages their room's policy has expired (Synapse stops
        serving them before a purge deletes them). State events never expire.

        Cost: nothing when retention is off; else one indexed query for the rooms of
        `events` and a pass over the list (never a read of the rooms' history)."""
        if not self.enabled or not events:
            return list(events)
        rooms = {e.room_id for e in events if e.state_key is None}
        if not rooms:
            return list(events)
        declared = await self.room_max_lifetimes(rooms)
        now = clock_ms() if now_ms is None else now_ms
        oldest: dict[str, int] = {}
        for room_id in rooms:
            hidden_after = self.settings.hidden_after(declared.get(room_id))
            if hidden_after is not None:
                oldest[room_id] = now - hidden_after
        if not oldest:
            return list(events)
        return [
            e
            for e in events
            if e.state_key is not None
            or e.room_id not in oldest
            or e.origin_server_ts >= oldest[e.room_id]
        ]

    # -- purge jobs ---------------------------------------------------------------------

    async def room_ids_from(self, start: str, limit: int, *, inclusive: bool) -> list[str]:
        """A page of every room's ID, in order, from `start` (itself too if `inclusive`)."""
        op = ">=" if inclusive else ">"
        rows = await self.db.fetch(
            f"SELECT room_id FROM rooms WHERE room_id {op} $1 ORDER BY room_id LIMIT $2",
            start,
            limit,
        )
        return [r[0] for r in rows]

    async def cut_for(self, room_id: str, received_before_ms: int, max_events: int) -> int | None:
        """The stream ordering below which the room's messages received before
        `received_before_ms` lie, moved down so at most about `max_events` messages are
        under it; None when there is nothing to purge.

        By when this server received events (its own clock), as Synapse: a remote's
        claimed origin_server_ts cannot pull recent history under the cut."""
        # Walks the room's (room_id, stream_ordering) index from its oldest event and
        # stops at the first one kept: reads what is purged plus the state kept below.
        first_kept = await self.db.fetchval(
            "SELECT stream_ordering FROM events WHERE room_id = $1 AND stream_ordering > 0"
            " AND received_ts >= $2 ORDER BY stream_ordering LIMIT 1",
            room_id,
            received_before_ms,
        )
        cut = int(first_kept) if first_kept is not None else FAR_FUTURE
        bounded = await self.db.fetchval(
            "SELECT stream_ordering FROM events WHERE room_id = $1 AND stream_ordering < $2"
            " AND state_key IS NULL ORDER BY stream_ordering LIMIT 1 OFFSET $3",
            room_id,
            cut,
            max_events,
        )
        if bounded is not None:
            return int(bounded)
        has_any = await self.db.fetchval(
            "SELECT 1 FROM events WHERE room_id = $1 AND stream_ordering < $2"
            " AND state_key IS NULL AND event_id NOT IN"
            " (SELECT event_id FROM event_forward_extremities WHERE room_id = $1) LIMIT 1",
            room_id,
            cut,
        )
        return cut if has_any else None
