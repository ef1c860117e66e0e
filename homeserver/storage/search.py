"""The full-text index of room events (migration 0013), on both backends.

`event_search` is a plain table on both: one row per indexed event (its stream
ordering, room, sender, key and the text as homeserver.search.query.index_text made
it). The engines index it differently, and this module is the one place that knows:

- SQLite: an FTS5 table `event_search_fts` over it (external content, porter stemming,
  unicode61 with diacritics folded), kept in step by triggers; bm25 ranks.
- PostgreSQL: a generated `tsvector` column (english configuration) with a GIN index;
  ts_rank_cd ranks.

Rows are written by the events store in the transaction that persists the event (so a
committed event is searchable, and a rolled-back one is not), and deleted when the
event is redacted or purged. Derived tables (FTS5's own) are not ported by port-db:
they are rebuilt from `event_search` on the target.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from homeserver.events import Event
from homeserver.search.query import event_search_text, index_text

from ._util import placeholders
from .database import Connection, Database

# FTS5's own tables (the virtual table and its shadows): derived, never ported.
DERIVED_TABLE_PREFIX = "event_search_fts"
# At most this many of a user's rooms are searched at once (host parameters).
MAX_ROOMS = 10_000
# The count of results stops at this (the spec: "an approximate count").
MAX_COUNT = 2_000
# `rank` order scores the newest this many matches of the user's rooms.
RANK_WINDOW = 2_000
# Up to this many rooms, SQLite narrows the full-text match itself to the rooms (their
# tokens in the index), so a word found in half of all messages costs only its matches
# in the user's rooms; beyond it, the join filters the rooms.
MAX_FTS_ROOMS = 1_000


def room_token(room_id: str) -> str:
    """A room as one index token: 'r' and digits (no stemmer or tokenizer alters it)."""
    digest = hashlib.blake2b(room_id.encode("utf-8"), digest_size=8).digest()
    return "r" + str(int.from_bytes(digest, "big"))


@dataclass(frozen=True)
class SearchHit:
    event_id: str
    room_id: str
    stream_ordering: int
    rank: float  # higher is better


def search_row(
    stream: int, event_id: str, room_id: str, sender: str, event_type: str, content: Any
) -> tuple[Any, ...] | None:
    """The event_search row of an event worth indexing, else None."""
    found = event_search_text(event_type, content)
    if found is None:
        return None
    key, text = found
    return (stream, event_id, room_id, sender, key, index_text(text), room_token(room_id))


def event_rows(items: Sequence[tuple[Event, int]]) -> list[tuple[Any, ...]]:
    rows = (
        search_row(stream, e.event_id, e.room_id, e.sender, e.type, e.content)
        for e, stream in items
    )
    return [r for r in rows if r is not None]


async def index_rows(conn: Connection, rows: Sequence[tuple[Any, ...]]) -> None:
    """Index rows of `search_row` in the caller's transaction (the one persisting the
    events)."""
    if rows:
        await conn.executemany(
            "INSERT INTO event_search (stream_ordering, event_id, room_id, sender, key, text,"
            " room_token) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
            rows,
        )


async def unindex_event(conn: Connection | Database, event_id: str) -> None:
    await conn.execute("DELETE FROM event_search WHERE event_id = $1", event_id)


class _Engine:
    """How one backend matches, ranks and orders."""

    match_sql: str  # FROM/WHERE fragment; $1 is the rendered query
    rank_sql: str
    order_column: str

    def render(self, fts5: str, tsquery: str, rooms: Sequence[str]) -> str:
        raise NotImplementedError


class _Sqlite(_Engine):
    # CROSS JOIN fixes the join order: the full-text match drives, each match looks up
    # its row. (Left to itself, the planner may walk the rooms' rows and run the match
    # once per row: seconds instead of milliseconds.)
    source = (
        " FROM event_search_fts CROSS JOIN event_search s"
        " ON s.stream_ordering = event_search_fts.rowid WHERE event_search_fts MATCH $1"
    )
    rank_sql = "-bm25(event_search_fts)"
    order_column = "event_search_fts.rowid"

    def render(self, fts5: str, tsquery: str, rooms: Sequence[str]) -> str:
        if len(rooms) > MAX_FTS_ROOMS:
            return f"text : ({fts5})"
        tokens = " OR ".join(room_token(r) for r in rooms)
        return f"text : ({fts5}) AND room_token : ({tokens})"


class _Postgres(_Engine):
    source = " FROM event_search s WHERE s.vector @@ to_tsquery('english', $1)"
    rank_sql = "ts_rank_cd(s.vector, to_tsquery('english', $1))"
    order_column = "s.stream_ordering"

    def render(self, fts5: str, tsquery: str, rooms: Sequence[str]) -> str:
        return tsquery


class SearchStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._engine: _Sqlite | _Postgres = (
            _Postgres() if db.dialect.name == "postgres" else _Sqlite()
        )

    def _where(
        self, rooms: Sequence[str], keys: Sequence[str], start: int
    ) -> tuple[str, list[Any]]:
        args: list[Any] = []
        rooms = list(rooms)[:MAX_ROOMS]
        sql = f" AND s.room_id IN ({placeholders(len(rooms), start)})"
        args += rooms
        sql += f" AND s.key IN ({placeholders(len(keys), start + len(rooms))})"
        args += list(keys)
        return sql, args

    async def search(
        self,
        fts5: str,
        tsquery: str,
        rooms: Sequence[str],
        keys: Sequence[str],
        *,
        order: str,
        before: int | None,
        limit: int,
        senders: Sequence[str] | None = None,
    ) -> list[SearchHit]:
        """Matches in `rooms`: newest first (`order` "recent", below the stream
        ordering `before`), or best first ("rank")."""
        if not rooms or not keys:
            return []
        engine = self._engine
        where, args = self._where(rooms, keys, 2)
        if senders is not None:
            where += f" AND s.sender IN ({placeholders(len(senders), 2 + len(args))})"
            args += list(senders)
        if before is not None and order == "recent":
            where += f" AND {engine.order_column} < ${2 + len(args)}"
            args.append(before)
        select = f"SELECT s.event_id, s.room_id, s.stream_ordering, {engine.rank_sql} AS rank"
        newest = f"{select}{engine.source}{where} ORDER BY {engine.order_column} DESC"
        if order == "recent":
            sql = f"{newest} LIMIT ${2 + len(args)}"
        else:
            # Ranked: the best of the newest RANK_WINDOW matches, so a word found in half
            # of a million messages costs a bounded amount of scoring.
            sql = (
                f"SELECT * FROM ({newest} LIMIT {RANK_WINDOW}) AS newest"
                f" ORDER BY rank DESC LIMIT ${2 + len(args)}"
            )
        rows = await self.db.fetch(sql, engine.render(fts5, tsquery, rooms), *args, limit)
        return [SearchHit(r[0], r[1], int(r[2]), float(r[3] or 0)) for r in rows]

    async def count(
        self, fts5: str, tsquery: str, rooms: Sequence[str], keys: Sequence[str]
    ) -> int:
        if not rooms or not keys:
            return 0
        engine = self._engine
        where, args = self._where(rooms, keys, 2)
        value = await self.db.fetchval(
            f"SELECT COUNT(*) FROM (SELECT 1{engine.source}{where}"
            f" LIMIT ${2 + len(args)}) AS matches",
            engine.render(fts5, tsquery, rooms),
            *args,
            MAX_COUNT,
        )
        return int(value or 0)

    async def unindex(self, event_id: str) -> None:
        await unindex_event(self.db, event_id)
