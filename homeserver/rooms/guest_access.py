"""Guests leave a room whose `m.room.guest_access` stops saying `can_join`.

The spec's Guest Access module makes the server take its guests out when a room
revokes guest access. Guests are a local notion, so (as Synapse does) each guest
leaves by itself rather than being kicked by whoever changed the setting: no power
level is needed and the decision stays with the guest's own server. Runs on the
writer after the revoking event is durable, whether it came from a local client or a
peer; a revocation that is itself replaced by `can_join` before the work starts makes
no one leave.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from homeserver.background import BackgroundTasks
from homeserver.events import Event
from homeserver.storage import Stores

log = logging.getLogger(__name__)

GUEST_ACCESS = "m.room.guest_access"
# Rooms waiting for their guests to leave: one job per room at a time, and a bound on
# how many a flood of revocations (a hostile peer sending many) can queue.
MAX_PENDING_ROOMS = 1_000

Leave = Callable[[str, str], Awaitable[Any]]  # (room_id, user_id)


class GuestEviction:
    """An event listener (rooms.ports.EventListener)."""

    def __init__(self, stores: Stores, server_name: str, tasks: BackgroundTasks) -> None:
        self._stores = stores
        self._suffix = ":" + server_name
        self._tasks = tasks
        self._pending: set[str] = set()
        self._leave: Leave | None = None

    def bind(self, leave: Leave) -> None:
        """The membership service's leave, built after the persister this listens to."""
        self._leave = leave

    def on_new_event(self, event: Event, stream_ordering: int) -> None:
        if event.type != GUEST_ACCESS or event.state_key != "":
            return
        if event.content.get("guest_access") == "can_join" or self._leave is None:
            return
        room_id = event.room_id
        if room_id in self._pending or len(self._pending) >= MAX_PENDING_ROOMS:
            return
        self._pending.add(room_id)
        self._tasks.spawn(self._evict(room_id), name=f"guest-eviction {room_id}")

    async def _evict(self, room_id: str) -> None:
        try:
            if await self._guests_allowed(room_id):
                return
            members = await self._stores.current_state.get_members(room_id)
            for user_id, membership in sorted(members.items()):
                if membership not in ("join", "invite") or not user_id.endswith(self._suffix):
                    continue
                user = await self._stores.accounts.get_user(user_id)
                if user is None or not user.is_guest:
                    continue
                try:
                    assert self._leave is not None
                    await self._leave(room_id, user_id)
                except Exception:
                    log.exception("guest %s could not leave %s", user_id, room_id)
        finally:
            self._pending.discard(room_id)

    async def _guests_allowed(self, room_id: str) -> bool:
        event_id = await self._stores.current_state.get_current_state_event_id(
            room_id, GUEST_ACCESS, ""
        )
        event = None if event_id is None else await self._stores.events.get_event(event_id)
        return event is not None and event.content.get("guest_access") == "can_join"
