"""ReportService: check a report's target the way report_content.yaml asks, then keep it.

Reports are only stored (no admin notification yet). The 404 rules follow the spec: an
event report needs the reporter joined to the room and the event in that room; a room
report only needs the room to be known; a user report needs a local user to exist.
"""

from __future__ import annotations

from homeserver.errors import not_found
from homeserver.storage import Stores
from homeserver.storage.reports import ReportStore


class ReportService:
    def __init__(self, stores: Stores, reports: ReportStore, server_name: str) -> None:
        self._stores = stores
        self.store = reports
        self._server_name = server_name

    async def report_event(
        self, reporter: str, room_id: str, event_id: str, reason: str | None
    ) -> int:
        membership = await self._stores.current_state.get_membership(room_id, reporter)
        event = await self._stores.events.get_event(event_id)
        if membership != "join" or event is None or event.room_id != room_id:
            raise not_found("The event was not found or you are not joined to the room.")
        return await self.store.add_report(
            "event", reporter, room_id=room_id, event_id=event_id, reason=reason
        )

    async def report_room(self, reporter: str, room_id: str, reason: str) -> int:
        if await self._stores.rooms.get_room_version(room_id) is None:
            raise not_found("The room was not found.")
        return await self.store.add_report("room", reporter, room_id=room_id, reason=reason)

    async def report_user(self, reporter: str, user_id: str, reason: str) -> int:
        is_local = user_id.partition(":")[2] == self._server_name
        if is_local and await self._stores.accounts.get_user(user_id) is None:
            raise not_found("The user was not found.")
        return await self.store.add_report("user", reporter, target_user_id=user_id, reason=reason)
