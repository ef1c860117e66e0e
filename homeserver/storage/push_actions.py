"""Push actions (one row per event and local user it notified or marked) and the
reads by stream position that follow them: the pusher workers' delivery and the
unread counts of processes replaying other processes' writes. Split from push.py,
which records them and keeps the cached counts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ._util import load_json, placeholders
from .database import Database
from .push_retention import fold_position


@dataclass(frozen=True)
class PushAction:
    user_id: str
    event_id: str
    room_id: str
    stream_ordering: int
    thread_id: str
    actions: list[Any]
    notif: bool
    highlight: bool
    ts: int


_ACTION_COLUMNS = (
    "user_id, event_id, room_id, stream_ordering, thread_id, actions, notif, highlight, ts"
)


# What unread counts need: the same columns without the actions' JSON (every process
# following the writers reads each event's rows; it never looks at the actions).
_COUNTED_COLUMNS = _ACTION_COLUMNS.replace("actions", "NULL")

# How far an instance has evaluated push rules: every event it wrote at or below the
# position has its actions recorded (written with them, in the same transaction). A
# row of worker_positions ("push_actions" there is the pusher workers' delivery).
PROGRESS_STREAM = "push_rules_evaluated"
ADVANCE_PROGRESS = (
    "INSERT INTO worker_positions (instance, stream, position)"
    f" VALUES ($1, '{PROGRESS_STREAM}', $2) ON CONFLICT (instance, stream) DO UPDATE"
    " SET position = excluded.position WHERE excluded.position > worker_positions.position"
)


def insert_new_sql(count: int) -> str:
    """An INSERT of `count` actions (columns in _ACTION_COLUMNS order) that skips those
    already recorded and returns (user, position) of the rows it inserted."""
    values = ", ".join(f"({placeholders(9, 1 + 9 * i)})" for i in range(count))
    return (
        f"INSERT INTO event_push_actions ({_ACTION_COLUMNS}) VALUES {values}"
        " ON CONFLICT (user_id, stream_ordering) DO NOTHING RETURNING user_id, stream_ordering"
    )


def _action(r: Any) -> PushAction:
    actions = load_json(r[5]) if r[5] is not None else []
    return PushAction(r[0], r[1], r[2], int(r[3]), r[4], actions, bool(r[6]), bool(r[7]), int(r[8]))


class PushActionReads:
    """PushStore's reads of actions by stream position (a mixin: `db` is the store's)."""

    db: Database

    async def newest_action_position(self) -> int:
        """The stream ordering of the newest recorded action (0 without any)."""
        return int(
            await self.db.fetchval("SELECT MAX(stream_ordering) FROM event_push_actions") or 0
        )

    async def action_progress(self, instance: str) -> int | None:
        """How far `instance` has recorded actions (ADVANCE_PROGRESS); None: never."""
        value = await self.db.fetchval(
            "SELECT position FROM worker_positions WHERE instance = $1 AND stream = $2",
            instance,
            PROGRESS_STREAM,
        )
        return None if value is None else int(value)

    async def fold_position(self) -> int:
        """Actions at or below this position are counted by summaries: none is added
        there (push_retention.py)."""
        return await fold_position(self.db)

    async def positions_with_actions(self, positions: list[int]) -> set[int]:
        """Which of the events at `positions` have actions recorded."""
        if not positions:
            return set()
        rows = await self.db.fetch(
            "SELECT DISTINCT stream_ordering FROM event_push_actions WHERE stream_ordering"
            f" IN ({placeholders(len(positions))})",
            *positions,
        )
        return {int(r[0]) for r in rows}

    async def notifying_actions(
        self, after: int, upto: int, events: int
    ) -> tuple[list[PushAction], int | None]:
        """The notifying actions of users with pushers, for at most `events` events in
        (after, upto], in stream order, every row of an event or none; and the last of
        those events' positions (None: no notifying event in the range)."""
        positions = await self.db.fetch(
            "SELECT DISTINCT stream_ordering FROM event_push_actions WHERE stream_ordering > $1"
            " AND stream_ordering <= $2 AND notif ORDER BY stream_ordering LIMIT $3",
            after,
            upto,
            events,
        )
        if not positions:
            return [], None
        last = int(positions[-1][0])
        rows = await self.db.fetch(
            f"SELECT {_ACTION_COLUMNS} FROM event_push_actions WHERE stream_ordering > $1"
            " AND stream_ordering <= $2 AND notif"
            " AND user_id IN (SELECT user_id FROM pushers) ORDER BY stream_ordering",
            after,
            last,
        )
        return [_action(r) for r in rows], last

    async def notifying_actions_at(self, positions: list[int]) -> list[PushAction]:
        """The notifying actions of users with pushers for the events at `positions`."""
        return await self._actions_at(
            positions, "notif AND user_id IN (SELECT user_id FROM pushers)"
        )

    async def counted_actions_at(self, positions: list[int]) -> list[PushAction]:
        """Every notifying or highlighting action of the events at `positions` (what
        unread counts count), its `actions` left empty."""
        return await self._actions_at(positions, "(notif OR highlight)", _COUNTED_COLUMNS)

    async def _actions_at(
        self, positions: list[int], condition: str, columns: str = _ACTION_COLUMNS
    ) -> list[PushAction]:
        """The actions of the events at `positions` meeting `condition` (`condition` and
        `columns` are constants of this module, never input), in stream order."""
        if not positions:
            return []
        rows = await self.db.fetch(
            f"SELECT {columns} FROM event_push_actions WHERE stream_ordering IN"
            f" ({placeholders(len(positions))}) AND {condition} ORDER BY stream_ordering",
            *positions,
        )
        return [_action(r) for r in rows]
