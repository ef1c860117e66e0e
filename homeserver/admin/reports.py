"""Content reports for admins: event reports (Synapse's /v1/event_reports) with the
reported event and its room's name and alias, and user reports (/v1/user_reports)."""

from __future__ import annotations

import json
from typing import Any

from homeserver.errors import not_found
from homeserver.storage import Stores
from homeserver.storage.reports import AdminReportStore, EventReportRow

from .paging import Page, page_json


class AdminReports:
    def __init__(self, store: AdminReportStore, stores: Stores) -> None:
        self._store = store
        self._stores = stores

    async def _room_names(self, room_ids: set[str]) -> dict[str, tuple[str | None, str | None]]:
        """room -> (name, canonical alias) from current state."""
        out: dict[str, tuple[str | None, str | None]] = {}
        for room_id in room_ids:
            ids = await self._stores.current_state.get_current_state_ids(
                room_id, ["m.room.name", "m.room.canonical_alias"]
            )
            events = await self._stores.events.get_events(ids.values())
            name_ev = events.get(ids.get(("m.room.name", ""), ""))
            alias_ev = events.get(ids.get(("m.room.canonical_alias", ""), ""))
            name = name_ev.content.get("name") if name_ev else None
            alias = alias_ev.content.get("alias") if alias_ev else None
            out[room_id] = (
                name if isinstance(name, str) else None,
                alias if isinstance(alias, str) else None,
            )
        return out

    def _event_report_json(
        self, row: EventReportRow, names: dict[str, tuple[str | None, str | None]]
    ) -> dict[str, Any]:
        name, alias = names.get(row.room_id, (None, None))
        return {
            "id": row.id,
            "received_ts": row.received_ts,
            "room_id": row.room_id,
            "name": name,
            "canonical_alias": alias,
            "event_id": row.event_id,
            "user_id": row.user_id,
            "reason": row.reason,
            "score": None,
            "sender": row.sender,
        }

    async def list_event_reports(
        self,
        page: Page,
        *,
        newest_first: bool,
        user_id: str | None,
        room_id: str | None,
        event_sender: str | None,
    ) -> dict[str, Any]:
        rows, total = await self._store.list_event_reports(
            page.start,
            page.limit,
            newest_first=newest_first,
            user_id=user_id,
            room_id=room_id,
            event_sender=event_sender,
        )
        names = await self._room_names({r.room_id for r in rows})
        body = {"event_reports": [self._event_report_json(r, names) for r in rows], "total": total}
        return page_json(body, page, len(rows), total)

    async def event_report(self, report_id: int) -> dict[str, Any]:
        row = await self._store.get_event_report(report_id)
        if row is None:
            raise not_found("Event report not found")
        body = self._event_report_json(row, await self._room_names({row.room_id}))
        body["event_json"] = json.loads(row.event_json) if row.event_json else None
        return body

    async def delete_event_report(self, report_id: int) -> None:
        if not await self._store.delete_report(report_id, "event"):
            raise not_found("Event report not found")

    async def list_user_reports(
        self, page: Page, *, newest_first: bool, user_id: str | None, target_user_id: str | None
    ) -> dict[str, Any]:
        rows, total = await self._store.list_user_reports(
            page.start,
            page.limit,
            newest_first=newest_first,
            user_id=user_id,
            target_user_id=target_user_id,
        )
        reports = [
            {
                "id": r.id,
                "received_ts": r.received_ts,
                "target_user_id": r.target_user_id,
                "user_id": r.reporter,
                "reason": r.reason,
            }
            for r in rows
        ]
        return page_json({"user_reports": reports, "total": total}, page, len(rows), total)

    async def user_report(self, report_id: int) -> dict[str, Any]:
        row = await self._store.get_report(report_id, "user")
        if row is None:
            raise not_found("User report not found")
        return {
            "id": row.id,
            "received_ts": row.received_ts,
            "target_user_id": row.target_user_id,
            "user_id": row.reporter,
            "reason": row.reason,
        }

    async def delete_user_report(self, report_id: int) -> None:
        if not await self._store.delete_report(report_id, "user"):
            raise not_found("User report not found")
