"""EmailNotificationStore: which email pushers have notifications to mail about, and
how far each has been mailed (table email_pusher_progress).

`due` is one statement for every email pusher: the pushers whose address the user
still holds (never mail an address that is no longer theirs) with a notification newer
than what was considered last, older than the cutoff, and newer than the pusher (an
address switched on now is not mailed about last year). Each probe is a range read of
event_push_actions' (user_id, stream_ordering) key from the pusher's position.
"""

from __future__ import annotations

from dataclasses import dataclass

from .database import Database


@dataclass(frozen=True)
class DueEmailPusher:
    user_id: str
    pushkey: str  # the address
    last_stream_ordering: int
    last_sent_ts: int
    created_ts: int
    data: str  # the pusher's data (JSON), e.g. Element's brand


@dataclass(frozen=True)
class PendingNotification:
    event_id: str
    room_id: str
    stream_ordering: int
    thread_id: str
    ts: int


class EmailNotificationStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def due(self, cutoff_ts: int, limit: int) -> list[DueEmailPusher]:
        rows = await self.db.fetch(
            "SELECT p.user_id, p.pushkey, COALESCE(g.last_stream_ordering, 0),"
            " COALESCE(g.last_sent_ts, 0), p.created_ts, p.data"
            " FROM pushers p LEFT JOIN email_pusher_progress g"
            " ON g.user_id = p.user_id AND g.pushkey = p.pushkey"
            " WHERE p.kind = 'email' AND p.enabled"
            " AND EXISTS (SELECT 1 FROM user_threepids t WHERE t.medium = 'email'"
            "  AND t.address = p.pushkey AND t.user_id = p.user_id)"
            " AND EXISTS ("
            "  SELECT 1 FROM event_push_actions a WHERE a.user_id = p.user_id AND a.notif"
            "  AND a.stream_ordering > COALESCE(g.last_stream_ordering, 0)"
            "  AND a.ts > p.created_ts AND a.ts <= $1)"
            " ORDER BY p.user_id, p.pushkey LIMIT $2",
            cutoff_ts,
            limit,
        )
        return [DueEmailPusher(r[0], r[1], int(r[2]), int(r[3]), int(r[4]), r[5]) for r in rows]

    async def pending(
        self, user_id: str, after: int, newer_than_ts: int, cutoff_ts: int, limit: int
    ) -> list[PendingNotification]:
        """The user's notifications after stream position `after`, oldest first."""
        rows = await self.db.fetch(
            "SELECT event_id, room_id, stream_ordering, thread_id, ts FROM event_push_actions"
            " WHERE user_id = $1 AND notif AND stream_ordering > $2 AND ts > $3 AND ts <= $4"
            " ORDER BY stream_ordering LIMIT $5",
            user_id,
            after,
            newer_than_ts,
            cutoff_ts,
            limit,
        )
        return [PendingNotification(r[0], r[1], int(r[2]), r[3], int(r[4])) for r in rows]

    async def record(
        self, user_id: str, pushkey: str, last_stream_ordering: int, sent_ts: int
    ) -> None:
        await self.db.execute(
            "INSERT INTO email_pusher_progress (user_id, pushkey, last_stream_ordering,"
            " last_sent_ts) VALUES ($1, $2, $3, $4) ON CONFLICT (user_id, pushkey) DO UPDATE"
            " SET last_stream_ordering = excluded.last_stream_ordering,"
            " last_sent_ts = excluded.last_sent_ts",
            user_id,
            pushkey,
            last_stream_ordering,
            sent_ts,
        )

    async def forget_removed(self) -> int:
        """Drop the progress of pushers that no longer exist."""
        return await self.db.execute(
            "DELETE FROM email_pusher_progress WHERE NOT EXISTS (SELECT 1 FROM pushers p"
            " WHERE p.user_id = email_pusher_progress.user_id"
            " AND p.pushkey = email_pusher_progress.pushkey AND p.kind = 'email')"
        )
