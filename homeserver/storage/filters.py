"""FilterStore: filters saved by `POST /user/{userId}/filter`, per user, by numeric ID."""

from __future__ import annotations

from typing import Any

from ._util import dump_json, load_json
from .database import Database
from .errors import IntegrityError


class FilterStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def add_filter(self, user_id: str, definition: dict[str, Any]) -> int:
        """Store a filter and return its new ID (IDs are per user, from 0 upwards)."""
        for _ in range(5):  # a concurrent insert may take the same ID: retry
            try:
                async with self.db.transaction() as conn:
                    high = await conn.fetchval(
                        "SELECT MAX(filter_id) FROM user_filters WHERE user_id = $1", user_id
                    )
                    filter_id = 0 if high is None else int(high) + 1
                    await conn.execute(
                        "INSERT INTO user_filters (user_id, filter_id, filter_json)"
                        " VALUES ($1, $2, $3)",
                        user_id,
                        filter_id,
                        dump_json(definition),
                    )
                return filter_id
            except IntegrityError:
                continue
        raise IntegrityError("could not allocate a filter ID")

    async def get_filter(self, user_id: str, filter_id: int) -> dict[str, Any] | None:
        text = await self.db.fetchval(
            "SELECT filter_json FROM user_filters WHERE user_id = $1 AND filter_id = $2",
            user_id,
            filter_id,
        )
        return None if text is None else load_json(text)
