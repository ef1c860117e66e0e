"""ReceiptStore: the latest receipt per (room, type, user, thread), with a stream ID.

Sync reads receipts changed since a position (index on stream_id) or all receipts of a
few rooms (primary key prefix); nothing scans the table.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from ._util import chunks, placeholders
from .database import Database
from .group_commit import GroupCommit
from .stream_marks import newest_sql, upsert_at_next_positions


@dataclass(frozen=True)
class Receipt:
    room_id: str
    receipt_type: str
    user_id: str
    thread_id: str  # '' = unthreaded
    event_id: str
    ts: int
    stream_id: int


# room_id, receipt_type, user_id, thread_id, event_id, ts: one receipt to write.
_Write = tuple[str, str, str, str, str, int]

_COLUMNS = "room_id, receipt_type, user_id, thread_id, event_id, ts, stream_id"
# A receipt replaces the user's previous one of its key, at a new position.
_UPSERT = (
    f"INSERT INTO receipts ({_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, {{position}})"
    " ON CONFLICT (room_id, receipt_type, user_id, thread_id) DO UPDATE SET"
    " event_id = excluded.event_id, ts = excluded.ts, stream_id = excluded.stream_id"
)


def _row(r: object) -> Receipt:
    return Receipt(r[0], r[1], r[2], r[3], r[4], int(r[5]), int(r[6]))  # type: ignore[index]


class ReceiptStore:
    def __init__(
        self, db: Database, read_marker_moved: Callable[[str, str], None] | None = None
    ) -> None:
        """`read_marker_moved(user_id, room_id)` is told after each write commits: a
        receipt moves where the user has read to, which cached unread counts depend on."""
        self.db = db
        self._read_marker_moved = read_marker_moved
        # Bound: a group holds at most 500 receipts; the queue holds one per request in
        # flight (each awaits its write), so the server's request limits bound it.
        self._writes: GroupCommit[_Write, int] = GroupCommit(
            self._write_group, max_group=500, name="receipts-write"
        )

    async def get_max_stream_id(self) -> int:
        return int(await self.db.fetchval(f"SELECT {newest_sql('receipts')}") or 0)

    async def write(
        self,
        room_id: str,
        receipt_type: str,
        user_id: str,
        thread_id: str,
        event_id: str,
        ts: int,
    ) -> int:
        """Store a user's latest receipt at the next stream position, which it returns.
        Receipts written while another group commits share the next transaction
        (group_commit.py): a reading user's client sends one per message read, so this
        is among a deployment's most frequent writes, and one transaction each made
        every receipt a turn at the process's write connection and at the stream's lock."""
        position = await self._writes.submit(
            (room_id, receipt_type, user_id, thread_id, event_id, ts)
        )
        if self._read_marker_moved is not None:
            self._read_marker_moved(user_id, room_id)
        return position

    async def _write_group(self, requests: list[_Write]) -> list[int]:
        """Write a group of receipts at the next positions, in request order. The
        positions are allocated inside the transaction: write transactions are
        serialised in the process, and with several writing processes the receipts
        stream's are across the deployment (its own lock, storage/postgres_locks.py),
        so positions are unique and commit in order whichever process writes
        (`stream_writers: {receipts: [...]}`). Rows are only ever replaced by a higher
        position (a later receipt of the same key in the group replaces an earlier
        one), never deleted, so the maximum never goes back. Nothing else writes this
        table: other streams' writes run beside it."""
        async with self.db.transaction(turn="alongside", stream="receipts") as conn:
            return await upsert_at_next_positions(conn, "receipts", _UPSERT, requests)

    async def get_since(self, since: int, upto: int) -> list[Receipt]:
        """Receipts written with since < stream_id <= upto, in stream order."""
        rows = await self.db.fetch(
            f"SELECT {_COLUMNS} FROM receipts WHERE stream_id > $1 AND stream_id <= $2"
            " ORDER BY stream_id",
            since,
            upto,
        )
        return [_row(r) for r in rows]

    async def get_for_rooms(self, room_ids: Iterable[str]) -> list[Receipt]:
        rooms = list(dict.fromkeys(room_ids))
        out: list[Receipt] = []
        for part in chunks(rooms):
            rows = await self.db.fetch(
                f"SELECT {_COLUMNS} FROM receipts WHERE room_id IN ({placeholders(len(part))})",
                *part,
            )
            out.extend(_row(r) for r in rows)
        return out

    async def get_user_receipt(
        self, room_id: str, receipt_type: str, user_id: str, thread_id: str = ""
    ) -> Receipt | None:
        row = await self.db.fetchrow(
            f"SELECT {_COLUMNS} FROM receipts WHERE room_id = $1 AND receipt_type = $2"
            " AND user_id = $3 AND thread_id = $4",
            room_id,
            receipt_type,
            user_id,
            thread_id,
        )
        return None if row is None else _row(row)
