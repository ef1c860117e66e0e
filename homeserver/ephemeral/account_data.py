"""Account data (global and per room), tags and the ignored-users list.

One `account_data` stream position per write, allocated by the store inside its write
transaction, so positions commit in order (a sync never skips a write that commits
late) and any process of a deployment may write (`stream_writers: {account_data:
[...]}`). The ignored-user list
is cached per user because sync consults it on every response.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from homeserver.storage.account_data import AccountDataEntry, AccountDataStore
from homeserver.storage.cache import LruCache
from homeserver.sync.notifier import Notifier

TAGS_TYPE = "m.tag"
IGNORED_USERS_TYPE = "m.ignored_user_list"
INVITE_PERMISSION_TYPE = "m.invite_permission_config"
FULLY_READ_TYPE = "m.fully_read"


class AccountDataService:
    def __init__(self, store: AccountDataStore, notifier: Notifier, position: int) -> None:
        self._store = store
        self._notifier = notifier
        self._position = position
        self._lock = asyncio.Lock()
        self._ignored: LruCache[str, frozenset[str]] = LruCache(50_000, "ignored_users")
        self._blocking: LruCache[str, bool] = LruCache(50_000, "invite_permission")

    @property
    def position(self) -> int:
        return self._position

    async def put(
        self, user_id: str, data_type: str, content: dict[str, Any], room_id: str = ""
    ) -> int:
        """Store one entry (no checks on who may write which type: callers do that)."""
        async with self._lock:
            pos = await self._store.put(user_id, room_id, data_type, content)
            self._written(user_id, data_type, room_id, pos)
        return pos

    async def modify(
        self,
        user_id: str,
        data_type: str,
        change: Callable[[dict[str, Any] | None], dict[str, Any] | None],
        room_id: str = "",
    ) -> None:
        """Change one entry the server keeps up to date for the user (m.direct when an
        invite is auto-accepted): read and written in one store transaction, so a
        client's write at the same moment is not lost. `change` returns None to leave
        the entry as it is."""
        async with self._lock:
            pos = await self._store.modify(user_id, room_id, data_type, change)
            if pos is not None:
                self._written(user_id, data_type, room_id, pos)

    def _written(self, user_id: str, data_type: str, room_id: str, pos: int) -> None:
        self._position = max(self._position, pos)
        if data_type == IGNORED_USERS_TYPE and not room_id:
            self._ignored.invalidate(user_id)
        if data_type == INVITE_PERMISSION_TYPE and not room_id:
            self._blocking.invalidate(user_id)
        self._notifier.notify("account_data", pos, users=[user_id])

    async def forget_user(self, user_id: str) -> None:
        """Delete the user's account data, room tags included (deactivation, as Synapse)."""
        async with self._lock:
            await self._store.delete_user(user_id)
        self._ignored.invalidate(user_id)
        self._blocking.invalidate(user_id)

    async def get(self, user_id: str, data_type: str, room_id: str = "") -> dict[str, Any] | None:
        return await self._store.get(user_id, room_id, data_type)

    async def changes_since(self, user_id: str, since: int) -> list[AccountDataEntry]:
        return await self._store.get_since(user_id, since)

    # -- tags -------------------------------------------------------------------------

    async def get_tags(self, user_id: str, room_id: str) -> dict[str, Any]:
        content = await self._store.get(user_id, room_id, TAGS_TYPE) or {}
        tags = content.get("tags")
        return tags if isinstance(tags, dict) else {}

    async def set_tag(self, user_id: str, room_id: str, tag: str, body: dict[str, Any]) -> None:
        await self._change_tags(user_id, room_id, lambda tags: {**tags, tag: body})

    async def remove_tag(self, user_id: str, room_id: str, tag: str) -> None:
        await self._change_tags(
            user_id,
            room_id,
            lambda tags: {k: v for k, v in tags.items() if k != tag} if tag in tags else None,
        )

    async def _change_tags(
        self,
        user_id: str,
        room_id: str,
        change: Callable[[dict[str, Any]], dict[str, Any] | None],
    ) -> None:
        """Read and write the room's `m.tag` entry in one store transaction: two tag
        changes of one room at once (two devices, or two processes of a deployment)
        both land instead of the later write dropping the earlier tag."""

        def on_content(content: dict[str, Any] | None) -> dict[str, Any] | None:
            tags = (content or {}).get("tags")
            changed = change(dict(tags) if isinstance(tags, dict) else {})
            return None if changed is None else {"tags": changed}

        async with self._lock:
            pos = await self._store.modify(user_id, room_id, TAGS_TYPE, on_content)
            if pos is not None:
                self._written(user_id, TAGS_TYPE, room_id, pos)

    # -- invite permission (v1.18) ----------------------------------------------------

    async def invites_blocked(self, user_id: str) -> bool:
        """Whether the user's `m.invite_permission_config` says `default_action: block`
        (any other or missing value: invites as normal)."""
        cached = self._blocking.get(user_id)
        if cached is not None:
            return cached
        generation = self._blocking.generation()
        content = await self._store.get(user_id, "", INVITE_PERMISSION_TYPE) or {}
        blocked = content.get("default_action") == "block"
        self._blocking.set_if_current(user_id, blocked, generation)
        return blocked

    # -- ignored users ----------------------------------------------------------------

    async def ignored_users(self, user_id: str) -> frozenset[str]:
        cached = self._ignored.get(user_id)
        if cached is not None:
            return cached
        generation = self._ignored.generation()
        content = await self._store.get(user_id, "", IGNORED_USERS_TYPE) or {}
        ignored = content.get("ignored_users")
        users = (
            frozenset(k for k in ignored if isinstance(k, str))
            if isinstance(ignored, dict)
            else frozenset()
        )
        self._ignored.set_if_current(user_id, users, generation)
        return users
