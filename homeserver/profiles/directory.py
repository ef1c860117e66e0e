"""UserDirectory: /user_directory/search, with an index kept fresh from new events.

Visibility follows Synapse's default (`search_all_users: false`): the requester finds
users who share a joined room with them, and users joined to rooms whose join rule is
`public` or whose history is `world_readable`; with `search_all_users` every local
user too (a company server's colleagues). The room flags and remote users' display
names are indexed by an event listener; the listener only queues work (it must not
block the persister) and a flush runs right after, and before every search, so a search
never misses an event that was already acknowledged. On start, rooms whose state moved
on while we were down are re-indexed (`reconcile`).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from homeserver.events import Event
from homeserver.storage import Stores
from homeserver.storage.user_directory import UserDirectoryStore

log = logging.getLogger(__name__)

VISIBILITY_TYPES = ("m.room.join_rules", "m.room.history_visibility")
DEFAULT_LIMIT = 10
MAX_LIMIT = 100
# Rows fetched before ranking; beyond this the result is "limited" anyway.
MAX_CANDIDATES = 500


@dataclass(frozen=True)
class SearchResult:
    results: list[dict[str, Any]]
    limited: bool


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _rank(term: str, user_id: str, displayname: str | None, avatar_url: str | None) -> tuple:
    """Lower sorts first: exact > prefix > word-prefix > substring, then with profile."""
    term = term.lower()
    localpart = user_id[1:].partition(":")[0].lower()
    name = (displayname or "").lower()
    if term in (localpart, name):
        quality = 0
    elif localpart.startswith(term) or name.startswith(term):
        quality = 1
    elif any(word.startswith(term) for word in name.split()):
        quality = 2
    else:
        quality = 3
    return (quality, displayname is None, avatar_url is None, user_id)


class UserDirectory:
    def __init__(
        self,
        stores: Stores,
        store: UserDirectoryStore,
        server_name: str,
        *,
        enabled: bool = True,
        search_all_users: bool = False,
    ) -> None:
        self._enabled = enabled
        self._search_all_users = search_all_users
        self._stores = stores
        self._store = store
        self._server_name = server_name
        self._pending_rooms: set[str] = set()
        self._pending_remote: dict[str, tuple[str | None, str | None]] = {}
        self._flush_task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    # -- the index ----------------------------------------------------------------------

    def on_new_event(self, event: Event, stream_ordering: int) -> None:
        """Persister listener: queue what this event changes in the directory."""
        if event.type in VISIBILITY_TYPES and event.state_key == "":
            self._pending_rooms.add(event.room_id)
        elif (
            event.type == "m.room.member"
            and event.state_key
            and event.state_key.partition(":")[2] != self._server_name
            and event.content.get("membership") == "join"
        ):
            self._pending_remote[event.state_key] = (
                _str_or_none(event.content.get("displayname")),
                _str_or_none(event.content.get("avatar_url")),
            )
        else:
            return
        if self._flush_task is None or self._flush_task.done():
            self._flush_task = asyncio.get_running_loop().create_task(self._flush_logged())

    async def _flush_logged(self) -> None:
        try:
            await self.flush()
        except Exception:
            log.exception("user directory update failed")

    async def flush(self) -> None:
        """Apply every queued change (serialised, so two flushes never interleave)."""
        async with self._lock:
            while self._pending_rooms or self._pending_remote:
                rooms, self._pending_rooms = self._pending_rooms, set()
                remote, self._pending_remote = self._pending_remote, {}
                for room_id in sorted(rooms):
                    await self._index_room(room_id)
                for user_id, (name, avatar) in remote.items():
                    await self._store.set_remote_profile(user_id, name, avatar)

    async def _index_room(self, room_id: str) -> None:
        state = await self._stores.current_state.get_current_state_ids(room_id, VISIBILITY_TYPES)
        jr_id = state.get(("m.room.join_rules", ""))
        hv_id = state.get(("m.room.history_visibility", ""))
        await self._index_room_from(room_id, jr_id, hv_id)

    async def _index_room_from(self, room_id: str, jr_id: str | None, hv_id: str | None) -> None:
        events = await self._stores.events.get_events([i for i in (jr_id, hv_id) if i])
        jr = events.get(jr_id) if jr_id else None
        hv = events.get(hv_id) if hv_id else None
        is_public = (jr is not None and jr.content.get("join_rule") == "public") or (
            hv is not None and hv.content.get("history_visibility") == "world_readable"
        )
        await self._store.set_room_visibility(room_id, jr_id, hv_id, is_public)

    async def reconcile(self) -> int:
        """Re-index rooms whose visibility events changed since they were indexed."""
        stale = await self._store.stale_rooms()
        for room in stale:
            await self._index_room_from(
                room.room_id, room.join_rules_event_id, room.history_visibility_event_id
            )
        return len(stale)

    async def close(self) -> None:
        if self._flush_task is not None:
            await asyncio.gather(self._flush_task, return_exceptions=True)

    # -- searching ----------------------------------------------------------------------

    async def search(self, requester: str, term: str, limit: int) -> SearchResult:
        """Ranked matches for `term` among the users visible to `requester`."""
        await self.flush()
        term = term.strip()
        if not term or not self._enabled:
            return SearchResult([], False)
        rows = await self._store.search(
            requester, term, MAX_CANDIDATES, all_local=self._search_all_users
        )
        rows.sort(key=lambda r: _rank(term, r.user_id, r.displayname, r.avatar_url))
        results = []
        for row in rows[:limit]:
            item: dict[str, Any] = {"user_id": row.user_id}
            if row.displayname is not None:
                item["display_name"] = row.displayname
            if row.avatar_url is not None:
                item["avatar_url"] = row.avatar_url
            results.append(item)
        return SearchResult(results, len(rows) > limit)
