"""FilterStore: filters saved by `POST /user/{userId}/filter`, per user, by numeric ID."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from ._util import dump_json, load_json
from .cache import LruCache
from .database import Database
from .errors import IntegrityError

T = TypeVar("T")

# Parsed saved filters kept per (user, filter ID); a saved filter never changes, so an
# entry is never stale. Every /sync names its filter again.
PARSED_CACHE_SIZE = 4096


class FilterStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._parsed: LruCache[tuple[str, int], Any] = LruCache(
            PARSED_CACHE_SIZE, name="parsed_filters"
        )

    async def get_parsed(
        self, user_id: str, filter_id: int, parse: Callable[[dict[str, Any]], T]
    ) -> T | None:
        """`parse(definition)` of a saved filter, cached (None: no such filter). `parse`
        must be pure and always the same function for this store."""
        cached = self._parsed.get((user_id, filter_id))
        if cached is not None:
            return cached  # type: ignore[no-any-return]
        definition = await self.get_filter(user_id, filter_id)
        if definition is None:
            return None
        parsed = parse(definition)
        self._parsed.set((user_id, filter_id), parsed)
        return parsed

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
