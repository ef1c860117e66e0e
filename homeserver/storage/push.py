"""PushStore: users' push rules, pushers, per-user push actions and read positions.

Rows only; the rule model and evaluation live in `homeserver.push`. Reads on hot paths
(unread counts per room at every /sync, rules at every event) are primary-key or
index lookups: event_push_actions is indexed by (user, room, stream) so a count costs
the unread rows of one room only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ._util import dump_json, load_json
from .cache import LruCache
from .database import Connection, Database
from .errors import StorageError
from .push_actions import ADVANCE_PROGRESS, PushAction, PushActionReads, insert_new_sql
from .pushers import PusherRows, StoredPusher, pusher_cache

__all__ = ["PushAction", "PushStore", "StoredPusher"]

# Lower than any stream ordering (backfilled events are negative).
_BEFORE_EVERYTHING = -(2**62)


class RelativeRuleNotFound(StorageError):
    """`before`/`after` named a rule the user does not have."""


@dataclass(frozen=True)
class StoredRule:
    kind: str
    rule_id: str
    conditions: list[dict[str, Any]]
    pattern: str | None
    actions: list[Any]
    enabled: bool


@dataclass(frozen=True)
class NotificationRow:
    event_id: str
    room_id: str
    stream_ordering: int
    actions: list[Any]
    highlight: bool
    ts: int
    read: bool


@dataclass(frozen=True)
class UnreadCounts:
    notifications: int
    highlights: int


# Where a user has read a room up to, per thread: the furthest of their m.read and
# m.read.private receipts (the receipts table of the sync area; primary-key lookups)
# and the implicit receipts of their own events (push_read_positions). $1 user, $2 room.
_READ_POSITIONS = (
    "pos (thread_id, so) AS (SELECT thread_id, MAX(so) FROM ("
    " SELECT p.thread_id AS thread_id, p.stream_ordering AS so FROM push_read_positions p"
    " WHERE p.user_id = $1 AND p.room_id = $2"
    " UNION ALL SELECT r.thread_id, e.stream_ordering FROM receipts r"
    " JOIN events e ON e.event_id = r.event_id WHERE r.room_id = $2 AND r.user_id = $1"
    " AND r.receipt_type IN ('m.read', 'm.read.private')"
    ") positions GROUP BY thread_id)"
)

_RULE_COLUMNS = "kind, rule_id, conditions, pattern, actions, enabled"

# (user, room) pairs whose unread counts are kept in memory. Each entry is a few small
# dicts (~1 KB at most), so the bound is ~100 MB in the worst case and a few MB in
# practice; a miss costs two indexed queries.
UNREAD_CACHE_SIZE = 100_000
# The row of the fill query that carries the highest action position it saw; never a
# thread ID (those are '', 'main' or an event ID, which starts with '$').
_MAX_ROW = "#max"

# A user's unread counts in one room per thread ($1 user, $2 room, $3 _BEFORE_EVERYTHING):
# the unread actions above the fold position (storage/push_retention.py), plus the
# summaries of folded ones that no read position has reached; and two _MAX_ROW rows,
# the highest action position and the fold position, whose larger is the newest
# action the counts include. Costs the unread rows of the last day or so, at most.
_COUNT_UNREAD = (
    f"WITH {_READ_POSITIONS},"
    " fold (upto) AS (SELECT folded_upto FROM push_fold_position WHERE id = 1),"
    " unthreaded (so) AS (SELECT COALESCE((SELECT u.so FROM pos u WHERE u.thread_id = ''),"
    " $3)), unread (thread_id, notif, highlight) AS ("
    " SELECT a.thread_id, CASE WHEN a.notif THEN 1 ELSE 0 END,"
    " CASE WHEN a.highlight THEN 1 ELSE 0 END"
    " FROM event_push_actions a LEFT JOIN pos t ON t.thread_id = a.thread_id"
    " WHERE a.user_id = $1 AND a.room_id = $2"
    " AND a.stream_ordering > COALESCE((SELECT upto FROM fold), $3)"
    " AND a.stream_ordering > (SELECT so FROM unthreaded)"
    " AND (t.so IS NULL OR a.stream_ordering > t.so)"
    " UNION ALL SELECT s.thread_id, s.notif_count, s.highlight_count FROM push_summaries s"
    " LEFT JOIN pos t ON t.thread_id = s.thread_id WHERE s.user_id = $1 AND s.room_id = $2"
    " AND s.upto_so > (SELECT so FROM unthreaded) AND (t.so IS NULL OR s.upto_so > t.so))"
    " SELECT thread_id, SUM(notif), SUM(highlight) FROM unread GROUP BY thread_id"
    f" UNION ALL SELECT '{_MAX_ROW}', MAX(m.stream_ordering), 0"
    " FROM event_push_actions m WHERE m.user_id = $1 AND m.room_id = $2"
    f" UNION ALL SELECT '{_MAX_ROW}', upto, 0 FROM fold"
)


@dataclass
class _Unread:
    """A user's unread counts in one room, kept current by `_apply_actions`.

    `positions` are the read positions the counts were computed against; a change of
    any of them (a receipt, the user's own event) drops the entry instead of patching
    it. `seen_upto` is the highest push-action position the counts include: actions of
    one (user, room) are recorded in stream order, so a later action is counted exactly
    once, whether the fill query or `_apply_actions` saw it first.
    """

    positions: dict[str, int]
    counts: dict[str, list[int]]
    seen_upto: int


@dataclass
class _Fills:
    """The fills of one (user, room) under way, and the folds that found no entry
    meanwhile: a fill that read before such a fold's commit must not be kept."""

    running: int = 0
    missed_folds: int = 0


class PushStore(PushActionReads, PusherRows):
    def __init__(self, db: Database) -> None:
        self.db = db
        # Unread counts are read by every /sync of every joined room; counting them in
        # the database costs O(unread actions) per request, i.e. O(room history) for a
        # user who never reads a busy room. The cache makes a /sync that follows a new
        # message O(1) in the room's history.
        self._unread: LruCache[tuple[str, str], _Unread] = LruCache(
            UNREAD_CACHE_SIZE, name="unread_counts"
        )
        # (user, room) -> the fills of it under way. A batch commits and folds its
        # actions into the entries it finds; an entry still being filled is not there
        # yet, and its fill may have read before that commit, so it is not kept.
        self._fills: dict[tuple[str, str], _Fills] = {}
        self._pushers = pusher_cache()

    # -- rules --------------------------------------------------------------------------

    async def get_rules(self, user_id: str) -> list[StoredRule]:
        """The user's own rules, by kind then priority (most important first)."""
        rows = await self.db.fetch(
            f"SELECT {_RULE_COLUMNS} FROM push_rules WHERE user_id = $1"
            " ORDER BY kind, priority, rule_id",
            user_id,
        )
        return [
            StoredRule(r[0], r[1], load_json(r[2]), r[3], load_json(r[4]), bool(r[5])) for r in rows
        ]

    async def get_default_changes(
        self, user_id: str
    ) -> dict[str, tuple[bool | None, list[Any] | None]]:
        """rule_id -> (enabled, actions) the user set on server-default rules."""
        rows = await self.db.fetch(
            "SELECT rule_id, enabled, actions FROM push_rule_defaults WHERE user_id = $1",
            user_id,
        )
        return {
            r[0]: (
                None if r[1] is None else bool(r[1]),
                None if r[2] is None else load_json(r[2]),
            )
            for r in rows
        }

    async def put_rule(
        self,
        user_id: str,
        rule: StoredRule,
        *,
        before: str | None = None,
        after: str | None = None,
    ) -> None:
        """Create or replace a user rule, placed per the spec's before/after semantics:
        `before` wins over `after`; a new rule without either goes first; an updated
        rule without either keeps its place."""
        async with self.db.transaction() as conn:
            rows = await conn.fetch(
                "SELECT rule_id FROM push_rules WHERE user_id = $1 AND kind = $2"
                " ORDER BY priority, rule_id",
                user_id,
                rule.kind,
            )
            order = [r[0] for r in rows]
            old_index = order.index(rule.rule_id) if rule.rule_id in order else None
            if old_index is not None:
                order.pop(old_index)
            anchor = before if before is not None else after
            if anchor is not None:
                if anchor not in order:
                    raise RelativeRuleNotFound(f"before/after rule not found: {anchor}")
                index = order.index(anchor) + (0 if before is not None else 1)
            else:
                index = old_index if old_index is not None else 0
            order.insert(index, rule.rule_id)
            await conn.execute(
                "DELETE FROM push_rules WHERE user_id = $1 AND kind = $2 AND rule_id = $3",
                user_id,
                rule.kind,
                rule.rule_id,
            )
            await conn.execute(
                "INSERT INTO push_rules (user_id, kind, rule_id, priority, conditions, pattern,"
                " actions, enabled) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                user_id,
                rule.kind,
                rule.rule_id,
                index,
                dump_json(rule.conditions),
                rule.pattern,
                dump_json(rule.actions),
                rule.enabled,
            )
            await conn.executemany(
                "UPDATE push_rules SET priority = $4 WHERE user_id = $1 AND kind = $2"
                " AND rule_id = $3",
                [(user_id, rule.kind, rid, i) for i, rid in enumerate(order)],
            )

    async def delete_rule(self, user_id: str, kind: str, rule_id: str) -> bool:
        return (
            await self.db.execute(
                "DELETE FROM push_rules WHERE user_id = $1 AND kind = $2 AND rule_id = $3",
                user_id,
                kind,
                rule_id,
            )
            > 0
        )

    async def set_rule_enabled(self, user_id: str, kind: str, rule_id: str, enabled: bool) -> bool:
        return (
            await self.db.execute(
                "UPDATE push_rules SET enabled = $4 WHERE user_id = $1 AND kind = $2"
                " AND rule_id = $3",
                user_id,
                kind,
                rule_id,
                enabled,
            )
            > 0
        )

    async def set_rule_actions(
        self, user_id: str, kind: str, rule_id: str, actions: list[Any]
    ) -> bool:
        return (
            await self.db.execute(
                "UPDATE push_rules SET actions = $4 WHERE user_id = $1 AND kind = $2"
                " AND rule_id = $3",
                user_id,
                kind,
                rule_id,
                dump_json(actions),
            )
            > 0
        )

    async def set_default_enabled(self, user_id: str, rule_id: str, enabled: bool) -> None:
        await self.db.execute(
            "INSERT INTO push_rule_defaults (user_id, rule_id, enabled) VALUES ($1, $2, $3)"
            " ON CONFLICT (user_id, rule_id) DO UPDATE SET enabled = excluded.enabled",
            user_id,
            rule_id,
            enabled,
        )

    async def set_default_actions(self, user_id: str, rule_id: str, actions: list[Any]) -> None:
        await self.db.execute(
            "INSERT INTO push_rule_defaults (user_id, rule_id, actions) VALUES ($1, $2, $3)"
            " ON CONFLICT (user_id, rule_id) DO UPDATE SET actions = excluded.actions",
            user_id,
            rule_id,
            dump_json(actions),
        )

    async def add_push_actions(self, actions: Sequence[PushAction]) -> None:
        if not actions:
            return
        await self.db.executemany(_INSERT_ACTION, [_action_row(a) for a in actions])

    async def record_batch(
        self,
        actions: Sequence[PushAction],
        read_positions: Sequence[tuple[str, str, str, int]],
        progress: tuple[str, int] | None = None,
        late: bool = False,
    ) -> Sequence[PushAction]:
        """Push actions and senders' read positions ((user, room, thread, stream)) of a
        batch of events, in one transaction; with `progress` (instance, position), how
        far that instance has recorded (push_actions.action_progress), in the same one.
        The actions recorded: with `late` (a retry or a catch-up, which another process
        may be recording too), only those this call inserted.

        In a deployment, batches of different processes are written side by side
        (`turn="alongside"`): each inserts the actions of its own events, moves read
        positions only forward and its own progress row, so their order does not
        matter; read positions (and a late batch's rows, which a retry may insert
        again) go in key order, so two batches touching the same rows (a user sending
        in rooms of two persisters) wait for each other rather than deadlock. A live
        batch's actions are its own events' alone: no sort on the send path. Every
        other write transaction still excludes them: the
        retention fold's, which must see no action arrive in the range it folds, and
        the receipts', which move the same read positions."""
        if not actions and not read_positions and progress is None:
            return []
        recorded: Sequence[PushAction] = actions
        async with self.db.transaction(turn="alongside") as conn:
            if late:
                in_order = sorted(actions, key=lambda a: (a.stream_ordering, a.user_id))
                new: set[tuple[str, int]] = set()
                for i in range(0, len(in_order), LATE_ROWS_PER_INSERT):
                    chunk = in_order[i : i + LATE_ROWS_PER_INSERT]
                    new.update(
                        (a.user_id, a.stream_ordering) for a in await _insert_new(conn, chunk)
                    )
                recorded = [a for a in actions if (a.user_id, a.stream_ordering) in new]
            elif actions:
                await conn.executemany(_INSERT_ACTION, [_action_row(a) for a in actions])
            if read_positions:
                await conn.executemany(_ADVANCE_READ, sorted(read_positions))
            if progress is not None:
                await conn.executemany(ADVANCE_PROGRESS, [progress])  # held with the rest
        self._apply_actions(recorded)
        for user_id, room_id, _thread, _so in read_positions:
            self.read_marker_moved(user_id, room_id)
        return recorded

    async def advance_read_position(
        self, user_id: str, room_id: str, stream_ordering: int, thread_id: str = ""
    ) -> None:
        """Mark everything up to `stream_ordering` read (never moves backwards).
        thread_id '' is an unthreaded receipt; 'main' or a root ID one thread."""
        await self.db.execute(_ADVANCE_READ, user_id, room_id, thread_id, stream_ordering)
        self.read_marker_moved(user_id, room_id)

    # -- unread counts, cached ------------------------------------------------------------

    def read_marker_moved(self, user_id: str, room_id: str) -> None:
        """A read position of the user in the room changed (called after the write has
        committed): its counts must be recomputed. A fill that read before the change
        is refused by the cache's generation check."""
        self._unread.invalidate((user_id, room_id))

    def forget_room(self, room_id: str) -> None:
        """Rows of the room were deleted (a purge): drop every cached count of it.
        O(cache size), but purges are rare admin operations."""
        for key in [k for k in self._unread.key_list() if k[1] == room_id]:
            self._unread.invalidate(key)

    def apply_recorded_actions(self, actions: Sequence[PushAction]) -> None:
        """Actions another process recorded (push/remote_actions.py): fold them in."""
        self._apply_actions(actions)

    def _apply_actions(self, actions: Sequence[PushAction]) -> None:
        """Fold just-committed actions into the cached counts they change."""
        for a in actions:
            if not (a.notif or a.highlight):
                continue
            entry = self._unread.peek((a.user_id, a.room_id))
            if entry is None:
                fills = self._fills.get((a.user_id, a.room_id))
                if fills is not None:
                    fills.missed_folds += 1
                continue
            if a.stream_ordering <= entry.seen_upto:
                continue
            entry.seen_upto = a.stream_ordering
            read = max(
                entry.positions.get("", _BEFORE_EVERYTHING),
                entry.positions.get(a.thread_id, _BEFORE_EVERYTHING),
            )
            if a.stream_ordering > read:
                c = entry.counts.setdefault(a.thread_id, [0, 0])
                c[0] += 1 if a.notif else 0
                c[1] += 1 if a.highlight else 0

    async def get_current_unread_counts(
        self, user_id: str, room_id: str
    ) -> dict[str, UnreadCounts]:
        """thread_id -> unread (notifying, highlighted) counts in one room, as of every
        action recorded so far (it may count an event that committed after the caller's
        stream token: the next /sync brings that event, with the same count)."""
        key = (user_id, room_id)
        entry = self._unread.get(key)
        if entry is None:
            generation = self._unread.generation()
            fills = self._fills.setdefault(key, _Fills())
            fills.running += 1
            missed_before = fills.missed_folds
            try:
                positions = await self.get_read_positions(user_id, room_id)
                counts, seen_upto = await self._count_unread(user_id, room_id)
            finally:
                fills.running -= 1
                if not fills.running:
                    del self._fills[key]
            entry = _Unread(positions, counts, seen_upto)
            # Another fill of the key may have stored its entry meanwhile, and folds
            # keep that one current since; ours may have read before them: never
            # put it in that one's place.
            if fills.missed_folds == missed_before and self._unread.peek(key) is None:
                self._unread.set_if_current(key, entry, generation)
        return {tid: UnreadCounts(c[0], c[1]) for tid, c in entry.counts.items() if c[0] or c[1]}

    async def _count_unread(self, user_id: str, room_id: str) -> tuple[dict[str, list[int]], int]:
        """Unread counts and the highest action position they include, from one
        statement (one snapshot: an action is counted by its row or in a summary, never
        both, however a retention run moves it meanwhile)."""
        rows = await self.db.fetch(_COUNT_UNREAD, user_id, room_id, _BEFORE_EVERYTHING)
        counts: dict[str, list[int]] = {}
        seen_upto = _BEFORE_EVERYTHING
        for r in rows:
            if r[0] == _MAX_ROW:
                if r[1] is not None:
                    seen_upto = max(seen_upto, int(r[1]))
            else:
                counts[r[0]] = [int(r[1] or 0), int(r[2] or 0)]
        return counts, seen_upto

    async def get_unread_counts(self, user_id: str, room_id: str) -> dict[str, UnreadCounts]:
        """thread_id -> unread (notifying, highlighted) counts in one room, from the
        database (no cache). Threads with nothing unread are absent."""
        counts, _ = await self._count_unread(user_id, room_id)
        return {t: UnreadCounts(c[0], c[1]) for t, c in counts.items() if c[0] or c[1]}

    async def get_notifications(
        self,
        user_id: str,
        *,
        before: int | None,
        limit: int,
        only_highlight: bool = False,
    ) -> list[NotificationRow]:
        """The user's notifying events, newest first, strictly below `before`, each
        with whether a read receipt (or the user's own later event) covers it."""
        sql = (
            "SELECT a.event_id, a.room_id, a.stream_ordering, a.actions, a.highlight, a.ts,"
            " a.thread_id FROM event_push_actions a WHERE a.user_id = $1"
            " AND a.stream_ordering < $2"
        )
        if only_highlight:
            sql += " AND a.highlight"
        sql += " ORDER BY a.stream_ordering DESC LIMIT $3"
        rows = await self.db.fetch(sql, user_id, before if before is not None else 2**62, limit)
        positions: dict[str, dict[str, int]] = {}
        for room_id in {r[1] for r in rows}:
            positions[room_id] = await self.get_read_positions(user_id, room_id)
        out = []
        for r in rows:
            pos = positions[r[1]]
            so = int(r[2])
            read = so <= pos.get("", _BEFORE_EVERYTHING) or so <= pos.get(r[6], _BEFORE_EVERYTHING)
            out.append(
                NotificationRow(r[0], r[1], so, load_json(r[3]), bool(r[4]), int(r[5]), read)
            )
        return out

    async def get_read_positions(self, user_id: str, room_id: str) -> dict[str, int]:
        """thread_id ('' = unthreaded) -> the stream position read up to in a room."""
        rows = await self.db.fetch(
            f"WITH {_READ_POSITIONS} SELECT thread_id, so FROM pos", user_id, room_id
        )
        return {r[0]: int(r[1]) for r in rows}


LATE_ROWS_PER_INSERT = 100  # 900 parameters a statement
_INSERT_ACTION = (
    "INSERT INTO event_push_actions (user_id, event_id, room_id, stream_ordering,"
    " thread_id, actions, notif, highlight, ts) VALUES ($1, $2, $3, $4, $5, $6, $7,"
    " $8, $9) ON CONFLICT (user_id, stream_ordering) DO NOTHING"
)
_ADVANCE_READ = (
    "INSERT INTO push_read_positions (user_id, room_id, thread_id, stream_ordering)"
    " VALUES ($1, $2, $3, $4) ON CONFLICT (user_id, room_id, thread_id) DO UPDATE"
    " SET stream_ordering = excluded.stream_ordering"
    " WHERE excluded.stream_ordering > push_read_positions.stream_ordering"
)


async def _insert_new(conn: Connection, chunk: Sequence[PushAction]) -> list[PushAction]:
    """Insert the actions not recorded yet; those inserted."""
    params = [value for a in chunk for value in _action_row(a)]
    new = {(r[0], int(r[1])) for r in await conn.fetch(insert_new_sql(len(chunk)), *params)}
    return [a for a in chunk if (a.user_id, a.stream_ordering) in new]


def _action_row(a: PushAction) -> tuple[Any, ...]:
    return (
        a.user_id,
        a.event_id,
        a.room_id,
        a.stream_ordering,
        a.thread_id,
        dump_json(a.actions),
        a.notif,
        a.highlight,
        a.ts,
    )
