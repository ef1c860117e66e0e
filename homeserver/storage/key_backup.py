"""KeyBackupStore: server-side room key backup versions and their session keys.

Version numbers are per user and never reused (deleted versions stay as flagged rows).
The `etag` of a version is bumped in the same transaction as every change to its keys.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from ._util import dump_json, load_json
from .database import Connection, Database


@dataclass(frozen=True)
class BackupVersion:
    user_id: str
    version: int
    algorithm: str
    auth_data: Any  # opaque client JSON
    etag: int


@dataclass(frozen=True)
class BackupKey:
    room_id: str
    session_id: str
    first_message_index: int
    forwarded_count: int
    is_verified: bool
    session_data: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "first_message_index": self.first_message_index,
            "forwarded_count": self.forwarded_count,
            "is_verified": self.is_verified,
            "session_data": self.session_data,
        }


# Decides whether a new key replaces the stored one: (old, new) -> replace?
Replaces = Callable[[BackupKey, BackupKey], bool]


class KeyBackupStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # -- versions ------------------------------------------------------------------------

    async def create_version(self, user_id: str, algorithm: str, auth_data: Any) -> int:
        async with self.db.transaction() as conn:
            current = await conn.fetchval(
                "SELECT MAX(version) FROM room_key_backup_versions WHERE user_id = $1", user_id
            )
            version = int(current or 0) + 1
            await conn.execute(
                "INSERT INTO room_key_backup_versions (user_id, version, algorithm, auth_data)"
                " VALUES ($1, $2, $3, $4)",
                user_id,
                version,
                algorithm,
                dump_json(auth_data),
            )
        return version

    async def get_version(self, user_id: str, version: int | None = None) -> BackupVersion | None:
        """A live version, or with `version` None the newest live one."""
        if version is None:
            row = await self.db.fetchrow(
                "SELECT version, algorithm, auth_data, etag FROM room_key_backup_versions"
                " WHERE user_id = $1 AND NOT deleted ORDER BY version DESC LIMIT 1",
                user_id,
            )
        else:
            row = await self.db.fetchrow(
                "SELECT version, algorithm, auth_data, etag FROM room_key_backup_versions"
                " WHERE user_id = $1 AND version = $2 AND NOT deleted",
                user_id,
                version,
            )
        if row is None:
            return None
        return BackupVersion(user_id, int(row[0]), row[1], load_json(row[2]), int(row[3]))

    async def update_auth_data(self, user_id: str, version: int, auth_data: Any) -> bool:
        changed = await self.db.execute(
            "UPDATE room_key_backup_versions SET auth_data = $3 WHERE user_id = $1"
            " AND version = $2 AND NOT deleted",
            user_id,
            version,
            dump_json(auth_data),
        )
        return changed > 0

    async def delete_version(self, user_id: str, version: int) -> bool:
        async with self.db.transaction() as conn:
            changed = await conn.execute(
                "UPDATE room_key_backup_versions SET deleted = TRUE WHERE user_id = $1"
                " AND version = $2 AND NOT deleted",
                user_id,
                version,
            )
            await conn.execute(
                "DELETE FROM room_key_backup_keys WHERE user_id = $1 AND version = $2",
                user_id,
                version,
            )
        return changed > 0

    # -- keys ----------------------------------------------------------------------------

    async def count_keys(self, user_id: str, version: int) -> int:
        return int(
            await self.db.fetchval(
                "SELECT COUNT(*) FROM room_key_backup_keys WHERE user_id = $1 AND version = $2",
                user_id,
                version,
            )
        )

    async def put_keys(
        self, user_id: str, version: int, keys: Iterable[BackupKey], replaces: Replaces
    ) -> bool:
        """Store keys where `replaces(old, new)` (or no old key); bump the etag if any
        changed. Returns whether anything changed."""
        changed = False
        async with self.db.transaction() as conn:
            for key in keys:
                old = await _get_key(conn, user_id, version, key.room_id, key.session_id)
                if old is not None and not replaces(old, key):
                    continue
                await conn.execute(
                    "INSERT INTO room_key_backup_keys (user_id, version, room_id, session_id,"
                    " first_message_index, forwarded_count, is_verified, session_data)"
                    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
                    " ON CONFLICT (user_id, version, room_id, session_id) DO UPDATE SET"
                    " first_message_index = excluded.first_message_index,"
                    " forwarded_count = excluded.forwarded_count,"
                    " is_verified = excluded.is_verified, session_data = excluded.session_data",
                    user_id,
                    version,
                    key.room_id,
                    key.session_id,
                    key.first_message_index,
                    key.forwarded_count,
                    key.is_verified,
                    dump_json(key.session_data),
                )
                changed = True
            if changed:
                await _bump_etag(conn, user_id, version)
        return changed

    async def get_keys(
        self,
        user_id: str,
        version: int,
        room_id: str | None = None,
        session_id: str | None = None,
    ) -> list[BackupKey]:
        where, args = _key_filter(user_id, version, room_id, session_id)
        rows = await self.db.fetch(
            "SELECT room_id, session_id, first_message_index, forwarded_count, is_verified,"
            f" session_data FROM room_key_backup_keys WHERE {where} ORDER BY room_id, session_id",
            *args,
        )
        return [_key_from_row(r) for r in rows]

    async def delete_keys(
        self,
        user_id: str,
        version: int,
        room_id: str | None = None,
        session_id: str | None = None,
    ) -> bool:
        where, args = _key_filter(user_id, version, room_id, session_id)
        async with self.db.transaction() as conn:
            deleted = await conn.execute(f"DELETE FROM room_key_backup_keys WHERE {where}", *args)
            if deleted:
                await _bump_etag(conn, user_id, version)
        return deleted > 0


async def _get_key(
    conn: Connection, user_id: str, version: int, room_id: str, session_id: str
) -> BackupKey | None:
    row = await conn.fetchrow(
        "SELECT room_id, session_id, first_message_index, forwarded_count, is_verified,"
        " session_data FROM room_key_backup_keys WHERE user_id = $1 AND version = $2"
        " AND room_id = $3 AND session_id = $4",
        user_id,
        version,
        room_id,
        session_id,
    )
    return None if row is None else _key_from_row(row)


async def _bump_etag(conn: Connection, user_id: str, version: int) -> None:
    await conn.execute(
        "UPDATE room_key_backup_versions SET etag = etag + 1 WHERE user_id = $1 AND version = $2",
        user_id,
        version,
    )


def _key_from_row(r: Any) -> BackupKey:
    return BackupKey(r[0], r[1], int(r[2]), int(r[3]), bool(r[4]), load_json(r[5]))


def _key_filter(
    user_id: str, version: int, room_id: str | None, session_id: str | None
) -> tuple[str, list[Any]]:
    """The WHERE clause and its arguments selecting a backup's keys: all of them, one
    room's, or (with a room) one session's. A session without a room selects the backup."""
    where = "user_id = $1 AND version = $2"
    args: list[Any] = [user_id, version]
    if room_id is not None:
        where += " AND room_id = $3"
        args.append(room_id)
        if session_id is not None:
            where += " AND session_id = $4"
            args.append(session_id)
    return where, args
