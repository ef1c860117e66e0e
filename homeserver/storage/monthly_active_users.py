"""MauStore: the monthly active users table (migration 0067), Synapse's
`monthly_active_users`: who used the server in the last 30 days, for max_mau_value
and the synapse_admin_mau_* metrics."""

from __future__ import annotations

from collections.abc import Sequence

from .database import Database

MONTH_MS = 30 * 24 * 3600 * 1000


def _not_in(first: int, values: Sequence[str]) -> str:
    """`user_id NOT IN ($first, ...)`, or a condition true for all when `values` is
    empty (`NOT IN (NULL)` would be true for none)."""
    if not values:
        return "1 = 1"
    return "user_id NOT IN (" + ", ".join(f"${first + i}" for i in range(len(values))) + ")"


class MauStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def last_active(self, user_id: str) -> int | None:
        """When the user was last counted (ms), or None: not a monthly active user."""
        value = await self.db.fetchval(
            "SELECT timestamp FROM monthly_active_users WHERE user_id = $1", user_id
        )
        return None if value is None else int(value)

    async def count(self) -> int:
        """Monthly active users who count towards the limit: not appservices' users."""
        value = await self.db.fetchval(
            "SELECT COUNT(*) FROM monthly_active_users WHERE appservice_id IS NULL"
        )
        return int(value or 0)

    async def count_by_service(self) -> dict[str, int]:
        """Per appservice ID, "native" for the others (Synapse's metric labels)."""
        rows = await self.db.fetch(
            "SELECT COALESCE(appservice_id, 'native'), COUNT(*) FROM monthly_active_users"
            " GROUP BY appservice_id"
        )
        return {str(row[0]): int(row[1]) for row in rows}

    async def upsert(self, user_id: str, now_ms: int, appservice_id: str | None) -> None:
        await self.db.execute(
            "INSERT INTO monthly_active_users (user_id, timestamp, appservice_id)"
            " VALUES ($1, $2, $3) ON CONFLICT (user_id) DO UPDATE"
            " SET timestamp = excluded.timestamp, appservice_id = excluded.appservice_id",
            user_id,
            now_ms,
            appservice_id,
        )

    async def insert_if_room(
        self, user_id: str, now_ms: int, limit: int, appservice_id: str | None
    ) -> bool:
        """Count a new user only while fewer than `limit` are counted. The check and
        the insert are one statement in a transaction alone (a deployment's processes
        take turns), so processes admitting newcomers at once never overshoot
        (tests/storage/test_postgres_locks.py)."""
        written = await self.db.execute(
            "INSERT INTO monthly_active_users (user_id, timestamp, appservice_id)"
            " SELECT CAST($1 AS TEXT), CAST($2 AS BIGINT), CAST($4 AS TEXT) WHERE (SELECT COUNT(*) FROM monthly_active_users"
            " WHERE appservice_id IS NULL) < $3"
            " ON CONFLICT (user_id) DO UPDATE SET timestamp = excluded.timestamp",
            user_id,
            now_ms,
            limit,
            appservice_id,
        )
        return written > 0

    async def user_info(self, user_id: str) -> tuple[int, bool, str | None] | None:
        """(created_ts, is_guest, user_type) of a local account, or None."""
        row = await self.db.fetchrow(
            "SELECT created_ts, is_guest, user_type FROM users WHERE user_id = $1", user_id
        )
        return None if row is None else (int(row[0]), bool(row[1]), row[2])

    async def owners_of(self, threepids: Sequence[tuple[str, str]]) -> list[str]:
        """The accounts holding these addresses (the reserved seats), in their order."""
        owners: list[str] = []
        for medium, address in threepids:
            user_id = await self.db.fetchval(
                "SELECT user_id FROM user_threepids WHERE medium = $1 AND address = $2",
                medium,
                address,
            )
            if user_id is not None and user_id not in owners:
                owners.append(str(user_id))
        return owners

    async def reap(self, now_ms: int, reserved: Sequence[str], limit: int | None) -> int:
        """Forget users inactive for 30 days (reserved seats are kept); with a `limit`,
        also the least recently active beyond it (after a lowered max_mau_value)."""
        reserved = list(reserved)
        removed = await self.db.execute(
            f"DELETE FROM monthly_active_users WHERE timestamp < $1 AND {_not_in(2, reserved)}",
            now_ms - MONTH_MS,
            *reserved,
        )
        if limit is None:
            return removed
        keep = max(limit - len(reserved), 0)
        # The reserved users are filtered twice: kept themselves, and not taking one
        # of the `keep` places from an ordinary user.
        removed += await self.db.execute(
            "DELETE FROM monthly_active_users WHERE user_id NOT IN ("
            " SELECT user_id FROM monthly_active_users"
            f" WHERE {_not_in(2, reserved)} ORDER BY timestamp DESC LIMIT $1)"
            f" AND {_not_in(2 + len(reserved), reserved)}",
            keep,
            *reserved,
            *reserved,
        )
        return removed
