"""AdminUserStore: what server admins read and change about accounts (migration 0050).

The paged user list (Synapse's /v2/users), one account's details, the moderation
flags (shadow-banned, locked, suspended, erased, user type) and per-user rate-limit
overrides. Listing pages with LIMIT/OFFSET over the users table; `last_seen_ts` is
computed for the returned page only unless the list is ordered by it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ._util import placeholders
from .database import Database

# Synapse's order_by values -> the SQL expression (users u, profiles p, seen s).
USER_ORDER_COLUMNS = {
    "name": "u.user_id",
    "is_guest": "u.is_guest",
    "admin": "u.is_admin",
    "user_type": "u.user_type",
    "deactivated": "u.deactivated",
    "shadow_banned": "u.shadow_banned",
    "displayname": "p.displayname",
    "avatar_url": "p.avatar_url",
    "creation_ts": "u.created_ts",
    "last_seen_ts": "s.last_seen_ts",
    "locked": "u.locked",
}

FLAGS = ("shadow_banned", "locked", "suspended", "erased")

_LAST_SEEN = (
    "SELECT user_id, MAX(last_seen_ts) AS last_seen_ts FROM devices"
    " WHERE last_seen_ts IS NOT NULL GROUP BY user_id"
)


@dataclass(frozen=True)
class UserFilter:
    """The /v2/users filters; None means "do not filter on this"."""

    name: str | None = None
    user_id: str | None = None
    guests: bool = True
    deactivated: bool | None = False
    admins: bool | None = None
    locked: bool = False
    not_user_types: tuple[str, ...] = ()


@dataclass(frozen=True)
class AdminUser:
    name: str
    password_hash: str | None
    is_guest: bool
    admin: bool
    user_type: str | None
    deactivated: bool
    erased: bool
    shadow_banned: bool
    locked: bool
    suspended: bool
    displayname: str | None
    avatar_url: str | None
    creation_ts: int
    last_seen_ts: int | None


@dataclass(frozen=True)
class RateLimitOverride:
    messages_per_second: int
    burst_count: int


_SELECT = (
    "SELECT u.user_id, u.password_hash, u.is_guest, u.is_admin, u.user_type, u.deactivated,"
    " u.erased, u.shadow_banned, u.locked, u.suspended, p.displayname, p.avatar_url,"
    " u.created_ts"
)


def _escape_like(term: str) -> str:
    return term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _where(f: UserFilter) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    args: list[Any] = []

    def arg(value: Any) -> str:
        args.append(value)
        return f"${len(args)}"

    if f.name:
        term = _escape_like(f.name.lower())
        clauses.append(
            f"(LOWER(u.user_id) LIKE {arg('@%' + term + '%:%')} ESCAPE '\\'"
            f" OR LOWER(p.displayname) LIKE {arg('%' + term + '%')} ESCAPE '\\')"
        )
    elif f.user_id:
        clauses.append(
            f"LOWER(u.user_id) LIKE {arg('%' + _escape_like(f.user_id.lower()) + '%')} ESCAPE '\\'"
        )
    if not f.guests:
        clauses.append("NOT u.is_guest")
    if f.deactivated is not None:
        clauses.append("u.deactivated" if f.deactivated else "NOT u.deactivated")
    if not f.locked:
        clauses.append("NOT u.locked")
    if f.admins is not None:
        clauses.append("u.is_admin" if f.admins else "NOT u.is_admin")
    types = [t for t in f.not_user_types if t]
    if types:
        in_list = ", ".join(arg(t) for t in types)
        if "" in f.not_user_types:
            clauses.append(f"u.user_type IS NOT NULL AND u.user_type NOT IN ({in_list})")
        else:
            clauses.append(f"(u.user_type IS NULL OR u.user_type NOT IN ({in_list}))")
    elif "" in f.not_user_types:
        clauses.append("u.user_type IS NOT NULL")
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", args


def _user(row: Any, last_seen: int | None) -> AdminUser:
    return AdminUser(
        name=row[0],
        password_hash=row[1],
        is_guest=bool(row[2]),
        admin=bool(row[3]),
        user_type=row[4],
        deactivated=bool(row[5]),
        erased=bool(row[6]),
        shadow_banned=bool(row[7]),
        locked=bool(row[8]),
        suspended=bool(row[9]),
        displayname=row[10],
        avatar_url=row[11],
        creation_ts=int(row[12]),
        last_seen_ts=last_seen,
    )


class AdminUserStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def list_users(
        self,
        start: int,
        limit: int,
        user_filter: UserFilter,
        order_by: str = "name",
        descending: bool = False,
    ) -> tuple[list[AdminUser], int]:
        """One page of local users and how many match the filter in total."""
        column = USER_ORDER_COLUMNS[order_by]
        where, args = _where(user_filter)
        joins = " LEFT JOIN profiles p ON p.user_id = u.user_id"
        seen_join = f" LEFT JOIN ({_LAST_SEEN}) s ON s.user_id = u.user_id"
        total = await self.db.fetchval(f"SELECT COUNT(*) FROM users u{joins}{where}", *args)
        direction = "DESC" if descending else "ASC"
        nulls = "NULLS FIRST" if descending else "NULLS LAST"
        order = f"{column} {direction} {nulls}, u.user_id ASC"
        ordered_by_seen = order_by == "last_seen_ts"
        select = _SELECT + (", s.last_seen_ts" if ordered_by_seen else "")
        n = len(args)
        rows = await self.db.fetch(
            f"{select} FROM users u{joins}{seen_join if ordered_by_seen else ''}{where}"
            f" ORDER BY {order} LIMIT ${n + 1} OFFSET ${n + 2}",
            *args,
            limit,
            start,
        )
        if ordered_by_seen:
            users = [_user(r, r[13]) for r in rows]
        else:
            seen = await self._last_seen([r[0] for r in rows])
            users = [_user(r, seen.get(r[0])) for r in rows]
        return users, int(total or 0)

    async def _last_seen(self, user_ids: Sequence[str]) -> dict[str, int]:
        if not user_ids:
            return {}
        rows = await self.db.fetch(
            "SELECT user_id, MAX(last_seen_ts) FROM devices"
            f" WHERE user_id IN ({placeholders(len(user_ids))}) AND last_seen_ts IS NOT NULL"
            " GROUP BY user_id",
            *user_ids,
        )
        return {r[0]: int(r[1]) for r in rows}

    async def get_user(self, user_id: str) -> AdminUser | None:
        row = await self.db.fetchrow(
            f"{_SELECT} FROM users u LEFT JOIN profiles p ON p.user_id = u.user_id"
            " WHERE u.user_id = $1",
            user_id,
        )
        if row is None:
            return None
        return _user(row, (await self._last_seen([user_id])).get(user_id))

    # -- moderation flags ---------------------------------------------------------------

    async def set_flag(self, user_id: str, flag: str, value: bool) -> bool:
        if flag not in FLAGS:
            raise ValueError(f"unknown user flag {flag!r}")
        changed = await self.db.execute(
            f"UPDATE users SET {flag} = $2 WHERE user_id = $1", user_id, value
        )
        return changed > 0

    async def set_user_type(self, user_id: str, user_type: str | None) -> bool:
        changed = await self.db.execute(
            "UPDATE users SET user_type = $2 WHERE user_id = $1", user_id, user_type
        )
        return changed > 0

    async def reactivate(self, user_id: str) -> bool:
        changed = await self.db.execute(
            "UPDATE users SET deactivated = FALSE, erased = FALSE WHERE user_id = $1", user_id
        )
        return changed > 0

    async def flagged_users(self) -> dict[str, set[str]]:
        """flag -> users that have it (loaded once at start; the sets stay small)."""
        out: dict[str, set[str]] = {flag: set() for flag in FLAGS}
        rows = await self.db.fetch(
            "SELECT user_id, shadow_banned, locked, suspended, erased FROM users"
            " WHERE shadow_banned OR locked OR suspended OR erased"
        )
        for r in rows:
            for i, flag in enumerate(FLAGS, start=1):
                if r[i]:
                    out[flag].add(r[0])
        return out

    # -- rate-limit overrides -----------------------------------------------------------

    async def get_ratelimit_override(self, user_id: str) -> RateLimitOverride | None:
        row = await self.db.fetchrow(
            "SELECT messages_per_second, burst_count FROM ratelimit_override WHERE user_id = $1",
            user_id,
        )
        return None if row is None else RateLimitOverride(int(row[0]), int(row[1]))

    async def set_ratelimit_override(self, user_id: str, override: RateLimitOverride) -> None:
        await self.db.execute(
            "INSERT INTO ratelimit_override (user_id, messages_per_second, burst_count)"
            " VALUES ($1, $2, $3) ON CONFLICT (user_id) DO UPDATE SET"
            " messages_per_second = excluded.messages_per_second,"
            " burst_count = excluded.burst_count",
            user_id,
            override.messages_per_second,
            override.burst_count,
        )

    async def delete_ratelimit_override(self, user_id: str) -> bool:
        return (
            await self.db.execute("DELETE FROM ratelimit_override WHERE user_id = $1", user_id) > 0
        )

    async def all_ratelimit_overrides(self) -> dict[str, RateLimitOverride]:
        rows = await self.db.fetch(
            "SELECT user_id, messages_per_second, burst_count FROM ratelimit_override"
        )
        return {r[0]: RateLimitOverride(int(r[1]), int(r[2])) for r in rows}
