"""Synapse's `forgotten_room_retention_period`: a room every local user has forgotten
is deleted from the database that long after the last of them forgot it.

Forgetting is a user saying "I am done with this room"; once all of ours have said
so, nothing here serves the room any more, yet its history, state and media
references stay on disk (and in backups) forever. With the setting, one process
looks hourly for such rooms (no local user joined, invited or knocking: those cannot
forget; everyone with a membership forgot it, the latest before the cutoff) and
purges each like the admin API's room delete. At most BATCH_ROOMS rooms a run.
"""

from __future__ import annotations

import logging
import time

from homeserver.background import BackgroundTasks, every
from homeserver.errors import MatrixError
from homeserver.rooms.purge import RoomPurger
from homeserver.storage.database import Database

log = logging.getLogger(__name__)

RUN_INTERVAL_S = 3600.0
BATCH_ROOMS = 100


def _escape_like(term: str) -> str:
    return term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


class ForgottenRoomPurge:
    def __init__(self, db: Database, purger: RoomPurger, server_name: str, period_ms: int) -> None:
        self._db = db
        self._purger = purger
        self._local = "%:" + _escape_like(server_name)
        self._period_ms = period_ms

    async def due_rooms(self, now_ms: int) -> list[str]:
        """Rooms all local users with a membership forgot, the last before the cutoff."""
        rows = await self._db.fetch(
            "SELECT f.room_id FROM room_forgotten f GROUP BY f.room_id"
            " HAVING MAX(f.forgotten_ts) < $1 AND NOT EXISTS ("
            "  SELECT 1 FROM room_memberships m LEFT JOIN room_forgotten g"
            "  ON g.user_id = m.user_id AND g.room_id = m.room_id"
            "  WHERE m.room_id = f.room_id AND m.user_id LIKE $2 ESCAPE '\\'"
            "  AND g.user_id IS NULL)"
            " LIMIT $3",
            now_ms - self._period_ms,
            self._local,
            BATCH_ROOMS,
        )
        return [r[0] for r in rows]

    async def run(self, now_ms: int | None = None) -> int:
        """Purge the rooms due; how many."""
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        purged = 0
        for room_id in await self.due_rooms(now_ms):
            try:
                await self._purger.delete_room(room_id)  # refused if someone rejoined
            except MatrixError as exc:
                log.info("forgotten room %s kept: %s", room_id, exc)
                continue
            purged += 1
        if purged:
            log.info("purged %d rooms every local user had forgotten", purged)
        return purged


def start_forgotten_purge(
    period_ms: int | None,
    db: Database,
    purger: RoomPurger,
    server_name: str,
    tasks: BackgroundTasks,
) -> None:
    """Run the purge hourly (on the process that runs background jobs) when set."""
    if period_ms is not None:
        job = ForgottenRoomPurge(db, purger, server_name, period_ms)
        tasks.spawn(every(RUN_INTERVAL_S, job.run), "forgotten room purge")
