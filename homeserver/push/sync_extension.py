"""Adds `unread_notifications` (and, when asked, `unread_thread_notifications`) to each
joined room of a /sync response."""

from __future__ import annotations

from typing import Any

from homeserver.storage.push import PushStore
from homeserver.sync.extensions import SyncContext

from .actions import MAIN_THREAD, ActionGenerator


class UnreadCountsExtension:
    def __init__(self, generator: ActionGenerator, store: PushStore) -> None:
        self._generator = generator
        self._store = store

    async def top_level(self, ctx: SyncContext, response: dict[str, Any]) -> None:
        return None

    async def per_room(
        self, ctx: SyncContext, room_id: str, room: dict[str, Any], membership: str
    ) -> None:
        if membership != "join":
            return
        await self._generator.wait_until(ctx.now.events)
        counts = await self._store.get_current_unread_counts(ctx.user_id, room_id)
        if ctx.unread_thread_notifications:
            main = counts.get(MAIN_THREAD)
            room["unread_notifications"] = {
                "notification_count": main.notifications if main else 0,
                "highlight_count": main.highlights if main else 0,
            }
            threads = {
                tid: {"notification_count": c.notifications, "highlight_count": c.highlights}
                for tid, c in counts.items()
                if tid != MAIN_THREAD
            }
            if threads:
                room["unread_thread_notifications"] = threads
            return
        room["unread_notifications"] = {
            "notification_count": sum(c.notifications for c in counts.values()),
            "highlight_count": sum(c.highlights for c in counts.values()),
        }
