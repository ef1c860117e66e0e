"""Synapse's `forget_rooms_on_leave`: a room a user leaves, is kicked or banned from is
forgotten for them at once, as if they had called /forget: it leaves their syncs and
its history is closed to them (a privacy choice of the operator: what a user left
behind is not kept within their reach).

An event listener on the main (one per deployment): it hears every membership event
of the room graph, whoever sent it (a kick by a remote moderator too). A leave the
client asked for where we are in no room graph (rejecting another server's invite) is
forgotten by the leave handler itself. Bound: at most MAX_PENDING forgets waiting.
"""

from __future__ import annotations

import logging

from homeserver.background import BackgroundTasks
from homeserver.config import Config
from homeserver.events import Event
from homeserver.rooms.ports import EventListener
from homeserver.storage.room_directory import RoomReadStore

log = logging.getLogger(__name__)

MAX_PENDING = 10_000


class ForgetOnLeave:
    """An event listener (rooms.ports.EventListener)."""

    def __init__(self, read_store: RoomReadStore, server_name: str, tasks: BackgroundTasks) -> None:
        self._read = read_store
        self._suffix = ":" + server_name
        self._tasks = tasks
        self._pending = 0

    def on_new_event(self, event: Event, stream_ordering: int) -> None:
        if stream_ordering <= 0 or event.type != "m.room.member":
            return  # history (backfill) is not a leave happening now
        user_id = event.state_key
        if not user_id or not user_id.endswith(self._suffix):
            return
        if event.content.get("membership") not in ("leave", "ban"):
            return
        if self._pending >= MAX_PENDING:
            log.warning("forget_rooms_on_leave is behind: %s keeps %s", user_id, event.room_id)
            return
        try:
            self._tasks.spawn(self._forget(user_id, event.room_id), name="forget-on-leave")
        except RuntimeError:  # shutting down: the leave stands, the room is not forgotten
            return
        self._pending += 1

    async def _forget(self, user_id: str, room_id: str) -> None:
        try:
            await self._read.forget_room(user_id, room_id)
        except Exception:
            log.exception("could not forget %s for %s", room_id, user_id)
        finally:
            self._pending -= 1


def forget_on_leave(
    config: Config, read_store: RoomReadStore, tasks: BackgroundTasks
) -> list[EventListener]:
    """The listener when the operator asked for it (composition's singletons)."""
    if not config.forget_rooms_on_leave:
        return []
    return [ForgetOnLeave(read_store, config.server_name, tasks)]
