"""How other areas add their parts to a /sync response without sync importing them.

E2EE adds `to_device`, `device_lists` and key counts; push adds per-room
`unread_notifications`. The composition module hands the sync builder every area's
`SyncExtension`; the builder calls each one for every response.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from .tokens import StreamToken


@dataclass(frozen=True)
class SyncContext:
    user_id: str
    device_id: str | None
    since: StreamToken | None  # None for an initial sync
    now: StreamToken  # the token this response ends at (its next_batch)
    full_state: bool
    joined_room_ids: frozenset[str]
    # The filter's room.timeline.unread_thread_notifications: per-thread unread counts.
    unread_thread_notifications: bool = False


class SyncExtension(Protocol):
    async def top_level(self, ctx: SyncContext, response: dict[str, Any]) -> None:
        """Add or fill top-level sections of the response (e.g. `to_device`)."""

    async def per_room(
        self, ctx: SyncContext, room_id: str, room: dict[str, Any], membership: str
    ) -> None:
        """Add to one room's section (e.g. `unread_notifications`)."""
