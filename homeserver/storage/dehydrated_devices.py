"""DehydratedDeviceStore: each user's dehydrated device (MSC3814), table dehydrated_devices."""

from __future__ import annotations

from typing import Any

from ._util import dump_json, load_json
from .database import Database


class DehydratedDeviceStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def get(self, user_id: str) -> tuple[str, dict[str, Any]] | None:
        """(device ID, device data) of the user's dehydrated device."""
        row = await self.db.fetchrow(
            "SELECT device_id, device_data FROM dehydrated_devices WHERE user_id = $1", user_id
        )
        return None if row is None else (row[0], load_json(row[1]))

    async def set(self, user_id: str, device_id: str, device_data: dict[str, Any]) -> None:
        await self.db.execute(
            "INSERT INTO dehydrated_devices (user_id, device_id, device_data)"
            " VALUES ($1, $2, $3) ON CONFLICT (user_id)"
            " DO UPDATE SET device_id = excluded.device_id, device_data = excluded.device_data",
            user_id,
            device_id,
            dump_json(device_data),
        )

    async def forget(self, user_id: str, device_id: str) -> bool:
        """Forget the user's dehydrated device if it is `device_id` (it was deleted)."""
        changed = await self.db.execute(
            "DELETE FROM dehydrated_devices WHERE user_id = $1 AND device_id = $2",
            user_id,
            device_id,
        )
        return changed > 0
