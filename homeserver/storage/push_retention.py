"""Push action retention: the rows of event_push_actions do not pile up forever.

Every event writes a row per local member it notifies, so a room of N members adds N
rows per message; kept forever, that is the biggest table of a busy server and a
/sync's unread count that misses the cache costs the user's whole unread history.
Rows are needed for a while only: by the pushers (seconds), by GET /notifications
(recent ones) and by unread counts (until read). So a periodic run, on one process:

- samples the newest action position with the time (push_fold_marks): actions carry
  their event's own timestamp, which a remote server chooses, so age is measured by
  the position the server had reached at a time instead;
- folds every action older than NOTIFICATION_RETENTION_MS into push_summaries, one
  row per (user, room, thread) with the unread counts and the newest folded position,
  and deletes the folded rows, highlights excepted;
- deletes highlights older than HIGHLIGHT_RETENTION_MS (GET /notifications?only=
  highlight lists mentions for a month, as Synapse does);
- deletes summaries that a read position has since reached.

Unread counts stay exact: an action at or below the fold position is counted by its
summary, one above it by its row, and push.py reads both in one statement. A summary
counts while no read position of its thread has reached its newest action: a receipt
for an event inside a folded range (more than a day old, with newer ones unread) keeps
the whole summary unread until the user reads past it.

Every step is a short transaction over at most about FOLD_BATCH_ROWS rows (one event's
rows are never split), so a first run over years of history does not hold the write
lock for long, and the run pauses between batches for the writers waiting on it.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from ._util import now_ms
from .database import Connection, Database

log = logging.getLogger(__name__)

DAY_MS = 24 * 3600 * 1000
# Non-highlighting actions: kept a day for GET /notifications, then folded.
NOTIFICATION_RETENTION_MS = DAY_MS
# Highlights (mentions, keywords): kept 30 days.
HIGHLIGHT_RETENTION_MS = 30 * DAY_MS
# Rows handled per transaction (a bit more when one event has more rows than this).
FOLD_BATCH_ROWS = 2_000
# The fold position before the first fold: below every stream ordering (backfilled
# events have negative ones).
NOTHING_FOLDED = -(2**62)
# How often the composition runs `run` (marks are this far apart).
RUN_INTERVAL_S = 600.0

# A position is read by a thread's own read position or by the unthreaded one ('');
# both come from push_read_positions (the user's own events) and m.read receipts.
# `{so}` is the position in question, `{user}`, `{room}`, `{thread}` its keys.
_READ_AT = (
    "(EXISTS (SELECT 1 FROM push_read_positions p WHERE p.user_id = {user}"
    " AND p.room_id = {room} AND p.thread_id IN ('', {thread})"
    " AND p.stream_ordering >= {so})"
    " OR EXISTS (SELECT 1 FROM receipts r JOIN events e ON e.event_id = r.event_id"
    " WHERE r.room_id = {room} AND r.user_id = {user} AND r.thread_id IN ('', {thread})"
    " AND r.receipt_type IN ('m.read', 'm.read.private') AND e.stream_ordering >= {so}))"
)

# The unread notifying or highlighting actions in ($1, $2], per (user, room, thread).
_UNREAD_GROUPS = (
    "SELECT a.user_id, a.room_id, a.thread_id, SUM(CASE WHEN a.notif THEN 1 ELSE 0 END),"
    " SUM(CASE WHEN a.highlight THEN 1 ELSE 0 END), MAX(a.stream_ordering)"
    " FROM event_push_actions a WHERE a.stream_ordering > $1 AND a.stream_ordering <= $2"
    " AND (a.notif OR a.highlight) AND NOT "
    + _READ_AT.format(
        user="a.user_id", room="a.room_id", thread="a.thread_id", so="a.stream_ordering"
    )
    + " GROUP BY a.user_id, a.room_id, a.thread_id"
)

# A summary every read position of its thread has passed starts over from zero.
_DROP_IF_READ = (
    "DELETE FROM push_summaries WHERE user_id = $1 AND room_id = $2 AND thread_id = $3 AND "
    + _READ_AT.format(user="$1", room="$2", thread="$3", so="push_summaries.upto_so")
)

_ADD_TO_SUMMARY = (
    "INSERT INTO push_summaries (user_id, room_id, thread_id, notif_count, highlight_count,"
    " upto_so) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (user_id, room_id, thread_id)"
    " DO UPDATE SET notif_count = push_summaries.notif_count + excluded.notif_count,"
    " highlight_count = push_summaries.highlight_count + excluded.highlight_count,"
    " upto_so = excluded.upto_so"
)

# A page of summaries after a key, in key order, with whether they are read.
_SUMMARY_PAGE = (
    "SELECT s.user_id, s.room_id, s.thread_id, "
    + _READ_AT.format(user="s.user_id", room="s.room_id", thread="s.thread_id", so="s.upto_so")
    + " FROM push_summaries s WHERE (s.user_id, s.room_id, s.thread_id) > ($1, $2, $3)"
    " ORDER BY s.user_id, s.room_id, s.thread_id LIMIT $4"
)


@dataclass
class RetentionRun:
    """What one run did (logged, and read by tests)."""

    folded_upto: int | None = None
    rows_folded: int = 0
    highlights_deleted: int = 0
    summaries_swept: int = 0


class PushActionRetention:
    """Storage side of the retention: one `run` at a time, on one process."""

    def __init__(
        self, db: Database, *, batch_rows: int = FOLD_BATCH_ROWS, pause_s: float = 0.05
    ) -> None:
        self.db = db
        self._batch_rows = batch_rows
        self._pause_s = pause_s
        self._lock = asyncio.Lock()

    async def run(self, now: int | None = None) -> RetentionRun:
        """Sample the position, fold and delete what the retention has passed."""
        now = now_ms() if now is None else now
        async with self._lock:
            await self._mark(now)
            result = RetentionRun()
            fold_to = await self._position_at(now - NOTIFICATION_RETENTION_MS)
            if fold_to is not None:
                while True:
                    rows, done = await self._fold_batch(fold_to)
                    result.rows_folded += rows
                    if done:
                        break
                    await asyncio.sleep(self._pause_s)
            result.folded_upto = await self.folded_upto()
            highlight_to = await self._position_at(now - HIGHLIGHT_RETENTION_MS)
            if highlight_to is not None:
                upto = min(highlight_to, result.folded_upto)
                while (deleted := await self._delete_highlights(upto)) > 0:
                    result.highlights_deleted += deleted
                    await asyncio.sleep(self._pause_s)
                await self.db.execute(
                    "DELETE FROM push_fold_marks WHERE ts < (SELECT MAX(ts) FROM"
                    " push_fold_marks WHERE ts <= $1)",
                    now - HIGHLIGHT_RETENTION_MS,
                )
            result.summaries_swept = await self._sweep_read_summaries()
        if result.rows_folded or result.highlights_deleted or result.summaries_swept:
            log.info("push action retention: %s", result)
        return result

    async def folded_upto(self) -> int:
        """Every action at or below this position is counted by push_summaries."""
        return await fold_position(self.db)

    async def _mark(self, now: int) -> None:
        newest = await self.db.fetchval("SELECT MAX(stream_ordering) FROM event_push_actions")
        if newest is not None:
            await self.db.execute(
                "INSERT INTO push_fold_marks (ts, stream_ordering) VALUES ($1, $2)"
                " ON CONFLICT (ts) DO NOTHING",
                now,
                int(newest),
            )

    async def _position_at(self, ts: int) -> int | None:
        """The newest position sampled at or before `ts` (None: nothing that old)."""
        found = await self.db.fetchval(
            "SELECT MAX(stream_ordering) FROM push_fold_marks WHERE ts <= $1", ts
        )
        return None if found is None else int(found)

    async def _fold_batch(self, fold_to: int) -> tuple[int, bool]:
        """Fold the next batch of actions up to `fold_to`: (rows deleted, finished)."""
        async with self.db.transaction() as conn:
            start = await fold_position(conn)
            if start >= fold_to:
                return 0, True
            end = await conn.fetchval(
                "SELECT stream_ordering FROM event_push_actions WHERE stream_ordering > $1"
                " AND stream_ordering <= $2 ORDER BY stream_ordering LIMIT 1 OFFSET $3",
                start,
                fold_to,
                self._batch_rows - 1,
            )
            done = end is None or int(end) >= fold_to
            end = fold_to if end is None else int(end)
            await self._fold(conn, start, end)
            deleted = await conn.execute(
                "DELETE FROM event_push_actions WHERE stream_ordering > $1"
                " AND stream_ordering <= $2 AND NOT highlight",
                start,
                end,
            )
            await conn.execute(
                "INSERT INTO push_fold_position (id, folded_upto) VALUES (1, $1)"
                " ON CONFLICT (id) DO UPDATE SET folded_upto = excluded.folded_upto",
                end,
            )
        return deleted, done

    async def _fold(self, conn: Connection, start: int, end: int) -> None:
        """Add the unread actions in (start, end] to their summaries."""
        groups = await conn.fetch(_UNREAD_GROUPS, start, end)
        if not groups:
            return
        await conn.executemany(_DROP_IF_READ, [(g[0], g[1], g[2]) for g in groups])
        await conn.executemany(
            _ADD_TO_SUMMARY,
            [(g[0], g[1], g[2], int(g[3] or 0), int(g[4] or 0), int(g[5])) for g in groups],
        )

    async def _delete_highlights(self, upto: int) -> int:
        """Delete a batch of the highlights at or below `upto` (all rows that low are
        highlights: the fold deleted the others); the number deleted."""
        async with self.db.transaction() as conn:
            end = await conn.fetchval(
                "SELECT stream_ordering FROM event_push_actions WHERE stream_ordering <= $1"
                " ORDER BY stream_ordering LIMIT 1 OFFSET $2",
                upto,
                self._batch_rows - 1,
            )
            return await conn.execute(
                "DELETE FROM event_push_actions WHERE stream_ordering <= $1",
                upto if end is None else int(end),
            )

    async def _sweep_read_summaries(self) -> int:
        """Delete the summaries a read position has reached, a page at a time."""
        swept = 0
        after = ("", "", "")
        while True:
            page = await self.db.fetch(_SUMMARY_PAGE, *after, self._batch_rows)
            read = [(r[0], r[1], r[2]) for r in page if r[3]]
            if read:
                await self.db.executemany(_DROP_IF_READ, read)
                swept += len(read)
            if len(page) < self._batch_rows:
                return swept
            after = (page[-1][0], page[-1][1], page[-1][2])
            await asyncio.sleep(self._pause_s)


async def fold_position(db: Database | Connection) -> int:
    """Every action at or below this position is counted by push_summaries (its row
    deleted, or kept a while as a highlight)."""
    found = await db.fetchval("SELECT folded_upto FROM push_fold_position WHERE id = 1")
    return NOTHING_FOLDED if found is None else int(found)
