"""RemoteDeviceCacheStore: remote users' device lists (see migration 0011)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ._util import now_ms
from .database import Database


@dataclass(frozen=True)
class CachedDeviceList:
    stream_id: int
    stale: bool
    answer: dict[str, Any]  # the /user/devices body


class RemoteDeviceCacheStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def get(self, user_id: str) -> CachedDeviceList | None:
        row = await self.db.fetchrow(
            "SELECT stream_id, stale, answer FROM remote_device_lists WHERE user_id = $1",
            user_id,
        )
        if row is None:
            return None
        return CachedDeviceList(int(row[0]), bool(row[1]), json.loads(row[2]))

    async def put(self, user_id: str, stream_id: int, answer: dict[str, Any]) -> None:
        await self.db.execute(
            "INSERT INTO remote_device_lists (user_id, stream_id, stale, answer, updated_ts)"
            " VALUES ($1, $2, FALSE, $3, $4) ON CONFLICT (user_id) DO UPDATE SET"
            " stream_id = excluded.stream_id, stale = FALSE, answer = excluded.answer,"
            " updated_ts = excluded.updated_ts",
            user_id,
            stream_id,
            json.dumps(answer),
            now_ms(),
        )

    async def mark_stale(self, user_id: str) -> None:
        await self.db.execute(
            "UPDATE remote_device_lists SET stale = TRUE WHERE user_id = $1", user_id
        )
