"""Event stream positions claimed by several writing processes at once (PostgreSQL).

One process allocates event positions as `MAX(stream_ordering) + 1` under its write
lock, so positions commit in order and "the newest stored position" is a complete
stream token. Event persisters (homeserver.replication.writers) write rooms side by
side instead: an event transaction claims its positions from a sequence without
waiting for the other processes' transactions, so a lower position can commit after
a higher one. A reader told "events up to N" while N - 1 is still being written would
skip N - 1 for ever (the gap Synapse closes with per-writer positions in its tokens).

Here the token stays one integer, and what is announced is the *visible* position:
the highest one below which every claimed position has committed or rolled back.
Each claim registers its first position as a shared transaction-level advisory lock
(PostgreSQL lists it in pg_locks until the transaction ends, committed or not, and
drops it when the session dies, so a SIGKILLed writer holds nothing up); the claim
and the visible-position read run under one short guard lock, so no position is ever
handed out unregistered (migration 0068 has the SQL). A reader thus never serves a
position beyond what every writer has persisted, and tokens survive restarts and any
change in the number of writers. The cost of a position written while a lower one
is in flight is latency (it shows when the lower one ends), never loss.

Bounds: one advisory lock per event transaction in flight (at most one transaction
per writing process at a time); the guard is held for one sequence update, or one
scan of pg_locks.
"""

from __future__ import annotations

from .database import Connection, Database

_FLIGHT_MASK = 0x7FFF_FFFF  # an advisory lock's first int4 key: kept positive


class ConcurrentEventPositions:
    """Claims and the visible position, for one deployment's schema."""

    def __init__(self, db: Database, schema: str | None) -> None:
        from .postgres_locks import lock_key  # asyncpg: loaded by PostgreSQL servers only

        self._db = db
        self._guard = lock_key(schema, "event positions")
        self._flight = lock_key(schema, "event positions in flight") & _FLIGHT_MASK

    async def claim(self, conn: Connection, count: int) -> int:
        """The first of `count` consecutive positions for the transaction of `conn`;
        they are in flight until it ends."""
        first = await conn.fetchval(
            "SELECT claim_event_positions($1, $2, $3)", count, self._guard, self._flight
        )
        return int(first)

    async def visible(self) -> int:
        """The newest position every writer has finished (a complete stream token)."""
        value = await self._db.fetchval(
            "SELECT visible_event_position($1, $2)", self._guard, self._flight
        )
        return max(int(value or 0), 0)
