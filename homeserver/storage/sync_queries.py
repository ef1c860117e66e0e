"""SyncQueryStore: the few indexed reads that make an incremental /sync cost what changed.

`rooms_changed_between` answers "which rooms got timeline events in (since, upto]" with
one range scan over the events primary key (stream_ordering) instead of touching every
room the user is in.
"""

from __future__ import annotations

from collections.abc import Iterable

from ._util import chunks, placeholders
from .database import Database

_TIMELINE = "NOT outlier AND NOT soft_failed AND rejected_reason IS NULL"


class SyncQueryStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def rooms_changed_between(self, since: int, upto: int) -> dict[str, int]:
        """room_id -> highest timeline stream ordering in (since, upto]."""
        if upto <= since:
            return {}
        rows = await self.db.fetch(
            "SELECT room_id, MAX(stream_ordering) FROM events"
            f" WHERE stream_ordering > $1 AND stream_ordering <= $2 AND {_TIMELINE}"
            " GROUP BY room_id",
            since,
            upto,
        )
        return {r[0]: int(r[1]) for r in rows}

    async def naming_event_ids(self, room_ids: Iterable[str]) -> dict[str, list[str]]:
        """room_id -> the IDs of its current m.room.name / m.room.canonical_alias."""
        rooms = list(dict.fromkeys(room_ids))
        out: dict[str, list[str]] = {}
        for part in chunks(rooms):
            rows = await self.db.fetch(
                "SELECT room_id, event_id FROM current_state"
                " WHERE type IN ('m.room.name', 'm.room.canonical_alias') AND state_key = ''"
                f" AND room_id IN ({placeholders(len(part))})",
                *part,
            )
            for r in rows:
                out.setdefault(r[0], []).append(r[1])
        return out

    async def members_of_rooms(self, room_ids: Iterable[str]) -> dict[str, dict[str, str]]:
        """room_id -> {user_id: membership} for the rooms given (one query per 500)."""
        rooms = list(dict.fromkeys(room_ids))
        out: dict[str, dict[str, str]] = {r: {} for r in rooms}
        for part in chunks(rooms):
            rows = await self.db.fetch(
                "SELECT room_id, user_id, membership FROM room_memberships"
                f" WHERE room_id IN ({placeholders(len(part))})",
                *part,
            )
            for r in rows:
                out[r[0]][r[1]] = r[2]
        return out
