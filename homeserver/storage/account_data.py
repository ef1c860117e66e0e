"""AccountDataStore: per-user global and per-room account data with stream IDs.

room_id '' holds global data. Tags are stored as the per-room `m.tag` entry, so they
travel through sync like any other room account data.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ._util import dump_json, load_json
from .database import Connection, Database
from .group_commit import GroupCommit
from .stream_marks import newest_sql, upsert_at_next_positions

# The mark row's type (user_id ''): keeps the stream's highest position (delete_user).
STREAM_MARK = "org.homeserver.stream_position"
# user_id, room_id, data_type, content (JSON text): one entry to put.
_Put = tuple[str, str, str, str]
# An entry replaces the user's previous one of its key, at a new position.
_UPSERT = (
    "INSERT INTO account_data (user_id, room_id, data_type, content, stream_id)"
    " VALUES ($1, $2, $3, $4, {position}) ON CONFLICT (user_id, room_id, data_type)"
    " DO UPDATE SET content = excluded.content, stream_id = excluded.stream_id"
)


@dataclass(frozen=True)
class AccountDataEntry:
    room_id: str  # '' = global
    data_type: str
    content: dict[str, Any]
    stream_id: int


class AccountDataStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        # Bound: a group holds at most 100 entries (each at most a request body); the
        # queue holds one per request in flight (each awaits its write).
        self._puts: GroupCommit[_Put, int] = GroupCommit(
            self._put_group, max_group=100, name="account-data-write"
        )

    async def get_max_stream_id(self) -> int:
        return int(await self.db.fetchval(f"SELECT {newest_sql('account_data')}") or 0)

    async def put(self, user_id: str, room_id: str, data_type: str, content: dict[str, Any]) -> int:
        """Store one entry at the next stream position, which it returns. Entries put
        while another group commits share the next transaction (group_commit.py): every
        `/read_markers` of a reading user's client puts its `m.fully_read`, so this is
        among a deployment's most frequent writes."""
        return await self._puts.submit((user_id, room_id, data_type, dump_json(content)))

    async def _put_group(self, puts: list[_Put]) -> list[int]:
        """Write a group of entries at the next positions, in order. The positions are
        allocated inside the write transaction: write transactions are serialised in
        the process, and with several writing processes this stream's are across the
        deployment (its own lock, storage/postgres_locks.py), so positions are unique
        and commit in order whichever process writes. Rows are replaced by a higher
        position (a later put of the same entry in the group replaces an earlier one),
        and deleted only with the maximum kept (delete_user), so it never goes back.
        Only this store writes the table: other streams' writes run beside its
        transactions."""
        async with self.db.transaction(turn="alongside", stream="account_data") as conn:
            return await upsert_at_next_positions(conn, "account_data", _UPSERT, puts)

    async def modify(
        self,
        user_id: str,
        room_id: str,
        data_type: str,
        change: Callable[[dict[str, Any] | None], dict[str, Any] | None],
    ) -> int | None:
        """Read, change and write one entry in one write transaction, so two concurrent
        changes of the same entry (two tags added to one room at once) both land; the
        serialised write transactions (see `put`) order them. `change` gets the current
        content (None: none) and returns the new one, or None to leave it as it is.
        Returns the new stream position, or None when nothing was written."""
        async with self.db.transaction(turn="alongside", stream="account_data") as conn:
            text = await conn.fetchval(
                "SELECT content FROM account_data WHERE user_id = $1 AND room_id = $2"
                " AND data_type = $3",
                user_id,
                room_id,
                data_type,
            )
            content = change(None if text is None else load_json(text))
            if content is None:
                return None
            return await _write(conn, user_id, room_id, data_type, dump_json(content))

    async def delete_user(self, user_id: str) -> int:
        """Delete everything of the user (a deactivation); how many entries. Positions are
        MAX + 1: if the user held the highest, a mark row (no user) keeps it, or the
        next write anywhere would reuse a position some client's token already passed
        (and that client would never see it)."""
        async with self.db.transaction(turn="alongside", stream="account_data") as conn:
            top = await conn.fetchval("SELECT MAX(stream_id) FROM account_data")
            deleted = await conn.execute("DELETE FROM account_data WHERE user_id = $1", user_id)
            if deleted and top is not None:
                await conn.execute(
                    "INSERT INTO account_data (user_id, room_id, data_type, content, stream_id)"
                    " VALUES ('', '', $1, '{}', $2) ON CONFLICT (user_id, room_id, data_type)"
                    " DO UPDATE SET stream_id = excluded.stream_id"
                    " WHERE account_data.stream_id < excluded.stream_id",
                    STREAM_MARK,
                    top,
                )
        return deleted

    async def get(self, user_id: str, room_id: str, data_type: str) -> dict[str, Any] | None:
        text = await self.db.fetchval(
            "SELECT content FROM account_data WHERE user_id = $1 AND room_id = $2"
            " AND data_type = $3",
            user_id,
            room_id,
            data_type,
        )
        return None if text is None else load_json(text)

    async def get_since(self, user_id: str, since: int) -> list[AccountDataEntry]:
        """Everything of the user written after `since` (0: everything), stream order."""
        rows = await self.db.fetch(
            "SELECT room_id, data_type, content, stream_id FROM account_data"
            " WHERE user_id = $1 AND stream_id > $2 ORDER BY stream_id",
            user_id,
            since,
        )
        return [AccountDataEntry(r[0], r[1], load_json(r[2]), int(r[3])) for r in rows]


async def _write(
    conn: Connection, user_id: str, room_id: str, data_type: str, content_json: str
) -> int:
    """Upsert one entry at MAX + 1, inside the caller's write transaction."""
    put = (user_id, room_id, data_type, content_json)
    [position] = await upsert_at_next_positions(conn, "account_data", _UPSERT, [put])
    return position
