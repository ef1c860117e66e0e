"""PushStore's pushers (a mixin: `db` and the `_pushers` cache are the store's).

Read for every notification of every member of a room (push delivery), so cached per
user (`pusher_cache`); changed only by the writes below, which drop what they change.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ._util import dump_json, load_json, now_ms
from .cache import LruCache
from .database import Database


@dataclass(frozen=True)
class StoredPusher:
    user_id: str
    app_id: str
    pushkey: str
    kind: str
    app_display_name: str
    device_display_name: str
    profile_tag: str | None
    lang: str
    data: dict[str, Any]
    device_id: str | None
    created_ts: int = 0
    enabled: bool = True  # MSC3881: switched off, it is kept but gets nothing


def pusher_cache() -> LruCache[str, list[StoredPusher]]:
    """user -> their pushers."""
    return LruCache(50_000, name="pushers")


class PusherRows:
    db: Database
    _pushers: LruCache[str, list[StoredPusher]]

    async def get_pushers(self, user_id: str) -> list[StoredPusher]:
        cached = self._pushers.get(user_id)
        if cached is not None:
            return list(cached)
        generation = self._pushers.generation()
        rows = await self.db.fetch(
            "SELECT user_id, app_id, pushkey, kind, app_display_name, device_display_name,"
            " profile_tag, lang, data, device_id, created_ts, enabled FROM pushers"
            " WHERE user_id = $1 ORDER BY created_ts, app_id, pushkey",
            user_id,
        )
        found = [
            StoredPusher(
                r[0],
                r[1],
                r[2],
                r[3],
                r[4],
                r[5],
                r[6],
                r[7],
                load_json(r[8]),
                r[9],
                int(r[10]),
                bool(r[11]),
            )
            for r in rows
        ]
        self._pushers.set_if_current(user_id, found, generation)
        return list(found)

    async def set_pusher(self, pusher: StoredPusher, *, append: bool) -> None:
        """Create or update; without `append`, other users' pushers with the same
        app_id and pushkey are removed (the spec's default)."""
        self._pushers.clear()  # other users may lose theirs: rare enough to drop all
        async with self.db.transaction() as conn:
            if not append:
                await conn.execute(
                    "DELETE FROM pushers WHERE app_id = $1 AND pushkey = $2 AND user_id <> $3",
                    pusher.app_id,
                    pusher.pushkey,
                    pusher.user_id,
                )
            await conn.execute(
                "INSERT INTO pushers (user_id, app_id, pushkey, kind, app_display_name,"
                " device_display_name, profile_tag, lang, data, device_id, created_ts, enabled)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
                " ON CONFLICT (app_id, pushkey, user_id) DO UPDATE SET kind = excluded.kind,"
                " app_display_name = excluded.app_display_name,"
                " device_display_name = excluded.device_display_name,"
                " profile_tag = excluded.profile_tag, lang = excluded.lang,"
                " data = excluded.data, device_id = excluded.device_id,"
                " enabled = excluded.enabled",
                pusher.user_id,
                pusher.app_id,
                pusher.pushkey,
                pusher.kind,
                pusher.app_display_name,
                pusher.device_display_name,
                pusher.profile_tag,
                pusher.lang,
                dump_json(pusher.data),
                pusher.device_id,
                now_ms(),
                pusher.enabled,
            )
        self._pushers.clear()  # and after: a read that raced the write cached the old rows

    async def delete_pushers_of(self, user_id: str) -> int:
        """Every pusher of the user (a deactivated account's phones get nothing more)."""
        self._pushers.invalidate(user_id)
        deleted = await self.db.execute("DELETE FROM pushers WHERE user_id = $1", user_id)
        self._pushers.invalidate(user_id)
        return deleted

    async def delete_device_pushers(self, user_id: str, device_id: str) -> None:
        """The pushers a device set up, when it is deleted (a logout): a phone that
        logged out must not keep showing the user's messages on its lock screen."""
        self._pushers.invalidate(user_id)
        await self.db.execute(
            "DELETE FROM pushers WHERE user_id = $1 AND device_id = $2", user_id, device_id
        )
        self._pushers.invalidate(user_id)

    async def delete_pusher(self, user_id: str, app_id: str, pushkey: str) -> bool:
        self._pushers.invalidate(user_id)
        deleted = await self.db.execute(
            "DELETE FROM pushers WHERE user_id = $1 AND app_id = $2 AND pushkey = $3",
            user_id,
            app_id,
            pushkey,
        )
        self._pushers.invalidate(user_id)
        return deleted > 0

    # -- push actions and read positions ------------------------------------------------
