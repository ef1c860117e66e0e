"""ReportStore: content reports users file about events, rooms and users."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

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


@dataclass(frozen=True)
class EventReportRow:
    """An event report with what the admin list shows about its event and room."""

    id: int
    received_ts: int
    room_id: str
    event_id: str
    user_id: str
    reason: str | None
    sender: str | None
    event_json: str | None


def _report_where(
    kind: str, filters: dict[str, str | None], columns: dict[str, str]
) -> tuple[str, list[Any]]:
    clauses = ["r.kind = $1"]
    args: list[Any] = [kind]
    for key, value in filters.items():
        if value is not None:
            args.append(value)
            clauses.append(f"{columns[key]} = ${len(args)}")
    return " WHERE " + " AND ".join(clauses), args


class AdminReportStore:
    """Reading and deleting reports (the admin API); the writing side is ReportStore."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def list_event_reports(
        self,
        start: int,
        limit: int,
        *,
        newest_first: bool,
        user_id: str | None = None,
        room_id: str | None = None,
        event_sender: str | None = None,
    ) -> tuple[list[EventReportRow], int]:
        where, args = _report_where(
            "event",
            {"user_id": user_id, "room_id": room_id, "sender": event_sender},
            {"user_id": "r.reporter", "room_id": "r.room_id", "sender": "e.sender"},
        )
        base = f" FROM content_reports r LEFT JOIN events e ON e.event_id = r.event_id{where}"
        total = await self.db.fetchval("SELECT COUNT(*)" + base, *args)
        direction = "DESC" if newest_first else "ASC"
        n = len(args)
        rows = await self.db.fetch(
            "SELECT r.id, r.received_ts, r.room_id, r.event_id, r.reporter, r.reason, e.sender,"
            f" NULL{base} ORDER BY r.received_ts {direction}, r.id {direction}"
            f" LIMIT ${n + 1} OFFSET ${n + 2}",
            *args,
            limit,
            start,
        )
        return [EventReportRow(*r) for r in rows], int(total or 0)

    async def get_event_report(self, report_id: int) -> EventReportRow | None:
        row = await self.db.fetchrow(
            "SELECT r.id, r.received_ts, r.room_id, r.event_id, r.reporter, r.reason, e.sender,"
            " e.json FROM content_reports r LEFT JOIN events e ON e.event_id = r.event_id"
            " WHERE r.id = $1 AND r.kind = 'event'",
            report_id,
        )
        return None if row is None else EventReportRow(*row)

    async def list_user_reports(
        self,
        start: int,
        limit: int,
        *,
        newest_first: bool,
        user_id: str | None = None,
        target_user_id: str | None = None,
    ) -> tuple[list[Report], int]:
        where, args = _report_where(
            "user",
            {"user_id": user_id, "target": target_user_id},
            {"user_id": "r.reporter", "target": "r.target_user_id"},
        )
        total = await self.db.fetchval(f"SELECT COUNT(*) FROM content_reports r{where}", *args)
        direction = "DESC" if newest_first else "ASC"
        n = len(args)
        rows = await self.db.fetch(
            "SELECT r.id, r.kind, r.reporter, r.room_id, r.event_id, r.target_user_id, r.reason,"
            f" r.received_ts FROM content_reports r{where}"
            f" ORDER BY r.received_ts {direction}, r.id {direction}"
            f" LIMIT ${n + 1} OFFSET ${n + 2}",
            *args,
            limit,
            start,
        )
        return [Report(*r) for r in rows], int(total or 0)

    async def get_report(self, report_id: int, kind: str) -> Report | None:
        row = await self.db.fetchrow(
            "SELECT id, kind, reporter, room_id, event_id, target_user_id, reason, received_ts"
            " FROM content_reports WHERE id = $1 AND kind = $2",
            report_id,
            kind,
        )
        return None if row is None else Report(*row)

    async def delete_report(self, report_id: int, kind: str) -> bool:
        changed = await self.db.execute(
            "DELETE FROM content_reports WHERE id = $1 AND kind = $2", report_id, kind
        )
        return changed > 0
