"""Removing a room's data from the database: the whole room, or old history.

The purge finds what to delete from the schema itself (see `schema.py`), so a table
another area adds later is covered without anyone remembering to list it here:

- every table with a `room_id` column: its rows of the room (except KEEP_TABLES);
- every other table whose foreign key points at a room table (state_group_entries ->
  state_groups): rows pointing at the room's rows;
- every other table with an `event_id` column: rows of the room's events.

Deletion runs children first (the reverse of foreign-key order) in one transaction,
so a crash leaves either the whole room or none of it. The streams' newest positions
are kept first (stream_marks.py): deleted rows' positions are never handed out again. Callers drop their caches
afterwards with what `RoomPurgeResult` reports.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ._util import chunks, placeholders
from .database import Database
from .schema import Table, dependency_order, quote_ident
from .stream_marks import keep_newest_positions

# Kept when a room is deleted: the block must outlive the room (that is its point), and
# reports stay readable for admins (as in Synapse).
KEEP_TABLES = frozenset({"blocked_rooms", "content_reports", "admin_jobs", "schema_version"})
# Deleted last: the other tables' subqueries select the room's events and state groups.
ANCHOR_TABLES = ("event_to_state_groups", "state_groups", "events", "rooms")
# A history purge also leaves users' receipts alone (they may point at old events).
HISTORY_KEEP_TABLES = KEEP_TABLES | {"receipts"}


@dataclass
class RoomPurgeResult:
    event_ids: list[str] = field(default_factory=list)
    member_ids: set[str] = field(default_factory=set)
    rows: dict[str, int] = field(default_factory=dict)


@dataclass
class HistoryPurgeResult:
    event_ids: list[str] = field(default_factory=list)
    rows: dict[str, int] = field(default_factory=dict)


class RoomPurgeStore:
    def __init__(self, db: Database, purged: Callable[[str], None] | None = None) -> None:
        """`purged(room_id)` is told after rows of a room were deleted, for caches that
        hold derived data (unread counts)."""
        self.db = db
        self._purged = purged
        self._plan: list[tuple[str, str]] | None = None

    async def _room_plan(self) -> list[tuple[str, str]]:
        """(table, WHERE clause with $1 = room ID), in a safe deletion order."""
        if self._plan is not None:
            return self._plan
        tables = {t.name: t for t in await self.db.describe_schema()}
        room_tables = {n for n, t in tables.items() if t.has("room_id") and n not in KEEP_TABLES}
        steps: dict[str, str] = {}
        for name, table in tables.items():
            if name in KEEP_TABLES:
                continue
            via_parent = _via_foreign_key(table, tables, room_tables)
            if name in room_tables:
                steps[name] = "room_id = $1"
            elif via_parent is not None:
                steps[name] = via_parent
            elif table.has("event_id"):
                steps[name] = "event_id IN (SELECT event_id FROM events WHERE room_id = $1)"
        order = [t.name for t in reversed(dependency_order(tables.values()))]
        plan = [(n, steps[n]) for n in order if n in steps and n not in ANCHOR_TABLES]
        plan += [(n, steps[n]) for n in ANCHOR_TABLES if n in steps]
        self._plan = plan
        return plan

    async def purge_room(self, room_id: str) -> RoomPurgeResult:
        """Delete every row of the room (see the module docstring) in one transaction."""
        plan = await self._room_plan()
        result = RoomPurgeResult()
        async with self.db.transaction() as conn:
            await keep_newest_positions(conn)
            result.event_ids = [
                r[0]
                for r in await conn.fetch("SELECT event_id FROM events WHERE room_id = $1", room_id)
            ]
            result.member_ids = {
                r[0]
                for r in await conn.fetch(
                    "SELECT user_id FROM room_memberships WHERE room_id = $1", room_id
                )
            }
            for table, where in plan:
                count = await conn.execute(
                    f"DELETE FROM {quote_ident(table)} WHERE {where}", room_id
                )
                if count:
                    result.rows[table] = count
        if self._purged is not None:
            self._purged(room_id)
        return result

    async def purge_history(
        self, room_id: str, before_stream: int, *, local_server: str | None
    ) -> HistoryPurgeResult:
        """Delete the room's non-state events older than `before_stream` (a stream
        ordering); with `local_server`, events sent by its users are kept.

        State events stay (the room's state and its auth chains are built from them),
        as do the current forward extremities and users' receipts; rows of other
        tables that describe a deleted event go with it.
        """
        tables = await self.db.describe_schema()
        event_tables = [
            t.name
            for t in reversed(dependency_order(tables))
            if t.has("event_id") and t.name not in HISTORY_KEEP_TABLES and t.name != "events"
        ]
        result = HistoryPurgeResult()
        async with self.db.transaction() as conn:
            await keep_newest_positions(conn)
            rows = await conn.fetch(
                "SELECT event_id, sender FROM events WHERE room_id = $1 AND stream_ordering < $2"
                " AND state_key IS NULL AND event_id NOT IN"
                " (SELECT event_id FROM event_forward_extremities WHERE room_id = $1)",
                room_id,
                before_stream,
            )
            suffix = f":{local_server}" if local_server else None
            doomed = [r[0] for r in rows if suffix is None or not r[1].endswith(suffix)]
            for part in chunks(doomed):
                in_list = placeholders(len(part))
                for table in [*event_tables, "events"]:
                    count = await conn.execute(
                        f"DELETE FROM {quote_ident(table)} WHERE event_id IN ({in_list})", *part
                    )
                    if count:
                        result.rows[table] = result.rows.get(table, 0) + count
            # Unread counts of folded push actions (push_retention.py) that cover
            # only purged history: their events are gone.
            await conn.execute(
                "DELETE FROM push_summaries WHERE room_id = $1 AND upto_so < $2",
                room_id,
                before_stream,
            )
        result.event_ids = doomed
        if self._purged is not None:
            self._purged(room_id)
        return result


def _via_foreign_key(table: Table, tables: dict[str, Table], room_tables: set[str]) -> str | None:
    """`col IN (SELECT refcol FROM parent WHERE room_id = $1)` for a table whose foreign
    key points at a room table; None when it has none."""
    for fk in table.foreign_keys:
        parent = tables.get(fk.ref_table)
        if fk.ref_table in room_tables and parent is not None and len(fk.columns) == 1:
            return (
                f"{quote_ident(fk.columns[0])} IN (SELECT {quote_ident(fk.ref_columns[0])}"
                f" FROM {quote_ident(parent.name)} WHERE room_id = $1)"
            )
    return None
