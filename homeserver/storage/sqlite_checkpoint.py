"""WAL checkpoints off the write path.

SQLite copies the write-ahead log back into the database file ("checkpoints") inside
the commit that takes the log past `wal_autocheckpoint` pages (1,000 by default), so
the writer pays for it while every other write waits on the write lock. A commit that
touches pages all over an index (a message's push actions: one row per member of the
room, each in its own user's part of the index) writes thousands of pages, and then
nearly every commit checkpoints: measured, half the cost of inserting 1,000 such rows.

So the writer's automatic checkpoint is set far higher, as a safety net only, and this
task checkpoints on its own connection (its own thread) shortly after commits, with
PASSIVE checkpoints that never block the writer or readers. Several commits' pages
are then copied in one go, and a page written by many of them is copied once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3

import aiosqlite

log = logging.getLogger(__name__)

# The writer checkpoints itself only past this many log pages (64 MB with 4 KB pages):
# the log's bound should this task fall behind or fail.
WRITER_CHECKPOINT_PAGES = 16_384
# After a checkpoint the log file is cut back to this size (SQLite otherwise keeps it
# as large as it ever grew).
JOURNAL_SIZE_LIMIT_BYTES = 64 * 1024 * 1024
# How long commits are collected before a checkpoint: the longer, the more pages are
# copied once instead of once per commit, and the more the log holds meanwhile.
CHECKPOINT_DELAY_S = 0.5


class WalCheckpointer:
    """Checkpoints `conn`'s database a moment after each burst of commits."""

    def __init__(self, conn: aiosqlite.Connection, delay_s: float = CHECKPOINT_DELAY_S) -> None:
        self.conn = conn
        self.delay_s = delay_s
        self._committed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.checkpoints = 0  # completed, for tests and curiosity
        # The last checkpoint's (pages in the log, pages of it now in the database).
        self.last: tuple[int, int] = (0, 0)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    def committed(self) -> None:
        """A write transaction committed (called by the writer, on the event loop)."""
        self._committed.set()

    async def _run(self) -> None:
        while True:
            await self._committed.wait()
            await asyncio.sleep(self.delay_s)
            self._committed.clear()
            try:
                await self.checkpoint()
            except (sqlite3.Error, ValueError) as exc:
                # (ValueError: aiosqlite's connection is closed.) The writer's own
                # checkpoint past WRITER_CHECKPOINT_PAGES still bounds the log.
                log.warning("WAL checkpoint failed: %s", exc)

    async def checkpoint(self) -> None:
        """One PASSIVE checkpoint: copies what no reader still needs from the log."""
        rows = list(await self.conn.execute_fetchall("PRAGMA wal_checkpoint(PASSIVE)"))
        self.checkpoints += 1
        if rows:
            self.last = (int(rows[0][1]), int(rows[0][2]))

    async def stop(self) -> None:
        """Checkpoint no more by itself (`checkpoint()` still works)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def close(self) -> None:
        """Stop, and close the connection."""
        await self.stop()
        await self.conn.close()
