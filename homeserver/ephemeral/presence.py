"""Presence: online / unavailable / offline with status message and activity.

All known presence is held in memory (loaded at startup) with an update log ordered by
stream position, so a sync asks "who changed since X" without a query. Presence is
shown to users who share a room; updates of local users go to the servers of those
rooms as `m.presence` EDUs.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from dataclasses import replace
from typing import Any

from homeserver.storage.presence import PresenceRow, PresenceStore
from homeserver.sync.joined_rooms import JoinedRoomsCache
from homeserver.sync.notifier import Notifier

from .edus import EduOutbox

STATES = ("online", "unavailable", "offline")
# Activity within this window counts as "currently active".
ACTIVE_WINDOW_MS = 60_000
# Syncing with set_presence refreshes last_active at most this often (no write per sync).
REFRESH_MS = 60_000


def _now_ms() -> int:
    return int(time.time() * 1000)


class PresenceService:
    def __init__(
        self,
        store: PresenceStore,
        rooms: JoinedRoomsCache,
        notifier: Notifier,
        outbox: EduOutbox,
        server_name: str,
    ) -> None:
        self._store = store
        self._rooms = rooms
        self._notifier = notifier
        self._outbox = outbox
        self._server_name = server_name
        self._position = 0
        self._state: dict[str, PresenceRow] = {}
        self._log: OrderedDict[str, int] = OrderedDict()  # user -> position, oldest first
        self._lock = asyncio.Lock()

    @property
    def position(self) -> int:
        return self._position

    async def load(self) -> None:
        rows = sorted(await self._store.get_all(), key=lambda r: r.stream_id)
        for row in rows:
            self._state[row.user_id] = row
            self._log[row.user_id] = row.stream_id
        self._position = rows[-1].stream_id if rows else 0

    def get(self, user_id: str) -> PresenceRow | None:
        return self._state.get(user_id)

    def format(self, row: PresenceRow, now_ms: int | None = None) -> dict[str, Any]:
        """The presence content as clients see it (GET /presence and sync)."""
        now_ms = _now_ms() if now_ms is None else now_ms
        content: dict[str, Any] = {
            "presence": row.state,
            "last_active_ago": max(now_ms - row.last_active_ts, 0),
        }
        if row.status_msg is not None:
            content["status_msg"] = row.status_msg
        if row.state != "offline":
            content["currently_active"] = row.currently_active and (
                now_ms - row.last_active_ts < ACTIVE_WINDOW_MS
            )
        return content

    async def set_local(
        self, user_id: str, state: str, status_msg: str | None = None, *, keep_msg: bool = False
    ) -> None:
        """A local user's explicit presence (PUT /presence/.../status)."""
        old = self._state.get(user_id)
        if keep_msg and old is not None:
            status_msg = old.status_msg
        now = _now_ms()
        active = state == "online"
        last_active = now if active or old is None else old.last_active_ts
        await self._write(PresenceRow(user_id, state, status_msg, last_active, active, 0))
        await self._send_edu(user_id)

    async def touch(self, user_id: str, state: str) -> None:
        """A sync with `set_presence`: write only when the state changes or it is stale."""
        old = self._state.get(user_id)
        now = _now_ms()
        fresh = state != "online" or (old is not None and now - old.last_active_ts < REFRESH_MS)
        if old is not None and old.state == state and fresh:
            return
        if state == "offline" and old is None:
            return
        await self.set_local(user_id, state, keep_msg=True)

    async def set_remote(
        self,
        user_id: str,
        state: str,
        status_msg: str | None = None,
        last_active_ago: int | None = None,
        currently_active: bool = False,
    ) -> None:
        """An `m.presence` EDU entry from another server (origin checked by federation)."""
        if state not in STATES:
            return
        last_active = _now_ms() - max(int(last_active_ago or 0), 0)
        await self._write(
            PresenceRow(user_id, state, status_msg, last_active, bool(currently_active), 0)
        )

    async def _write(self, row: PresenceRow) -> None:
        async with self._lock:
            self._position += 1
            row = replace(row, stream_id=self._position)
            await self._store.upsert(row)
            self._state[row.user_id] = row
            self._log.pop(row.user_id, None)
            self._log[row.user_id] = row.stream_id
        rooms = await self._rooms.get(row.user_id)
        self._notifier.notify("presence", row.stream_id, users=[row.user_id], rooms=rooms)

    async def _send_edu(self, user_id: str) -> None:
        row = self._state[user_id]
        content = self.format(row)
        push = {"user_id": user_id, **content}
        push.setdefault("currently_active", False)
        hosts: set[str] = set()
        for room_id in await self._rooms.get(user_id):
            hosts |= await self._rooms.hosts_in_room(room_id)
        await self._outbox.send("m.presence", {"push": [push]}, hosts)

    def changed_since(self, since: int | None, upto: int) -> list[PresenceRow]:
        """Rows changed in (since, upto] (all rows for an initial sync), newest first."""
        out: list[PresenceRow] = []
        for user_id in reversed(self._log):
            pos = self._log[user_id]
            if since is not None and pos <= since:
                break
            if pos <= upto:
                out.append(self._state[user_id])
        return out
