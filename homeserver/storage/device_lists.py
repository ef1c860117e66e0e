"""DeviceListStore: the device-list change stream and who shares a room with whom.

A row in `device_lists_stream` says "this user's devices or cross-signing keys changed";
its stream_id is the `device_lists` position of sync tokens. Only this store writes
it: with several writing processes its writes take the stream's own lock (positions
from the table's sequence commit in order), beside other streams' writes.
Membership-driven changes (joins, leaves) are derived from `room_memberships` at read
time instead of written.
"""

from __future__ import annotations

from ._util import placeholders
from .database import Database


class DeviceListStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def add_change(self, user_id: str) -> int:
        """Record that `user_id`'s device list changed; returns the new stream position."""
        async with self.db.transaction(turn="alongside", stream="device_lists") as conn:
            position = await conn.fetchval(
                "INSERT INTO device_lists_stream (user_id) VALUES ($1) RETURNING stream_id",
                user_id,
            )
        return int(position)

    async def add_change_after(self, user_id: str) -> tuple[int, int | None]:
        """Record a change of `user_id`'s devices; returns (new position, the user's
        previous position or None). Both in one transaction so the pair is consistent:
        other servers chain a user's updates by these IDs (`stream_id`, `prev_id`)."""
        async with self.db.transaction(turn="alongside", stream="device_lists") as conn:
            previous = await conn.fetchval(
                "SELECT MAX(stream_id) FROM device_lists_stream WHERE user_id = $1", user_id
            )
            position = await conn.fetchval(
                "INSERT INTO device_lists_stream (user_id) VALUES ($1) RETURNING stream_id",
                user_id,
            )
        return int(position), (int(previous) if previous is not None else None)

    async def get_user_position(self, user_id: str) -> int:
        """The position of `user_id`'s latest change (0 if none): the `stream_id` other
        servers compare with the `prev_id` of our next update for that user."""
        value = await self.db.fetchval(
            "SELECT MAX(stream_id) FROM device_lists_stream WHERE user_id = $1", user_id
        )
        return int(value or 0)

    async def get_max_position(self) -> int:
        value = await self.db.fetchval("SELECT MAX(stream_id) FROM device_lists_stream")
        return int(value or 0)

    async def get_changed_users(self, users: list[str], from_pos: int, to_pos: int) -> set[str]:
        """Which of `users` changed in (from_pos, to_pos]."""
        changed: set[str] = set()
        for start in range(0, len(users), 400):
            chunk = users[start : start + 400]
            rows = await self.db.fetch(
                "SELECT DISTINCT user_id FROM device_lists_stream WHERE stream_id > $1"
                f" AND stream_id <= $2 AND user_id IN ({placeholders(len(chunk), start=3)})",
                from_pos,
                to_pos,
                *chunk,
            )
            changed.update(r[0] for r in rows)
        return changed

    async def get_users_sharing_room(self, user_id: str) -> set[str]:
        """Every user joined to a room `user_id` is joined to (`user_id` included if joined
        anywhere)."""
        rows = await self.db.fetch(
            "SELECT DISTINCT other.user_id FROM room_memberships mine"
            " JOIN room_memberships other ON other.room_id = mine.room_id"
            " WHERE mine.user_id = $1 AND mine.membership = 'join'"
            " AND other.membership = 'join'",
            user_id,
        )
        return {r[0] for r in rows}

    async def get_membership_changes(
        self, room_ids: list[str], from_pos: int, to_pos: int
    ) -> list[tuple[str, str, str]]:
        """(room_id, user_id, membership) of memberships in `room_ids` whose current
        membership event is in (from_pos, to_pos] of the events stream."""
        result: list[tuple[str, str, str]] = []
        for start in range(0, len(room_ids), 400):
            chunk = room_ids[start : start + 400]
            rows = await self.db.fetch(
                "SELECT room_id, user_id, membership FROM room_memberships"
                f" WHERE room_id IN ({placeholders(len(chunk), start=3)})"
                " AND stream_ordering > $1 AND stream_ordering <= $2",
                from_pos,
                to_pos,
                *chunk,
            )
            result.extend((r[0], r[1], r[2]) for r in rows)
        return result

    async def get_own_membership_changes(
        self, user_id: str, from_pos: int, to_pos: int
    ) -> list[tuple[str, str]]:
        """(room_id, membership) where `user_id`'s own membership changed in the range."""
        rows = await self.db.fetch(
            "SELECT room_id, membership FROM room_memberships WHERE user_id = $1"
            " AND stream_ordering > $2 AND stream_ordering <= $3",
            user_id,
            from_pos,
            to_pos,
        )
        return [(r[0], r[1]) for r in rows]
