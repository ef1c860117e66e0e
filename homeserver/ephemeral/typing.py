"""Typing notifications: in memory only, each with a timeout, on the `typing` stream.

Every change (start, stop, expiry) moves the stream and records the position per room,
so sync includes a room's `m.typing` only when it changed after the client's token.

Positions are not stored, yet must never go back across a restart: in a deployment the
client readers keep the positions they replicated (and their clients' tokens have them),
so a restarted main numbering from 0 would have every later change ignored as older
than the token. Each position is therefore at least the wall clock in microseconds (and
one more than the last): a restart starts above whatever the previous run reached,
unless it sustained more than a million changes a second. (About 1.8e15: still exact
in a JavaScript client's number.)
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from homeserver.errors import forbidden
from homeserver.moderation import Moderation
from homeserver.storage import Stores
from homeserver.sync.notifier import Notifier

from .edus import EduOutbox

MAX_TIMEOUT_MS = 120_000
REMOTE_TIMEOUT_MS = 30_000


class TypingService:
    def __init__(
        self,
        stores: Stores,
        notifier: Notifier,
        outbox: EduOutbox,
        server_name: str,
        moderation: Moderation | None = None,
    ) -> None:
        self._stores = stores
        self._moderation = moderation
        self._notifier = notifier
        self._outbox = outbox
        self._server_name = server_name
        self._position = notifier.current.typing
        # room -> user -> expiry timer (None: replicated whole-room state, whose timers
        # another process keeps)
        self._typing: dict[str, dict[str, asyncio.TimerHandle | None]] = {}
        self._room_pos: dict[str, int] = {}
        # (room, user) entries another process set (apply_replicated): their expiry here
        # is not announced again (that process announces its own).
        self._from_elsewhere: set[tuple[str, str]] = set()
        # The change the last announcement was made for, (room, user, typing,
        # timeout_ms): the replication publisher sends it with the announcement.
        self.last_change: tuple[str, str, bool, int] | None = None

    @property
    def position(self) -> int:
        return self._position

    def typing_users(self, room_id: str) -> list[str]:
        return sorted(self._typing.get(room_id, {}))

    def room_position(self, room_id: str) -> int:
        return self._room_pos.get(room_id, 0)

    def event_for(self, room_id: str) -> dict[str, Any]:
        return {"type": "m.typing", "content": {"user_ids": self.typing_users(room_id)}}

    async def set_typing(
        self, room_id: str, user_id: str, typing: bool, timeout_ms: int | None = None
    ) -> None:
        """A local user starts/stops typing (403 unless joined)."""
        membership = await self._stores.current_state.get_membership(room_id, user_id)
        if membership != "join":
            raise forbidden("You are not in this room")
        if self._moderation is not None and self._moderation.is_shadow_banned(user_id):
            return  # as Synapse: a shadow-banned user's typing goes nowhere
        timeout = min(max(timeout_ms or 30_000, 0), MAX_TIMEOUT_MS)
        self._apply(room_id, user_id, typing, timeout)
        hosts = await self._stores.current_state.get_joined_hosts(room_id)
        await self._outbox.send(
            "m.typing", {"room_id": room_id, "user_id": user_id, "typing": typing}, hosts
        )

    def set_remote(
        self, room_id: str, user_id: str, typing: bool, timeout_ms: int = REMOTE_TIMEOUT_MS
    ) -> None:
        """A typing EDU from another server (its origin is checked by federation)."""
        self._apply(room_id, user_id, typing, min(timeout_ms, MAX_TIMEOUT_MS))

    def apply_replicated(self, room_id: str, user_id: str, typing: bool, timeout_ms: int) -> None:
        """A change another process of the deployment made (a typing writer,
        `stream_writers: {typing: [...]}`), applied with a timer of our own, so the
        entry ends here on time whatever happens to that process."""
        if typing:
            self._from_elsewhere.add((room_id, user_id))
        self._apply(room_id, user_id, typing, min(max(timeout_ms, 0), MAX_TIMEOUT_MS))

    def _apply(self, room_id: str, user_id: str, typing: bool, timeout_ms: int) -> None:
        if not typing:
            self._from_elsewhere.discard((room_id, user_id))
        room = self._typing.setdefault(room_id, {})
        old = room.pop(user_id, None)
        if old is not None:
            old.cancel()
        if typing:
            loop = asyncio.get_running_loop()
            room[user_id] = loop.call_later(
                timeout_ms / 1000, self._expire, room_id, user_id, time.monotonic()
            )
        elif old is None:
            if not room:
                del self._typing[room_id]
            return  # was not typing: nothing changes
        if not room:
            self._typing.pop(room_id, None)
        self.last_change = (room_id, user_id, typing, timeout_ms if typing else 0)
        self._bump(room_id)

    def _expire(self, room_id: str, user_id: str, _started: float) -> None:
        room = self._typing.get(room_id)
        if room is None or user_id not in room:
            return
        del room[user_id]
        if not room:
            del self._typing[room_id]
        self.last_change = (room_id, user_id, False, 0)
        if (room_id, user_id) in self._from_elsewhere:
            # The process that set it announces its own expiry; ours stays here (an
            # announcement of it could end a renewal that is still on its way to us).
            self._from_elsewhere.discard((room_id, user_id))
            replaying, self._notifier.replaying = self._notifier.replaying, True
            try:
                self._bump(room_id)
            finally:
                self._notifier.replaying = replaying
        else:
            self._bump(room_id)

    def _bump(self, room_id: str) -> None:
        self._position = max(self._position + 1, int(time.time() * 1_000_000))
        self._room_pos[room_id] = self._position
        self._notifier.notify("typing", self._position, rooms=[room_id])

    def replicate(self, room_id: str, users: list[str], position: int) -> None:
        """A worker: who types in a room now, as the main process (which keeps the
        timers) announced it."""
        if users:
            self._typing[room_id] = dict.fromkeys(users)
        else:
            self._typing.pop(room_id, None)
        self._position = max(self._position, position)
        self._room_pos[room_id] = position
        self._notifier.notify("typing", position, rooms=[room_id])

    def forget_replicated(self) -> None:
        """A worker resyncing (the main restarted, or messages were missed): who types
        where, as replicated, may be gone from the main's memory, and no timer here
        would ever end it. Drop it, and give each such room's clients the empty list.
        The main's own entries (with their timers) stay."""
        rooms = [
            room
            for room, users in self._typing.items()
            if users and all(handle is None for handle in users.values())
        ]
        for room in rooms:
            del self._typing[room]
            self._bump(room)

    def close(self) -> None:
        for room in self._typing.values():
            for handle in room.values():
                if handle is not None:
                    handle.cancel()
        self._typing.clear()
        self._from_elsewhere.clear()
