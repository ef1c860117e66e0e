"""ReportStore: content reports users file about events, rooms and users."""

from __future__ import annotations

from dataclasses import dataclass

from ._util import now_ms
from .database import Database


@dataclass(frozen=True)
class Report:
    id: int
    kind: str
    reporter: str
    room_id: str | None
    event_id: str | None
    target_user_id: str | None
    reason: str | None
    received_ts: int


class ReportStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def add_report(
        self,
        kind: str,
        reporter: str,
        *,
        room_id: str | None = None,
        event_id: str | None = None,
        target_user_id: str | None = None,
        reason: str | None = None,
    ) -> int:
        async with self.db.transaction() as conn:
            report_id = await conn.fetchval(
                "INSERT INTO content_reports"
                " (kind, reporter, room_id, event_id, target_user_id, reason, received_ts)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
                kind,
                reporter,
                room_id,
                event_id,
                target_user_id,
                reason,
                now_ms(),
            )
        return int(report_id)

    async def recent_reports(self, limit: int = 100) -> list[Report]:
        """Newest first (for admins and tests)."""
        rows = await self.db.fetch(
            "SELECT id, kind, reporter, room_id, event_id, target_user_id, reason, received_ts"
            " FROM content_reports ORDER BY id DESC LIMIT $1",
            limit,
        )
        return [Report(*r) for r in rows]
