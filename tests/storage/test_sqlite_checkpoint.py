"""WAL checkpoints run beside the writer, not inside its commits (sqlite_checkpoint.py).

What is checked is what an operator and the write path see: the writer's commits do
not copy the log into the database file (the database file does not grow while
commits pile up thousands of log pages), the checkpointer does it shortly after, the
log is cut back afterwards, and writers, readers and checkpoints running at once lose
nothing and leave a sound file.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from pathlib import Path

from homeserver.storage.sqlite import SQLiteDatabase
from homeserver.storage.sqlite_checkpoint import (
    JOURNAL_SIZE_LIMIT_BYTES,
    WRITER_CHECKPOINT_PAGES,
)

ROW = "x" * 3000  # about a page per row: page counts follow row counts


async def _open(tmp_path: Path, delay_s: float = 0.5) -> SQLiteDatabase:
    db = await SQLiteDatabase.open(str(tmp_path / "hs.db"))
    assert db.checkpointer is not None
    db.checkpointer.delay_s = delay_s  # before the first commit wakes it
    await db.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT NOT NULL)")
    return db


async def _write(db: SQLiteDatabase, start: int, rows: int, per_commit: int = 50) -> None:
    for first in range(start, start + rows, per_commit):
        async with db.transaction() as conn:
            await conn.executemany(
                "INSERT INTO t (k, v) VALUES ($1, $2)",
                [(k, ROW) for k in range(first, min(first + per_commit, start + rows))],
            )


async def test_commits_leave_checkpoints_to_the_checkpointer(tmp_path: Path) -> None:
    db = await _open(tmp_path)
    try:
        assert db.checkpointer is not None
        assert await db.fetchval("PRAGMA wal_autocheckpoint") == 1000  # readers' default
        async with db.transaction() as conn:
            assert await conn.fetchval("PRAGMA wal_autocheckpoint") == WRITER_CHECKPOINT_PAGES
            assert await conn.fetchval("PRAGMA journal_size_limit") == JOURNAL_SIZE_LIMIT_BYTES
        await db.checkpointer.stop()  # nothing runs by itself from here on
        await db.checkpointer.checkpoint()
        file = tmp_path / "hs.db"
        before = file.stat().st_size
        # 3,000 pages: three times SQLite's default point for the writer to checkpoint.
        await _write(db, 0, 3000)
        wal = Path(str(file) + "-wal")
        assert file.stat().st_size == before, "the writer checkpointed in a commit"
        assert wal.stat().st_size > 3000 * 4096

        await db.checkpointer.checkpoint()
        log_pages, copied = db.checkpointer.last
        assert log_pages >= 3000 and copied == log_pages
        assert file.stat().st_size >= before + 3000 * 3000
        # The next commit starts the log again from its beginning.
        await _write(db, 3000, 1)
        await db.checkpointer.checkpoint()
        assert db.checkpointer.last[0] < 10
        assert await db.fetchval("SELECT COUNT(*) FROM t") == 3001
    finally:
        await db.close()


async def test_the_checkpointer_runs_shortly_after_commits(tmp_path: Path) -> None:
    db = await _open(tmp_path, delay_s=0.05)
    try:
        assert db.checkpointer is not None
        done = db.checkpointer.checkpoints
        await _write(db, 0, 200)
        for _ in range(200):
            if db.checkpointer.checkpoints > done and db.checkpointer.last[1] >= 200:
                break
            await asyncio.sleep(0.05)
        assert db.checkpointer.checkpoints > done
        log_pages, copied = db.checkpointer.last
        assert copied == log_pages >= 200
    finally:
        await db.close()


async def test_writers_readers_and_checkpoints_at_once_lose_nothing(tmp_path: Path) -> None:
    """Eight writers and four readers for a while, checkpoints every few commits: every
    acknowledged row is there, readers always see whole transactions (each commits a
    pair of rows), and the file passes SQLite's integrity check after a reopen."""
    db = await _open(tmp_path, delay_s=0.01)
    assert db.checkpointer is not None
    stop = asyncio.Event()
    acknowledged: list[int] = []
    torn: list[int] = []

    async def writer(w: int) -> None:
        for i in range(60):
            k = (w * 1000 + i) * 2
            async with db.transaction() as conn:
                await conn.execute("INSERT INTO t (k, v) VALUES ($1, $2)", k, ROW)
                await conn.execute("INSERT INTO t (k, v) VALUES ($1, $2)", k + 1, ROW)
            acknowledged.append(k)

    async def reader() -> None:
        while not stop.is_set():
            count = await db.fetchval("SELECT COUNT(*) FROM t")
            if count % 2:
                torn.append(count)
            await asyncio.sleep(0)

    readers = [asyncio.create_task(reader()) for _ in range(4)]
    try:
        await asyncio.gather(*(writer(w) for w in range(8)))
    finally:
        stop.set()
        await asyncio.gather(*readers)
    checkpoints = db.checkpointer.checkpoints
    await db.close()
    assert checkpoints > 0
    assert not torn
    conn = sqlite3.connect(tmp_path / "hs.db")
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        keys = {r[0] for r in conn.execute("SELECT k FROM t")}
    finally:
        conn.close()
    assert keys == {k + d for k in acknowledged for d in (0, 1)}
    assert len(acknowledged) == 480
    # Closing the last connection checkpointed and removed the log.
    assert not os.path.exists(str(tmp_path / "hs.db") + "-wal")
