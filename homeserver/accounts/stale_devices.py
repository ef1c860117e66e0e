"""Synapse's `delete_stale_devices_after`: devices not used for that long are signed out.

A phone thrown away years ago still holds a session: an access token that works, keys
other users encrypt for, a pusher. With the setting, a device whose last use
(devices.last_seen_ts, written by every authenticated request) is older than the
period is deleted like a user deleting it (its tokens, keys, to-device messages and
pushers go; other servers hear of it). Never used devices (no last use recorded) and
dehydrated devices stay, as in Synapse. One process runs it, every RUN_INTERVAL_S, at
most BATCH_DEVICES devices a run (the rest wait for the next).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence

from homeserver.storage.database import Database

log = logging.getLogger(__name__)

RUN_INTERVAL_S = 3600.0
BATCH_DEVICES = 1000

DeleteDevices = Callable[[str, Sequence[str]], Awaitable[None]]


class StaleDevices:
    def __init__(self, db: Database, after_ms: int, delete_devices: DeleteDevices) -> None:
        self._db = db
        self._after_ms = after_ms
        self._delete = delete_devices

    async def run(self, now_ms: int | None = None) -> int:
        """Delete the devices unused since `now_ms` (now) - the period; how many."""
        if now_ms is None:
            now_ms = int(time.time() * 1000)
        rows = await self._db.fetch(
            "SELECT user_id, device_id FROM devices d WHERE last_seen_ts < $1"
            " AND NOT EXISTS (SELECT 1 FROM dehydrated_devices h"
            " WHERE h.user_id = d.user_id AND h.device_id = d.device_id)"
            " ORDER BY last_seen_ts LIMIT $2",
            now_ms - self._after_ms,
            BATCH_DEVICES,
        )
        by_user: dict[str, list[str]] = {}
        for user_id, device_id in rows:
            by_user.setdefault(user_id, []).append(device_id)
        for user_id, device_ids in by_user.items():
            try:
                await self._delete(user_id, device_ids)
            except Exception:  # one account's failure must not stop the others
                log.exception("deleting the stale devices of %s failed", user_id)
        if rows:
            log.info("signed out %d devices unused for too long", len(rows))
        return len(rows)
