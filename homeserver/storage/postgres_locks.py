"""Locks that every process of a deployment shares: PostgreSQL advisory locks.

Used when several processes write events (event persisters, see
homeserver.replication.writers):
- every write transaction first takes one transaction-level advisory lock, the
  deployment-wide form of PostgresDatabase's asyncio write lock: stores allocate
  stream IDs with MAX(...) + 1 inside their transactions, so IDs stay unique and every
  stream commits in order (a reader that sees position N has every position below N,
  whichever process wrote it: one integer stays a complete stream token). The event
  stream, the one written in bulk, is the exception: its transactions run side by
  side and claim their positions (event_positions.py), readers being told only
  positions below every claim still in flight. The receipts, to-device, account
  data, device-list and federation outbox streams take it shared and a lock of
  their own stream exclusively: each is allocated in order, the five side by side;
- each room write (build on the room's forward extremities, check, persist) holds a
  session-level advisory lock of that room, so one process at a time writes a room.

Keys are 64-bit hashes of the schema and the lock's name, so deployments that share a
database in different schemas never contend. Transaction locks end with their
transaction; no code takes a room lock inside a transaction, so the two cannot
deadlock.

Room locks live on one dedicated connection per process, taken with
`pg_try_advisory_lock` and retried after a short sleep (RETRY_MIN_S doubling to
RETRY_MAX_S), so waiting for one room never holds up another room's lock. PostgreSQL
releases a session's locks when it ends: a process that is killed frees its rooms at
once. Bounds: one connection per process, whatever the number of rooms being written;
a wait for a room gives up after WAIT_MAX_S (503).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg

from .errors import DatabaseUnavailableError

log = logging.getLogger(__name__)

RETRY_MIN_S = 0.002
RETRY_MAX_S = 0.05
# A room write waits at most this long for another process to release the room (a
# write takes milliseconds; past this the holder is stuck): then 503, not a pile-up.
WAIT_MAX_S = 30.0
# What the lock connection raises once it is broken: a server restart can leave it
# mid-operation, and the next statement is asyncpg's InternalClientError ("another
# operation is in progress"), not a closed-connection error.
_BROKEN = (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError, OSError)


def lock_key(schema: str | None, name: str) -> int:
    """A signed 64-bit advisory lock key for `name` within `schema`."""
    digest = hashlib.sha256(f"{schema or ''}\x00{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class SessionLocks:
    """Named locks held across processes (PostgreSQL session advisory locks)."""

    def __init__(self, connect: Callable[[], Awaitable[Any]], schema: str | None) -> None:
        self._connect = connect
        self._schema = schema
        self._conn: Any = None
        # An asyncpg connection runs one statement at a time.
        self._use = asyncio.Lock()

    async def _run(self, sql: str, key: int) -> Any:
        async with self._use:
            try:
                if self._conn is None or self._conn.is_closed():
                    self._conn = await self._connect()
                return await self._conn.fetchval(sql, key)
            except _BROKEN as exc:
                if self._conn is not None:
                    with contextlib.suppress(Exception):
                        self._conn.terminate()
                self._conn = None  # every lock it held is released by PostgreSQL
                raise DatabaseUnavailableError(f"advisory lock: {exc}") from exc

    @contextlib.asynccontextmanager
    async def hold(self, name: str) -> AsyncIterator[None]:
        key = lock_key(self._schema, name)
        delay = RETRY_MIN_S
        deadline = asyncio.get_running_loop().time() + WAIT_MAX_S
        while not await self._run("SELECT pg_try_advisory_lock($1)", key):
            if asyncio.get_running_loop().time() > deadline:
                raise DatabaseUnavailableError(f"{name} stayed locked for {WAIT_MAX_S:.0f} s")
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_S)
        try:
            yield
        finally:
            try:
                await self._run("SELECT pg_advisory_unlock($1)", key)
            except DatabaseUnavailableError:
                log.warning(
                    "Releasing the lock of %s: the connection is gone (so is the lock)", name
                )

    async def close(self) -> None:
        async with self._use:
            if self._conn is not None:
                with contextlib.suppress(Exception):
                    await self._conn.close()
                self._conn = None
