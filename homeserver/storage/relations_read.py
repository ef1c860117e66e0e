"""Reads over `event_relations` (filled by EventStore.persist_events): children of an
event, batch aggregation inputs (threads, edits, references) and a room's threads.

Only visible timeline events count (not outliers, soft-failed, rejected), and redacted
children are left out (their relation is gone with their content). Every query starts
from the (relates_to_id, rel_type) index or the events primary key.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ._util import chunks, placeholders
from .database import Database

_LIVE = (
    "NOT e.outlier AND NOT e.soft_failed AND e.rejected_reason IS NULL"
    " AND e.redacted_because IS NULL"
)


@dataclass(frozen=True)
class Child:
    event_id: str
    parent_id: str
    rel_type: str
    type: str
    sender: str
    stream_ordering: int


@dataclass(frozen=True)
class ThreadStats:
    count: int
    latest_stream: int


class RelationsReadStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def get_children(self, room_id: str, parent_ids: Sequence[str]) -> list[Child]:
        """Every live child of `parent_ids` in the room, oldest first."""
        out: list[Child] = []
        for part in chunks(list(dict.fromkeys(parent_ids))):
            rows = await self.db.fetch(
                "SELECT e.event_id, r.relates_to_id, r.rel_type, e.type, e.sender,"
                " e.stream_ordering FROM event_relations r JOIN events e"
                " ON e.event_id = r.event_id"
                f" WHERE r.relates_to_id IN ({placeholders(len(part), start=2)})"
                f" AND e.room_id = $1 AND {_LIVE}",
                room_id,
                *part,
            )
            out.extend(Child(r[0], r[1], r[2], r[3], r[4], int(r[5])) for r in rows)
        out.sort(key=lambda c: c.stream_ordering)
        return out

    async def get_children_of_type(
        self, parent_ids: Sequence[str], rel_type: str
    ) -> dict[str, list[str]]:
        """parent -> IDs of its live children with `rel_type`, oldest first."""
        out: dict[str, list[str]] = {}
        for part in chunks(list(dict.fromkeys(parent_ids))):
            rows = await self.db.fetch(
                "SELECT r.relates_to_id, e.event_id FROM event_relations r JOIN events e"
                " ON e.event_id = r.event_id"
                f" WHERE r.relates_to_id IN ({placeholders(len(part), start=2)})"
                f" AND r.rel_type = $1 AND {_LIVE} ORDER BY e.stream_ordering",
                rel_type,
                *part,
            )
            for r in rows:
                out.setdefault(r[0], []).append(r[1])
        return out

    async def get_thread_stats(self, root_ids: Sequence[str]) -> dict[str, ThreadStats]:
        """root -> (number of thread events, stream ordering of the latest one)."""
        out: dict[str, ThreadStats] = {}
        for part in chunks(list(dict.fromkeys(root_ids))):
            rows = await self.db.fetch(
                "SELECT r.relates_to_id, COUNT(*), MAX(e.stream_ordering)"
                " FROM event_relations r JOIN events e ON e.event_id = r.event_id"
                f" WHERE r.relates_to_id IN ({placeholders(len(part))})"
                f" AND r.rel_type = 'm.thread' AND {_LIVE} GROUP BY r.relates_to_id",
                *part,
            )
            out.update({r[0]: ThreadStats(int(r[1]), int(r[2])) for r in rows})
        return out

    async def get_event_ids_at(self, stream_orderings: Sequence[int]) -> dict[int, str]:
        out: dict[int, str] = {}
        for part in chunks(list(dict.fromkeys(stream_orderings))):
            rows = await self.db.fetch(
                "SELECT stream_ordering, event_id FROM events"
                f" WHERE stream_ordering IN ({placeholders(len(part))})",
                *part,
            )
            out.update({int(r[0]): r[1] for r in rows})
        return out

    async def get_threads_participated(self, root_ids: Sequence[str], user_id: str) -> set[str]:
        """The roots among `root_ids` with a thread event sent by `user_id`."""
        out: set[str] = set()
        for part in chunks(list(dict.fromkeys(root_ids))):
            rows = await self.db.fetch(
                "SELECT DISTINCT r.relates_to_id FROM event_relations r JOIN events e"
                " ON e.event_id = r.event_id"
                f" WHERE r.relates_to_id IN ({placeholders(len(part), start=2)})"
                f" AND r.rel_type = 'm.thread' AND e.sender = $1 AND {_LIVE}",
                user_id,
                *part,
            )
            out.update(r[0] for r in rows)
        return out

    async def get_threads(
        self,
        room_id: str,
        *,
        before: int | None,
        limit: int,
        participant: str | None = None,
    ) -> list[tuple[str, int]]:
        """(root ID, latest thread event's stream ordering) of the room's threads whose
        latest event is below `before`, most recently active first. With
        `participant`, only threads they started or posted in."""
        sql = (
            "SELECT r.relates_to_id, MAX(e.stream_ordering) AS latest"
            " FROM event_relations r JOIN events e ON e.event_id = r.event_id"
            " JOIN events root ON root.event_id = r.relates_to_id"
            f" WHERE r.rel_type = 'm.thread' AND e.room_id = $1 AND root.room_id = $1"
            f" AND {_LIVE}"
        )
        args: list[object] = [room_id, before if before is not None else 2**62, limit]
        if participant is not None:
            sql += (
                " AND (root.sender = $4 OR r.relates_to_id IN (SELECT r2.relates_to_id"
                " FROM event_relations r2 JOIN events e2 ON e2.event_id = r2.event_id"
                " WHERE r2.rel_type = 'm.thread' AND e2.room_id = $1 AND e2.sender = $4))"
            )
            args.append(participant)
        sql += (
            " GROUP BY r.relates_to_id HAVING MAX(e.stream_ordering) < $2"
            " ORDER BY latest DESC LIMIT $3"
        )
        rows = await self.db.fetch(sql, *args)
        return [(r[0], int(r[1])) for r in rows]
