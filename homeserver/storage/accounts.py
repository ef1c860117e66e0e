"""AccountStore: users, profiles, devices, access and refresh tokens.

`get_token` runs on every authenticated request, so results are cached; every path that
deletes tokens collects the deleted token strings (`RETURNING`) and invalidates them, and
the cache's generation check stops a concurrent read from re-inserting a deleted token.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ._util import dump_json, load_json, now_ms
from .cache import LruCache
from .database import Connection, Database
from .errors import IntegrityError


def _key(token: str) -> str:
    """The token cache's key: a digest, so invalidations sent to other processes over
    the replication bus never carry a usable access token."""
    return hashlib.sha256(token.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class UserInfo:
    user_id: str
    password_hash: str | None
    created_ts: int
    is_admin: bool
    deactivated: bool
    is_guest: bool


@dataclass(frozen=True)
class DeviceInfo:
    user_id: str
    device_id: str
    display_name: str | None
    last_seen_ts: int | None
    last_seen_ip: str | None
    last_seen_user_agent: str | None = None


@dataclass(frozen=True)
class TokenInfo:
    token_id: int
    user_id: str
    device_id: str | None
    valid_until_ms: int | None
    refresh_token_id: int | None
    is_guest: bool = False


@dataclass(frozen=True)
class RefreshTokenInfo:
    token_id: int
    user_id: str
    device_id: str | None
    expiry_ts: int | None = None  # the token's own end (refresh_token_lifetime)
    session_expiry_ts: int | None = None  # the login session's end (session_lifetime)


@dataclass(frozen=True)
class Profile:
    user_id: str
    displayname: str | None
    avatar_url: str | None
    custom: dict[str, Any]


_USER_COLUMNS = "user_id, password_hash, created_ts, is_admin, deactivated, is_guest"


def _escape_like(term: str) -> str:
    return term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


class AccountStore:
    def __init__(self, db: Database, token_cache_size: int = 10_000) -> None:
        self.db = db
        self._tokens: LruCache[str, TokenInfo] = LruCache(
            token_cache_size, "get_user_by_access_token"
        )
        # Local users who asked for erasure (deactivation with erase): few, read on
        # every history filter, so kept in memory once loaded.
        self._erased: set[str] | None = None

    # -- users --------------------------------------------------------------------------

    async def erased_among(self, user_ids: Iterable[str]) -> set[str]:
        """The erased users among `user_ids`."""
        if self._erased is None:
            rows = await self.db.fetch("SELECT user_id FROM users WHERE erased")
            self._erased = {r[0] for r in rows}
        return self._erased.intersection(user_ids)

    async def set_erased(self, user_id: str, erased: bool) -> None:
        await self.db.execute("UPDATE users SET erased = $2 WHERE user_id = $1", user_id, erased)
        if self._erased is not None:
            if erased:
                self._erased.add(user_id)
            else:
                self._erased.discard(user_id)

    async def create_user(
        self,
        user_id: str,
        password_hash: str | None,
        *,
        is_admin: bool = False,
        is_guest: bool = False,
        displayname: str | None = None,
        created_ts: int | None = None,
        user_type: str | None = None,
    ) -> bool:
        """Create a user (and their profile row); False if the user ID is taken."""
        try:
            async with self.db.transaction() as conn:
                await conn.execute(
                    f"INSERT INTO users ({_USER_COLUMNS}) VALUES ($1, $2, $3, $4, FALSE, $5)",
                    user_id,
                    password_hash,
                    created_ts if created_ts is not None else now_ms(),
                    is_admin,
                    is_guest,
                )
                if user_type is not None:
                    await conn.execute(
                        "UPDATE users SET user_type = $2 WHERE user_id = $1", user_id, user_type
                    )
                await conn.execute(
                    "INSERT INTO profiles (user_id, displayname) VALUES ($1, $2)"
                    " ON CONFLICT (user_id) DO UPDATE SET displayname = excluded.displayname",
                    user_id,
                    displayname,
                )
        except IntegrityError:
            return False
        return True

    async def get_user(self, user_id: str) -> UserInfo | None:
        row = await self.db.fetchrow(
            f"SELECT {_USER_COLUMNS} FROM users WHERE user_id = $1", user_id
        )
        if row is None:
            return None
        return UserInfo(row[0], row[1], int(row[2]), bool(row[3]), bool(row[4]), bool(row[5]))

    async def user_id_taken(self, user_id: str) -> bool:
        return await self.db.fetchval("SELECT 1 FROM users WHERE user_id = $1", user_id) is not None

    async def set_password_hash(self, user_id: str, password_hash: str | None) -> bool:
        return (
            await self.db.execute(
                "UPDATE users SET password_hash = $2 WHERE user_id = $1", user_id, password_hash
            )
            > 0
        )

    async def upgrade_guest(self, user_id: str, password_hash: str | None) -> bool:
        """Make a guest a full user (registration with `guest_access_token`): same user
        ID, now with a password; the guest's tokens stay valid but are no longer a
        guest's. False when `user_id` is not a guest (any more)."""
        async with self.db.transaction() as conn:
            changed = await conn.execute(
                "UPDATE users SET is_guest = FALSE, password_hash = $2"
                " WHERE user_id = $1 AND is_guest",
                user_id,
                password_hash,
            )
            tokens = await conn.fetch("SELECT token FROM access_tokens WHERE user_id = $1", user_id)
        self._tokens.invalidate_many(_key(r[0]) for r in tokens)
        return changed > 0

    async def set_admin(self, user_id: str, is_admin: bool) -> bool:
        return (
            await self.db.execute(
                "UPDATE users SET is_admin = $2 WHERE user_id = $1", user_id, is_admin
            )
            > 0
        )

    async def deactivate(self, user_id: str) -> bool:
        """Mark the user deactivated, forget the password, drop all devices and tokens."""
        async with self.db.transaction() as conn:
            changed = await conn.execute(
                "UPDATE users SET deactivated = TRUE, password_hash = NULL WHERE user_id = $1",
                user_id,
            )
            tokens = await conn.fetch(
                "DELETE FROM access_tokens WHERE user_id = $1 RETURNING token", user_id
            )
            await conn.execute("DELETE FROM refresh_tokens WHERE user_id = $1", user_id)
            await conn.execute("DELETE FROM devices WHERE user_id = $1", user_id)
        self._tokens.invalidate_many(_key(r[0]) for r in tokens)
        return changed > 0

    async def search_users(self, term: str, limit: int = 10) -> list[Profile]:
        """Active, non-guest users whose ID or display name contains `term` (any case)."""
        pattern = f"%{_escape_like(term.lower())}%"
        rows = await self.db.fetch(
            "SELECT u.user_id, p.displayname, p.avatar_url, p.custom FROM users u"
            " LEFT JOIN profiles p ON p.user_id = u.user_id"
            " WHERE NOT u.deactivated AND NOT u.is_guest AND"
            " (LOWER(u.user_id) LIKE $1 ESCAPE '\\' OR LOWER(p.displayname) LIKE $1 ESCAPE '\\')"
            " ORDER BY u.user_id LIMIT $2",
            pattern,
            limit,
        )
        return [Profile(r[0], r[1], r[2], load_json(r[3]) if r[3] else {}) for r in rows]

    # -- profiles -----------------------------------------------------------------------

    async def get_profile(self, user_id: str) -> Profile | None:
        row = await self.db.fetchrow(
            "SELECT user_id, displayname, avatar_url, custom FROM profiles WHERE user_id = $1",
            user_id,
        )
        return None if row is None else Profile(row[0], row[1], row[2], load_json(row[3]))

    async def set_displayname(self, user_id: str, displayname: str | None) -> None:
        await self._upsert_profile(user_id, "displayname", displayname)

    async def set_avatar_url(self, user_id: str, avatar_url: str | None) -> None:
        await self._upsert_profile(user_id, "avatar_url", avatar_url)

    async def _upsert_profile(self, user_id: str, column: str, value: str | None) -> None:
        assert column in ("displayname", "avatar_url")
        await self.db.execute(
            f"INSERT INTO profiles (user_id, {column}) VALUES ($1, $2)"
            f" ON CONFLICT (user_id) DO UPDATE SET {column} = excluded.{column}",
            user_id,
            value,
        )

    async def set_profile_field(self, user_id: str, key: str, value: Any) -> None:
        """Set (or with value None, delete) a custom profile field."""
        async with self.db.transaction() as conn:
            raw = await conn.fetchval("SELECT custom FROM profiles WHERE user_id = $1", user_id)
            custom = load_json(raw) if raw else {}
            if value is None:
                custom.pop(key, None)
            else:
                custom[key] = value
            await conn.execute(
                "INSERT INTO profiles (user_id, custom) VALUES ($1, $2)"
                " ON CONFLICT (user_id) DO UPDATE SET custom = excluded.custom",
                user_id,
                dump_json(custom),
            )

    # -- devices ------------------------------------------------------------------------

    async def upsert_device(
        self, user_id: str, device_id: str, display_name: str | None = None
    ) -> bool:
        """Create the device if new (True); an existing one keeps its name unless given."""
        async with self.db.transaction() as conn:
            existed = await conn.fetchval(
                "SELECT 1 FROM devices WHERE user_id = $1 AND device_id = $2", user_id, device_id
            )
            if existed is None:
                await conn.execute(
                    "INSERT INTO devices (user_id, device_id, display_name, created_ts)"
                    " VALUES ($1, $2, $3, $4)",
                    user_id,
                    device_id,
                    display_name,
                    now_ms(),
                )
            elif display_name is not None:
                await conn.execute(
                    "UPDATE devices SET display_name = $3 WHERE user_id = $1 AND device_id = $2",
                    user_id,
                    device_id,
                    display_name,
                )
        return existed is None

    async def get_device(self, user_id: str, device_id: str) -> DeviceInfo | None:
        row = await self.db.fetchrow(
            "SELECT user_id, device_id, display_name, last_seen_ts, last_seen_ip,"
            " last_seen_user_agent FROM devices"
            " WHERE user_id = $1 AND device_id = $2",
            user_id,
            device_id,
        )
        return None if row is None else DeviceInfo(*row)

    async def get_devices(self, user_id: str) -> list[DeviceInfo]:
        rows = await self.db.fetch(
            "SELECT user_id, device_id, display_name, last_seen_ts, last_seen_ip,"
            " last_seen_user_agent FROM devices"
            " WHERE user_id = $1 ORDER BY device_id",
            user_id,
        )
        return [DeviceInfo(*r) for r in rows]

    async def set_device_display_name(
        self, user_id: str, device_id: str, display_name: str | None
    ) -> bool:
        return (
            await self.db.execute(
                "UPDATE devices SET display_name = $3 WHERE user_id = $1 AND device_id = $2",
                user_id,
                device_id,
                display_name,
            )
            > 0
        )

    async def update_device_last_seen(
        self, user_id: str, device_id: str, ts: int, ip: str | None, user_agent: str | None = None
    ) -> None:
        await self.update_devices_last_seen([(user_id, device_id, ts, ip, user_agent)])

    async def update_devices_last_seen(
        self, updates: Sequence[tuple[str, str, int, str | None, str | None]]
    ) -> None:
        """(user, device, last_seen_ts, last_seen_ip, last_seen_user_agent) for many
        devices, one transaction: bookkeeping that every process writes behind
        (accounts/sessions.py), alongside the other processes' writes. Rows go in key
        order, so two processes' batches that share a device wait rather than deadlock."""
        async with self.db.transaction(turn="alongside") as conn:
            await conn.executemany(
                "UPDATE devices SET last_seen_ts = $3, last_seen_ip = $4,"
                " last_seen_user_agent = $5 WHERE user_id = $1 AND device_id = $2",
                sorted(updates, key=lambda u: (u[0], u[1])),
            )

    async def delete_device(self, user_id: str, device_id: str) -> bool:
        """Delete a device with its access and refresh tokens."""
        async with self.db.transaction() as conn:
            tokens = await self._delete_device_tokens(conn, user_id, device_id)
            changed = await conn.execute(
                "DELETE FROM devices WHERE user_id = $1 AND device_id = $2", user_id, device_id
            )
        self._tokens.invalidate_many(_key(t) for t in tokens)
        return changed > 0

    @staticmethod
    async def _delete_device_tokens(conn: Connection, user_id: str, device_id: str) -> list[str]:
        rows = await conn.fetch(
            "DELETE FROM access_tokens WHERE user_id = $1 AND device_id = $2 RETURNING token",
            user_id,
            device_id,
        )
        await conn.execute(
            "DELETE FROM refresh_tokens WHERE user_id = $1 AND device_id = $2", user_id, device_id
        )
        return [r[0] for r in rows]

    # -- access tokens ------------------------------------------------------------------

    async def add_access_token(
        self,
        token: str,
        user_id: str,
        device_id: str | None,
        *,
        valid_until_ms: int | None = None,
        refresh_token_id: int | None = None,
    ) -> int:
        async with self.db.transaction() as conn:
            token_id = await conn.fetchval(
                "INSERT INTO access_tokens"
                " (token, user_id, device_id, valid_until_ms, refresh_token_id, created_ts)"
                " VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
                token,
                user_id,
                device_id,
                valid_until_ms,
                refresh_token_id,
                now_ms(),
            )
        return int(token_id)

    async def get_token(self, token: str) -> TokenInfo | None:
        """Who an access token belongs to (cached; expiry is the caller's check)."""
        cached = self._tokens.get(_key(token))
        if cached is not None:
            return cached
        generation = self._tokens.generation()
        row = await self.db.fetchrow(
            "SELECT t.id, t.user_id, t.device_id, t.valid_until_ms, t.refresh_token_id,"
            " u.is_guest FROM access_tokens t LEFT JOIN users u ON u.user_id = t.user_id"
            " WHERE t.token = $1",
            token,
        )
        if row is None:
            return None
        info = TokenInfo(int(row[0]), row[1], row[2], row[3], row[4], bool(row[5]))
        self._tokens.set_if_current(_key(token), info, generation)
        return info

    async def delete_access_token(self, token: str) -> bool:
        changed = await self.db.execute("DELETE FROM access_tokens WHERE token = $1", token)
        self._tokens.invalidate(_key(token))
        return changed > 0

    async def delete_access_tokens_for_device(self, user_id: str, device_id: str) -> int:
        async with self.db.transaction() as conn:
            rows = await conn.fetch(
                "DELETE FROM access_tokens WHERE user_id = $1 AND device_id = $2 RETURNING token",
                user_id,
                device_id,
            )
        self._tokens.invalidate_many(_key(r[0]) for r in rows)
        return len(rows)

    async def delete_access_tokens_for_user(
        self, user_id: str, *, except_token_id: int | None = None
    ) -> int:
        async with self.db.transaction() as conn:
            rows = await conn.fetch(
                "DELETE FROM access_tokens WHERE user_id = $1 AND id != $2 RETURNING token",
                user_id,
                except_token_id if except_token_id is not None else -1,
            )
        self._tokens.invalidate_many(_key(r[0]) for r in rows)
        return len(rows)

    # -- refresh tokens -----------------------------------------------------------------

    async def add_refresh_token(
        self,
        token: str,
        user_id: str,
        device_id: str | None,
        expiry_ts: int | None = None,
        session_expiry_ts: int | None = None,
    ) -> int:
        async with self.db.transaction() as conn:
            token_id = await conn.fetchval(
                "INSERT INTO refresh_tokens"
                " (token, user_id, device_id, created_ts, expiry_ts, session_expiry_ts)"
                " VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
                token,
                user_id,
                device_id,
                now_ms(),
                expiry_ts,
                session_expiry_ts,
            )
        return int(token_id)

    async def get_refresh_token(self, token: str) -> RefreshTokenInfo | None:
        row = await self.db.fetchrow(
            "SELECT id, user_id, device_id, expiry_ts, session_expiry_ts FROM refresh_tokens"
            " WHERE token = $1",
            token,
        )
        return None if row is None else RefreshTokenInfo(int(row[0]), *row[1:])

    async def delete_refresh_token(self, token_id: int) -> bool:
        """Delete a refresh token and the access tokens issued with it."""
        async with self.db.transaction() as conn:
            rows = await conn.fetch(
                "DELETE FROM access_tokens WHERE refresh_token_id = $1 RETURNING token", token_id
            )
            changed = await conn.execute("DELETE FROM refresh_tokens WHERE id = $1", token_id)
        self._tokens.invalidate_many(_key(r[0]) for r in rows)
        return changed > 0

    # -- sessions (accounts area) -------------------------------------------------------

    async def rotate_refresh_token(
        self,
        old_token_id: int,
        new_refresh_token: str,
        new_access_token: str,
        user_id: str,
        device_id: str | None,
        valid_until_ms: int | None,
        expiry_ts: int | None = None,
        session_expiry_ts: int | None = None,
    ) -> tuple[int, int]:
        """One /refresh: issue a new refresh + access token pair replacing `old_token_id`.

        In one transaction: the access tokens issued with the old refresh token die, a
        successor issued by an earlier (retried) use of the old token dies with its access
        tokens, and the old token's own predecessor is revoked (the old token being used
        proves the client got it). The old token itself stays valid until its successor
        is used, as the spec asks. Returns (new refresh token id, new access token id).
        """
        now = now_ms()
        async with self.db.transaction() as conn:
            dead = await conn.fetch(
                "DELETE FROM access_tokens WHERE refresh_token_id = $1 OR refresh_token_id IN"
                " (SELECT next_token_id FROM refresh_tokens WHERE id = $1"
                "  AND next_token_id IS NOT NULL)"
                " OR refresh_token_id IN (SELECT id FROM refresh_tokens WHERE next_token_id = $1)"
                " RETURNING token",
                old_token_id,
            )
            await conn.execute(
                "DELETE FROM refresh_tokens WHERE id IN (SELECT next_token_id FROM refresh_tokens"
                " WHERE id = $1 AND next_token_id IS NOT NULL) OR next_token_id = $1",
                old_token_id,
            )
            new_id = await conn.fetchval(
                "INSERT INTO refresh_tokens"
                " (token, user_id, device_id, created_ts, expiry_ts, session_expiry_ts)"
                " VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
                new_refresh_token,
                user_id,
                device_id,
                now,
                expiry_ts,
                session_expiry_ts,
            )
            await conn.execute(
                "UPDATE refresh_tokens SET next_token_id = $2 WHERE id = $1", old_token_id, new_id
            )
            access_id = await conn.fetchval(
                "INSERT INTO access_tokens"
                " (token, user_id, device_id, valid_until_ms, refresh_token_id, created_ts)"
                " VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
                new_access_token,
                user_id,
                device_id,
                valid_until_ms,
                new_id,
                now,
            )
        self._tokens.invalidate_many(_key(r[0]) for r in dead)
        return int(new_id), int(access_id)

    async def delete_tokens_except_device(self, user_id: str, keep_device_id: str | None) -> int:
        """Log out every session of `user_id` except those of device `keep_device_id`
        (access and refresh tokens; the devices themselves stay). Returns tokens deleted."""
        keep = keep_device_id if keep_device_id is not None else ""
        async with self.db.transaction() as conn:
            rows = await conn.fetch(
                "DELETE FROM access_tokens WHERE user_id = $1 AND COALESCE(device_id, '') != $2"
                " RETURNING token",
                user_id,
                keep,
            )
            await conn.execute(
                "DELETE FROM refresh_tokens WHERE user_id = $1 AND COALESCE(device_id, '') != $2",
                user_id,
                keep,
            )
        self._tokens.invalidate_many(_key(r[0]) for r in rows)
        return len(rows)

    async def delete_all_devices(self, user_id: str) -> list[str]:
        """Delete every device and token of `user_id`; returns the deleted device IDs."""
        async with self.db.transaction() as conn:
            tokens = await conn.fetch(
                "DELETE FROM access_tokens WHERE user_id = $1 RETURNING token", user_id
            )
            await conn.execute("DELETE FROM refresh_tokens WHERE user_id = $1", user_id)
            devices = await conn.fetch(
                "DELETE FROM devices WHERE user_id = $1 RETURNING device_id", user_id
            )
        self._tokens.invalidate_many(_key(r[0]) for r in tokens)
        return sorted(r[0] for r in devices)

    async def delete_device_sessions(self, user_id: str, device_id: str) -> int:
        """Log a device out (access and refresh tokens) but keep the device itself."""
        async with self.db.transaction() as conn:
            tokens = await self._delete_device_tokens(conn, user_id, device_id)
        self._tokens.invalidate_many(_key(t) for t in tokens)
        return len(tokens)
