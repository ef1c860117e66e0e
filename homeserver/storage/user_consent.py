"""ConsentStore: the policy version each user accepted (table user_consent)."""

from __future__ import annotations

from .database import Database


class ConsentStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def record(self, user_id: str, version: str, ts: int) -> None:
        await self.db.execute(
            "INSERT INTO user_consent (user_id, version, consented_ts) VALUES ($1, $2, $3)"
            " ON CONFLICT (user_id) DO UPDATE SET version = excluded.version,"
            " consented_ts = excluded.consented_ts",
            user_id,
            version,
            ts,
        )

    async def get(self, user_id: str) -> tuple[str, int] | None:
        """(version, when in ms) the user accepted, or None."""
        row = await self.db.fetchrow(
            "SELECT version, consented_ts FROM user_consent WHERE user_id = $1", user_id
        )
        return None if row is None else (row[0], int(row[1]))
