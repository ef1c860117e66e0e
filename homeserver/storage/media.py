"""MediaStore: metadata of local uploads, cached remote media and thumbnails (0012).

The bytes are files under media_store_path (homeserver.media.files); rows here say what
a file is, who uploaded it, when it was last read, and whether an admin quarantined it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ._util import now_ms
from .database import Database, Row

LOCAL = ""  # the origin of local media in media_thumbnails


@dataclass(frozen=True)
class LocalMedia:
    media_id: str
    user_id: str
    created_ts: int
    uploaded_ts: int | None  # None: reserved by /create, bytes not uploaded yet
    unused_expires_ts: int | None
    content_type: str | None
    upload_name: str | None
    media_length: int | None
    sha256: str | None
    last_access_ts: int | None
    quarantined_by: str | None
    safe_from_quarantine: bool
    authenticated: bool


@dataclass(frozen=True)
class RemoteMedia:
    origin: str
    media_id: str
    filesystem_id: str
    content_type: str
    upload_name: str | None
    media_length: int
    created_ts: int
    last_access_ts: int
    quarantined_by: str | None
    authenticated: bool


@dataclass(frozen=True)
class Thumbnail:
    width: int
    height: int
    method: str
    content_type: str
    media_length: int


_LOCAL_COLUMNS = (
    "media_id, user_id, created_ts, uploaded_ts, unused_expires_ts, content_type,"
    " upload_name, media_length, sha256, last_access_ts, quarantined_by,"
    " safe_from_quarantine, authenticated"
)
_REMOTE_COLUMNS = (
    "origin, media_id, filesystem_id, content_type, upload_name, media_length,"
    " created_ts, last_access_ts, quarantined_by, authenticated"
)

# Synapse's order_by values of the admin media list -> column.
LOCAL_ORDER_COLUMNS = {
    "media_id": "media_id",
    "upload_name": "upload_name",
    "created_ts": "created_ts",
    "last_access_ts": "last_access_ts",
    "media_length": "media_length",
    "media_type": "content_type",
    "quarantined_by": "quarantined_by",
    "safe_from_quarantine": "safe_from_quarantine",
}


def _local(row: Row) -> LocalMedia:
    return LocalMedia(
        media_id=row[0],
        user_id=row[1],
        created_ts=int(row[2]),
        uploaded_ts=None if row[3] is None else int(row[3]),
        unused_expires_ts=None if row[4] is None else int(row[4]),
        content_type=row[5],
        upload_name=row[6],
        media_length=None if row[7] is None else int(row[7]),
        sha256=row[8],
        last_access_ts=None if row[9] is None else int(row[9]),
        quarantined_by=row[10],
        safe_from_quarantine=bool(row[11]),
        authenticated=bool(row[12]),
    )


def _remote(row: Row) -> RemoteMedia:
    return RemoteMedia(
        origin=row[0],
        media_id=row[1],
        filesystem_id=row[2],
        content_type=row[3],
        upload_name=row[4],
        media_length=int(row[5]),
        created_ts=int(row[6]),
        last_access_ts=int(row[7]),
        quarantined_by=row[8],
        authenticated=bool(row[9]),
    )


class MediaStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # -- local media ---------------------------------------------------------------------

    async def reserve(
        self, media_id: str, user_id: str, expires_ts: int, authenticated: bool
    ) -> None:
        """A media ID handed out by POST /create, with no bytes yet."""
        await self.db.execute(
            "INSERT INTO local_media (media_id, user_id, created_ts, unused_expires_ts,"
            " authenticated) VALUES ($1, $2, $3, $4, $5)",
            media_id,
            user_id,
            now_ms(),
            expires_ts,
            authenticated,
        )

    async def count_pending(self, user_id: str, now: int) -> int:
        """Reserved IDs of `user_id` that are neither uploaded nor expired."""
        return int(
            await self.db.fetchval(
                "SELECT COUNT(*) FROM local_media WHERE user_id = $1 AND uploaded_ts IS NULL"
                " AND unused_expires_ts > $2",
                user_id,
                now,
            )
        )

    async def insert_uploaded(
        self,
        media_id: str,
        user_id: str,
        content_type: str,
        upload_name: str | None,
        length: int,
        sha256: str,
        authenticated: bool,
        quarantined_by: str | None = None,
    ) -> None:
        now = now_ms()
        await self.db.execute(
            "INSERT INTO local_media (media_id, user_id, created_ts, uploaded_ts, content_type,"
            " upload_name, media_length, sha256, last_access_ts, authenticated, quarantined_by)"
            " VALUES ($1, $2, $3, $3, $4, $5, $6, $7, $3, $8, $9)",
            media_id,
            user_id,
            now,
            content_type,
            upload_name,
            length,
            sha256,
            authenticated,
            quarantined_by,
        )

    async def complete_upload(
        self,
        media_id: str,
        content_type: str,
        upload_name: str | None,
        length: int,
        sha256: str,
        quarantined_by: str | None = None,
    ) -> bool:
        """Fill in a reserved ID; False if it was already uploaded (no overwriting)."""
        now = now_ms()
        changed = await self.db.execute(
            "UPDATE local_media SET uploaded_ts = $2, content_type = $3, upload_name = $4,"
            " media_length = $5, sha256 = $6, last_access_ts = $2, unused_expires_ts = NULL,"
            " quarantined_by = $7 WHERE media_id = $1 AND uploaded_ts IS NULL",
            media_id,
            now,
            content_type,
            upload_name,
            length,
            sha256,
            quarantined_by,
        )
        return changed > 0

    async def uploaded_bytes_since(self, user_id: str, since_ts: int) -> int:
        """What `user_id` uploaded since `since_ts` (media_upload_limits)."""
        total = await self.db.fetchval(
            "SELECT COALESCE(SUM(media_length), 0) FROM local_media WHERE user_id = $1"
            " AND created_ts >= $2",
            user_id,
            since_ts,
        )
        return int(total)

    async def is_quarantined_hash(self, sha256: str) -> bool:
        row = await self.db.fetchrow(
            "SELECT 1 FROM local_media WHERE sha256 = $1 AND quarantined_by IS NOT NULL LIMIT 1",
            sha256,
        )
        return row is not None

    async def get_local(self, media_id: str) -> LocalMedia | None:
        row = await self.db.fetchrow(
            f"SELECT {_LOCAL_COLUMNS} FROM local_media WHERE media_id = $1", media_id
        )
        return None if row is None else _local(row)

    async def expire_unused(self, now: int) -> int:
        """Forget reserved IDs whose upload never came."""
        return await self.db.execute(
            "DELETE FROM local_media WHERE uploaded_ts IS NULL AND unused_expires_ts <= $1", now
        )

    async def touch_local(self, media_ids: Sequence[str], ts: int) -> None:
        await self.db.executemany(
            "UPDATE local_media SET last_access_ts = $2 WHERE media_id = $1",
            [(m, ts) for m in media_ids],
        )

    async def delete_local(self, media_id: str) -> None:
        async with self.db.transaction() as conn:
            await conn.execute("DELETE FROM local_media WHERE media_id = $1", media_id)
            await conn.execute(
                "DELETE FROM media_thumbnails WHERE origin = $1 AND media_id = $2",
                LOCAL,
                media_id,
            )

    async def local_media_of_user(
        self, user_id: str, *, start: int, limit: int, order_by: str, descending: bool
    ) -> tuple[list[LocalMedia], int]:
        """One page of a user's uploads (admin API) and how many there are in all."""
        column = LOCAL_ORDER_COLUMNS.get(order_by, "created_ts")
        direction = "DESC" if descending else "ASC"
        rows = await self.db.fetch(
            f"SELECT {_LOCAL_COLUMNS} FROM local_media WHERE user_id = $1"
            f" ORDER BY {column} {direction}, media_id {direction} LIMIT $2 OFFSET $3",
            user_id,
            limit,
            start,
        )
        total = await self.db.fetchval(
            "SELECT COUNT(*) FROM local_media WHERE user_id = $1", user_id
        )
        return [_local(r) for r in rows], int(total)

    async def local_media_ids_of_user(self, user_id: str) -> list[str]:
        rows = await self.db.fetch("SELECT media_id FROM local_media WHERE user_id = $1", user_id)
        return [r[0] for r in rows]

    async def local_media_before(
        self, before_ts: int, size_gt: int, keep_ids: frozenset[str], limit: int
    ) -> list[str]:
        """Uploaded local media last read before `before_ts` and larger than `size_gt`,
        not protected from quarantine (Synapse's delete-by-date admin API)."""
        rows = await self.db.fetch(
            "SELECT media_id FROM local_media WHERE uploaded_ts IS NOT NULL"
            " AND COALESCE(last_access_ts, created_ts) < $1 AND media_length > $2"
            " AND NOT safe_from_quarantine ORDER BY media_id LIMIT $3",
            before_ts,
            size_gt,
            limit + len(keep_ids),
        )
        return [r[0] for r in rows if r[0] not in keep_ids][:limit]

    async def set_local_quarantine(self, media_ids: Sequence[str], by: str | None) -> int:
        """Quarantine (by = admin's user ID) or release (None); protected media is
        never quarantined."""
        changed = 0
        for media_id in media_ids:
            if by is None:
                changed += await self.db.execute(
                    "UPDATE local_media SET quarantined_by = NULL WHERE media_id = $1", media_id
                )
            else:
                changed += await self.db.execute(
                    "UPDATE local_media SET quarantined_by = $2 WHERE media_id = $1"
                    " AND NOT safe_from_quarantine",
                    media_id,
                    by,
                )
        return changed

    async def set_protected(self, media_id: str, protected: bool) -> bool:
        changed = await self.db.execute(
            "UPDATE local_media SET safe_from_quarantine = $2 WHERE media_id = $1",
            media_id,
            protected,
        )
        return changed > 0

    async def avatar_media_ids(self, server_name: str) -> frozenset[str]:
        """Our media used as user avatars (kept by the delete-by-date admin API)."""
        prefix = f"mxc://{server_name}/"
        rows = await self.db.fetch(
            "SELECT avatar_url FROM profiles WHERE avatar_url LIKE $1", prefix + "%"
        )
        return frozenset(r[0][len(prefix) :] for r in rows if isinstance(r[0], str))

    # -- remote media --------------------------------------------------------------------

    async def get_remote(self, origin: str, media_id: str) -> RemoteMedia | None:
        row = await self.db.fetchrow(
            f"SELECT {_REMOTE_COLUMNS} FROM remote_media WHERE origin = $1 AND media_id = $2",
            origin,
            media_id,
        )
        return None if row is None else _remote(row)

    async def insert_remote(self, media: RemoteMedia) -> None:
        await self.db.execute(
            f"INSERT INTO remote_media ({_REMOTE_COLUMNS}) VALUES"
            " ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
            " ON CONFLICT (origin, media_id) DO NOTHING",
            media.origin,
            media.media_id,
            media.filesystem_id,
            media.content_type,
            media.upload_name,
            media.media_length,
            media.created_ts,
            media.last_access_ts,
            media.quarantined_by,
            media.authenticated,
        )

    async def touch_remote(self, keys: Sequence[tuple[str, str]], ts: int) -> None:
        await self.db.executemany(
            "UPDATE remote_media SET last_access_ts = $3 WHERE origin = $1 AND media_id = $2",
            [(o, m, ts) for o, m in keys],
        )

    async def remote_media_before(self, before_ts: int, limit: int) -> list[RemoteMedia]:
        rows = await self.db.fetch(
            f"SELECT {_REMOTE_COLUMNS} FROM remote_media WHERE last_access_ts < $1"
            " ORDER BY last_access_ts LIMIT $2",
            before_ts,
            limit,
        )
        return [_remote(r) for r in rows]

    async def delete_remote(self, origin: str, media_id: str) -> None:
        async with self.db.transaction() as conn:
            await conn.execute(
                "DELETE FROM remote_media WHERE origin = $1 AND media_id = $2", origin, media_id
            )
            await conn.execute(
                "DELETE FROM media_thumbnails WHERE origin = $1 AND media_id = $2",
                origin,
                media_id,
            )

    async def set_remote_quarantine(self, origin: str, media_id: str, by: str | None) -> int:
        return await self.db.execute(
            "UPDATE remote_media SET quarantined_by = $3 WHERE origin = $1 AND media_id = $2",
            origin,
            media_id,
            by,
        )

    # -- thumbnails ----------------------------------------------------------------------

    async def thumbnails(self, origin: str, media_id: str) -> list[Thumbnail]:
        rows = await self.db.fetch(
            "SELECT width, height, method, content_type, media_length FROM media_thumbnails"
            " WHERE origin = $1 AND media_id = $2",
            origin,
            media_id,
        )
        return [Thumbnail(int(r[0]), int(r[1]), r[2], r[3], int(r[4])) for r in rows]

    async def add_thumbnail(self, origin: str, media_id: str, thumb: Thumbnail) -> None:
        await self.db.execute(
            "INSERT INTO media_thumbnails (origin, media_id, width, height, method,"
            " content_type, media_length) VALUES ($1, $2, $3, $4, $5, $6, $7)"
            " ON CONFLICT (origin, media_id, width, height, method, content_type)"
            " DO UPDATE SET media_length = excluded.media_length",
            origin,
            media_id,
            thumb.width,
            thumb.height,
            thumb.method,
            thumb.content_type,
            thumb.media_length,
        )
