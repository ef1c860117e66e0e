"""ToDeviceStore: queued to-device messages per (user, device) and /sendToDevice txns.

Messages are kept until the device acknowledges them by syncing with a `since` token at
or past their stream position; `stream_id` is the `to_device` position of sync tokens.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ._util import dump_json, load_json, now_ms
from .database import Database
from .errors import IntegrityError


@dataclass(frozen=True)
class ToDeviceMessage:
    user_id: str
    device_id: str
    sender: str
    type: str
    content: dict[str, Any]


class ToDeviceStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def add_messages(
        self,
        messages: Iterable[ToDeviceMessage],
        txn: tuple[str, str, str] | None = None,
    ) -> int | None:
        """Queue messages (and record the (user, device, txn_id) in the same transaction).

        Returns the highest new stream position, None if nothing was queued, or raises
        IntegrityError when the transaction ID was already used. Positions come from
        the table's sequence and the stream's newest is kept in to_device_stream_max:
        with several writing processes, the stream's own lock (storage/postgres_locks.py)
        makes them commit in order, beside other streams' writes (only this store
        writes these tables).
        """
        position: int | None = None
        async with self.db.transaction(turn="alongside", stream="to_device") as conn:
            if txn is not None:
                await conn.execute(
                    "INSERT INTO to_device_txns (user_id, device_id, txn_id, created_ts)"
                    " VALUES ($1, $2, $3, $4)",
                    *txn,
                    now_ms(),
                )
            for m in messages:
                position = await conn.fetchval(
                    "INSERT INTO to_device_messages (user_id, device_id, sender, type, content,"
                    " created_ts) VALUES ($1, $2, $3, $4, $5, $6) RETURNING stream_id",
                    m.user_id,
                    m.device_id,
                    m.sender,
                    m.type,
                    dump_json(m.content),
                    now_ms(),
                )
            if position is not None:
                await conn.execute(
                    "INSERT INTO to_device_stream_max (lock, stream_id) VALUES ('X', $1)"
                    " ON CONFLICT (lock) DO UPDATE SET stream_id = excluded.stream_id",
                    position,
                )
        return None if position is None else int(position)

    async def txn_seen(self, user_id: str, device_id: str, txn_id: str) -> bool:
        return (
            await self.db.fetchval(
                "SELECT 1 FROM to_device_txns WHERE user_id = $1 AND device_id = $2"
                " AND txn_id = $3",
                user_id,
                device_id,
                txn_id,
            )
            is not None
        )

    async def get_messages(
        self, user_id: str, device_id: str, from_pos: int, to_pos: int, limit: int | None = None
    ) -> list[tuple[int, ToDeviceMessage]]:
        """Messages for a device with from_pos < stream_id <= to_pos, oldest first (the
        oldest `limit` of them)."""
        rows = await self.db.fetch(
            "SELECT stream_id, sender, type, content FROM to_device_messages"
            " WHERE user_id = $1 AND device_id = $2 AND stream_id > $3 AND stream_id <= $4"
            " ORDER BY stream_id" + ("" if limit is None else f" LIMIT {int(limit)}"),
            user_id,
            device_id,
            from_pos,
            to_pos,
        )
        return [
            (int(r[0]), ToDeviceMessage(user_id, device_id, r[1], r[2], load_json(r[3])))
            for r in rows
        ]

    async def delete_messages_up_to(self, user_id: str, device_id: str, up_to: int) -> int:
        """Drop messages the device acknowledged (stream_id <= up_to). Alongside other
        processes' writes (a sync of a client reader acknowledging messages): it
        allocates nothing, and every message at or below a position a client was served
        has committed (the stream's writes take turns), so none can land below it."""
        async with self.db.transaction(turn="alongside") as conn:
            return await conn.execute(
                "DELETE FROM to_device_messages WHERE user_id = $1 AND device_id = $2"
                " AND stream_id <= $3",
                user_id,
                device_id,
                up_to,
            )

    async def get_messages_limited(
        self, user_id: str, device_id: str, to_pos: int, limit: int
    ) -> list[tuple[int, ToDeviceMessage]]:
        """The oldest `limit` messages of a device up to `to_pos`."""
        rows = await self.db.fetch(
            "SELECT stream_id, sender, type, content FROM to_device_messages"
            " WHERE user_id = $1 AND device_id = $2 AND stream_id <= $3"
            " ORDER BY stream_id LIMIT $4",
            user_id,
            device_id,
            to_pos,
            limit,
        )
        return [
            (int(r[0]), ToDeviceMessage(user_id, device_id, r[1], r[2], load_json(r[3])))
            for r in rows
        ]

    async def recipients_with_messages(self, limit: int) -> list[str]:
        """Users with queued messages (an appservice's users, after a restart)."""
        rows = await self.db.fetch(
            "SELECT DISTINCT user_id FROM to_device_messages ORDER BY user_id LIMIT $1", limit
        )
        return [r[0] for r in rows]

    async def keep_newest(self, user_id: str, device_id: str, keep: int) -> int:
        """Drop a device's queued messages but the newest `keep`; how many went."""
        cutoff = await self.db.fetchval(
            "SELECT stream_id FROM to_device_messages WHERE user_id = $1 AND device_id = $2"
            " ORDER BY stream_id DESC LIMIT 1 OFFSET $3",
            user_id,
            device_id,
            keep,
        )
        if cutoff is None:
            return 0
        return await self.delete_messages_up_to(user_id, device_id, int(cutoff))

    async def delete_device(self, user_id: str, device_id: str) -> None:
        await self.db.execute(
            "DELETE FROM to_device_messages WHERE user_id = $1 AND device_id = $2",
            user_id,
            device_id,
        )

    async def get_max_position(self) -> int:
        value = await self.db.fetchval("SELECT MAX(stream_id) FROM to_device_stream_max")
        return int(value or 0)


__all__ = ["IntegrityError", "ToDeviceMessage", "ToDeviceStore"]
