"""AdminRoomStore: the admin room list and what admins change about rooms (0050).

`room_stats` holds one row per room with what the list shows and sorts by (name,
alias, join rules, member counts, ...), derived from the room's current state by
`refresh_room_stats`. The list is then one indexed query with LIMIT/OFFSET, however
many rooms the server holds. `room_stats_position` records the stream ordering up to
which state changes were folded in, so a restart resumes where it stopped.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ._util import load_json, now_ms
from .database import Connection, Database

# Synapse's order_by values -> (SQL column, ascending when dir=f).
ROOM_ORDER_COLUMNS: dict[str, tuple[str, bool]] = {
    "name": ("s.name", True),
    "alphabetical": ("s.name", True),
    "canonical_alias": ("s.canonical_alias", True),
    "joined_members": ("s.joined_members", False),
    "size": ("s.joined_members", False),
    "joined_local_members": ("s.joined_local_members", False),
    "version": ("r.room_version", False),
    "creator": ("r.creator", True),
    "encryption": ("s.encryption", True),
    "federatable": ("s.federatable", True),
    "public": ("r.is_public", True),
    "join_rules": ("s.join_rules", True),
    "guest_access": ("s.guest_access", True),
    "history_visibility": ("s.history_visibility", True),
    "state_events": ("s.state_events", False),
}

# Current-state events whose content the list shows: type -> (content key, column).
_SHOWN_STATE = {
    "m.room.name": ("name", "name"),
    "m.room.topic": ("topic", "topic"),
    "m.room.avatar": ("url", "avatar"),
    "m.room.canonical_alias": ("alias", "canonical_alias"),
    "m.room.encryption": ("algorithm", "encryption"),
    "m.room.join_rules": ("join_rule", "join_rules"),
    "m.room.guest_access": ("guest_access", "guest_access"),
    "m.room.history_visibility": ("history_visibility", "history_visibility"),
    "m.room.tombstone": ("replacement_room", "tombstone_successor"),
}
_STATS_COLUMNS = (
    "name",
    "topic",
    "avatar",
    "canonical_alias",
    "encryption",
    "join_rules",
    "guest_access",
    "history_visibility",
    "room_type",
    "federatable",
    "tombstone_successor",
    "tombstoned",
    "joined_members",
    "joined_local_members",
    "state_events",
)
_POSITION_KEY = "room_stats"


@dataclass(frozen=True)
class RoomStats:
    room_id: str
    version: str
    creator: str | None
    public: bool
    name: str | None
    topic: str | None
    avatar: str | None
    canonical_alias: str | None
    encryption: str | None
    join_rules: str | None
    guest_access: str | None
    history_visibility: str | None
    room_type: str | None
    federatable: bool
    tombstone_successor: str | None
    tombstoned: bool
    joined_members: int
    joined_local_members: int
    state_events: int


@dataclass(frozen=True)
class RoomFilter:
    search_term: str | None = None
    public_rooms: bool | None = None
    empty_rooms: bool | None = None


@dataclass(frozen=True)
class BlockInfo:
    room_id: str
    user_id: str
    blocked_ts: int


@dataclass(frozen=True)
class Extremity:
    event_id: str
    state_group: int | None
    depth: int
    received_ts: int


_LIST_SELECT = (
    "SELECT r.room_id, r.room_version, r.creator, r.is_public, s.name, s.topic, s.avatar,"
    " s.canonical_alias, s.encryption, s.join_rules, s.guest_access, s.history_visibility,"
    " s.room_type, s.federatable, s.tombstone_successor, s.tombstoned, s.joined_members,"
    " s.joined_local_members, s.state_events"
    " FROM rooms r JOIN room_stats s ON s.room_id = r.room_id"
)


def _stats(row: Any) -> RoomStats:
    return RoomStats(
        room_id=row[0],
        version=row[1],
        creator=row[2],
        public=bool(row[3]),
        name=row[4],
        topic=row[5],
        avatar=row[6],
        canonical_alias=row[7],
        encryption=row[8],
        join_rules=row[9],
        guest_access=row[10],
        history_visibility=row[11],
        room_type=row[12],
        federatable=bool(row[13]),
        tombstone_successor=row[14],
        tombstoned=bool(row[15]),
        joined_members=int(row[16]),
        joined_local_members=int(row[17]),
        state_events=int(row[18]),
    )


def _escape_like(term: str) -> str:
    return term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


class AdminRoomStore:
    def __init__(self, db: Database, server_name: str) -> None:
        self.db = db
        self._local_suffix = "%:" + _escape_like(server_name)

    # -- the room list ------------------------------------------------------------------

    async def list_rooms(
        self,
        start: int,
        limit: int,
        room_filter: RoomFilter,
        order_by: str = "name",
        reverse: bool = False,
    ) -> tuple[list[RoomStats], int]:
        column, ascending = ROOM_ORDER_COLUMNS[order_by]
        if reverse:
            ascending = not ascending
        clauses: list[str] = []
        args: list[Any] = []
        if room_filter.search_term:
            term = _escape_like(room_filter.search_term.lower())
            args += [f"%{term}%", f"#%{term}%:%", room_filter.search_term]
            clauses.append(
                "(LOWER(s.name) LIKE $1 ESCAPE '\\' OR LOWER(s.canonical_alias) LIKE $2"
                " ESCAPE '\\' OR r.room_id = $3)"
            )
        if room_filter.public_rooms is not None:
            clauses.append("r.is_public" if room_filter.public_rooms else "NOT r.is_public")
        if room_filter.empty_rooms is not None:
            clauses.append(
                "s.joined_members = 0" if room_filter.empty_rooms else "s.joined_members <> 0"
            )
        where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
        direction = "ASC" if ascending else "DESC"
        nulls = "NULLS LAST" if ascending else "NULLS FIRST"
        n = len(args)
        rows = await self.db.fetch(
            f"{_LIST_SELECT}{where} ORDER BY {column} {direction} {nulls},"
            f" r.room_id {direction} LIMIT ${n + 1} OFFSET ${n + 2}",
            *args,
            limit,
            start,
        )
        total = await self.db.fetchval(
            "SELECT COUNT(*) FROM rooms r JOIN room_stats s ON s.room_id = r.room_id" + where,
            *args,
        )
        return [_stats(r) for r in rows], int(total or 0)

    async def get_room_stats(self, room_id: str) -> RoomStats | None:
        row = await self.db.fetchrow(f"{_LIST_SELECT} WHERE r.room_id = $1", room_id)
        return None if row is None else _stats(row)

    # -- keeping room_stats current -----------------------------------------------------

    async def stats_position(self) -> int:
        pos = await self.db.fetchval(
            "SELECT stream_ordering FROM room_stats_position WHERE lock = $1", _POSITION_KEY
        )
        return int(pos) if pos is not None else 0

    async def rooms_with_state_changes(self, after: int, up_to: int) -> list[str]:
        """Rooms with state events (memberships included) in (after, up_to]."""
        rows = await self.db.fetch(
            "SELECT DISTINCT room_id FROM events WHERE stream_ordering > $1"
            " AND stream_ordering <= $2 AND state_key IS NOT NULL",
            after,
            up_to,
        )
        return [r[0] for r in rows]

    async def rooms_without_stats(self) -> list[str]:
        rows = await self.db.fetch(
            "SELECT r.room_id FROM rooms r LEFT JOIN room_stats s ON s.room_id = r.room_id"
            " WHERE s.room_id IS NULL"
        )
        return [r[0] for r in rows]

    async def refresh_room_stats(self, room_ids: Iterable[str], position: int) -> None:
        """Recompute the rows of `room_ids` from current state; record `position`."""
        async with self.db.transaction() as conn:
            for room_id in dict.fromkeys(room_ids):
                values = await self._compute(conn, room_id)
                if values is None:
                    await conn.execute("DELETE FROM room_stats WHERE room_id = $1", room_id)
                    continue
                cols = ", ".join(_STATS_COLUMNS)
                marks = ", ".join(f"${i}" for i in range(2, len(_STATS_COLUMNS) + 2))
                updates = ", ".join(f"{c} = excluded.{c}" for c in _STATS_COLUMNS)
                await conn.execute(
                    f"INSERT INTO room_stats (room_id, {cols}) VALUES ($1, {marks})"
                    f" ON CONFLICT (room_id) DO UPDATE SET {updates}",
                    room_id,
                    *(values[c] for c in _STATS_COLUMNS),
                )
            await conn.execute(
                "INSERT INTO room_stats_position (lock, stream_ordering) VALUES ($1, $2)"
                " ON CONFLICT (lock) DO UPDATE SET stream_ordering = excluded.stream_ordering",
                _POSITION_KEY,
                position,
            )

    async def _compute(self, conn: Connection, room_id: str) -> dict[str, Any] | None:
        if await conn.fetchval("SELECT 1 FROM rooms WHERE room_id = $1", room_id) is None:
            return None
        rows = await conn.fetch(
            "SELECT cs.type, e.json FROM current_state cs JOIN events e"
            " ON e.event_id = cs.event_id WHERE cs.room_id = $1 AND cs.state_key = ''"
            " AND cs.type IN ('m.room.create', 'm.room.name', 'm.room.topic', 'm.room.avatar',"
            " 'm.room.canonical_alias', 'm.room.encryption', 'm.room.join_rules',"
            " 'm.room.guest_access', 'm.room.history_visibility', 'm.room.tombstone')",
            room_id,
        )
        values: dict[str, Any] = {c: None for c in _STATS_COLUMNS}
        values["federatable"] = True
        values["tombstoned"] = False
        for event_type, raw in rows:
            content = load_json(raw).get("content")
            if not isinstance(content, dict):
                continue
            if event_type == "m.room.create":
                values["federatable"] = content.get("m.federate", True) is not False
                room_type = content.get("type")
                values["room_type"] = room_type if isinstance(room_type, str) else None
                continue
            if event_type == "m.room.tombstone":
                values["tombstoned"] = True
            key, column = _SHOWN_STATE[event_type]
            value = content.get(key)
            values[column] = value if isinstance(value, str) else None
        values["joined_members"] = int(
            await conn.fetchval(
                "SELECT COUNT(*) FROM room_memberships WHERE room_id = $1 AND membership = 'join'",
                room_id,
            )
        )
        values["joined_local_members"] = int(
            await conn.fetchval(
                "SELECT COUNT(*) FROM room_memberships WHERE room_id = $1"
                " AND membership = 'join' AND user_id LIKE $2 ESCAPE '\\'",
                room_id,
                self._local_suffix,
            )
        )
        values["state_events"] = int(
            await conn.fetchval("SELECT COUNT(*) FROM current_state WHERE room_id = $1", room_id)
        )
        return values

    # -- blocking -----------------------------------------------------------------------

    async def block_room(self, room_id: str, user_id: str) -> None:
        await self.db.execute(
            "INSERT INTO blocked_rooms (room_id, user_id, blocked_ts) VALUES ($1, $2, $3)"
            " ON CONFLICT (room_id) DO NOTHING",
            room_id,
            user_id,
            now_ms(),
        )

    async def unblock_room(self, room_id: str) -> bool:
        return await self.db.execute("DELETE FROM blocked_rooms WHERE room_id = $1", room_id) > 0

    async def get_block(self, room_id: str) -> BlockInfo | None:
        row = await self.db.fetchrow(
            "SELECT room_id, user_id, blocked_ts FROM blocked_rooms WHERE room_id = $1", room_id
        )
        return None if row is None else BlockInfo(row[0], row[1], int(row[2]))

    async def blocked_room_ids(self) -> set[str]:
        return {r[0] for r in await self.db.fetch("SELECT room_id FROM blocked_rooms")}

    # -- server notice rooms ------------------------------------------------------------

    async def get_notice_room(self, user_id: str) -> str | None:
        return await self.db.fetchval(
            "SELECT room_id FROM server_notice_rooms WHERE user_id = $1", user_id
        )

    async def set_notice_room(self, user_id: str, room_id: str) -> None:
        await self.db.execute(
            "INSERT INTO server_notice_rooms (user_id, room_id) VALUES ($1, $2)"
            " ON CONFLICT (user_id) DO UPDATE SET room_id = excluded.room_id",
            user_id,
            room_id,
        )

    # -- history purge points -----------------------------------------------------------

    async def stream_before_ts(self, room_id: str, ts: int) -> int:
        """The stream ordering just after the room's last event sent before `ts` (so
        purging below it removes exactly the events older than `ts`)."""
        pos = await self.db.fetchval(
            "SELECT MAX(stream_ordering) FROM events WHERE room_id = $1"
            " AND origin_server_ts < $2 AND stream_ordering > 0",
            room_id,
            ts,
        )
        return int(pos) + 1 if pos is not None else -(2**62)

    # -- forward extremities ------------------------------------------------------------

    async def forward_extremities(self, room_id: str) -> list[Extremity]:
        rows = await self.db.fetch(
            "SELECT f.event_id, g.state_group, e.depth, e.received_ts"
            " FROM event_forward_extremities f JOIN events e ON e.event_id = f.event_id"
            " LEFT JOIN event_to_state_groups g ON g.event_id = f.event_id"
            " WHERE f.room_id = $1 ORDER BY e.depth DESC, e.stream_ordering DESC",
            room_id,
        )
        return [
            Extremity(r[0], int(r[1]) if r[1] is not None else None, int(r[2]), int(r[3]))
            for r in rows
        ]

    # -- local users' devices in a room (room details) -----------------------------------

    async def joined_local_devices(self, room_id: str) -> int:
        return int(
            await self.db.fetchval(
                "SELECT COUNT(*) FROM devices d JOIN room_memberships m"
                " ON m.user_id = d.user_id WHERE m.room_id = $1 AND m.membership = 'join'",
                room_id,
            )
        )

    async def forgotten_by_all_local(self, room_id: str) -> bool:
        """Every local user with a membership left and forgot the room (room details)."""
        rows = await self.db.fetch(
            "SELECT m.user_id, f.user_id FROM room_memberships m LEFT JOIN room_forgotten f"
            " ON f.user_id = m.user_id AND f.room_id = m.room_id"
            " WHERE m.room_id = $1 AND m.user_id LIKE $2 ESCAPE '\\'",
            room_id,
            self._local_suffix,
        )
        return bool(rows) and all(r[1] is not None for r in rows)
