"""Migrations: applied once in order, recorded, atomic; foreign/corrupt/newer DBs refused."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from homeserver.storage import Connection, StorageError, open_database
from homeserver.storage.migrate import Migration, discover_migrations, run_migrations


def _config(path: Path) -> dict:
    return {"name": "sqlite3", "args": {"database": str(path)}}


def test_core_migration_is_first_and_numbers_are_unique() -> None:
    migrations = discover_migrations()
    assert migrations[0].version == 1 and migrations[0].name == "core"
    versions = [m.version for m in migrations]
    assert versions == sorted(set(versions))


async def test_empty_database_gets_every_migration(tmp_path: Path) -> None:
    db = await open_database(_config(tmp_path / "new.db"))
    try:
        rows = await db.fetch("SELECT version, name FROM schema_version ORDER BY version")
        assert [(r[0], r[1]) for r in rows] == [(m.version, m.name) for m in discover_migrations()]
        tables = {r[0] for r in await db.fetch("SELECT name FROM sqlite_master WHERE type='table'")}
        assert {"events", "rooms", "state_groups", "users", "federation_outbox"} <= tables
        # Re-running is a no-op.
        assert await run_migrations(db) == []
    finally:
        await db.close()
    db = await open_database(_config(tmp_path / "new.db"))
    await db.close()


async def test_pending_migrations_applied_in_order_and_atomically(tmp_path: Path) -> None:
    db = await open_database(_config(tmp_path / "m.db"), migrate=False)
    calls: list[str] = []

    async def py_upgrade(conn: Connection) -> None:
        calls.append(conn.dialect.name)
        await conn.execute("INSERT INTO t (x) VALUES ($1)", 42)

    try:
        base = [
            Migration(1, "one", sql="CREATE TABLE t (x INTEGER);\nINSERT INTO t VALUES (1);"),
            Migration(3, "three", upgrade=py_upgrade),
        ]
        assert await run_migrations(db, base) == [1, 3]
        # A helper adds 0002 later: it is still applied, after the fact.
        later = [*base, Migration(2, "two", sql="INSERT INTO t VALUES (2);")]
        later.sort(key=lambda m: m.version)
        assert await run_migrations(db, later) == [2]
        assert [r[0] for r in await db.fetch("SELECT x FROM t ORDER BY x")] == [1, 2, 42]
        assert calls == ["sqlite"]

        broken = [
            *later,
            Migration(4, "broken", sql="CREATE TABLE u (y INT);\nINSERT INTO nope VALUES (1);"),
        ]
        with pytest.raises(StorageError, match="0004_broken"):
            await run_migrations(db, broken)
        # Nothing of the failed migration remains, and it is not recorded.
        assert await db.fetchval("SELECT name FROM sqlite_master WHERE name = 'u'") is None
        assert await db.fetchval("SELECT COUNT(*) FROM schema_version WHERE version = 4") == 0
    finally:
        await db.close()


def _write_foreign_sqlite(path: Path) -> None:
    """Something like a Synapse database: it even has a schema_version table."""
    conn = sqlite3.connect(path)
    conn.executescript(
        """
        CREATE TABLE schema_version (Lock CHAR(1) NOT NULL DEFAULT 'X' UNIQUE,
                                     version INTEGER NOT NULL, upgraded BOOL NOT NULL);
        INSERT INTO schema_version (version, upgraded) VALUES (83, 1);
        CREATE TABLE events (stream_ordering INTEGER PRIMARY KEY, event_id TEXT);
        """
    )
    conn.commit()
    conn.close()


async def _assert_refused(path: Path, match: str) -> None:
    before = path.read_bytes()
    siblings_before = sorted(os.listdir(path.parent))
    with pytest.raises(StorageError, match=match):
        await open_database(_config(path))
    assert path.read_bytes() == before
    assert sorted(os.listdir(path.parent)) == siblings_before


async def test_refuses_foreign_sqlite_database(tmp_path: Path) -> None:
    path = tmp_path / "homeserver.db"
    _write_foreign_sqlite(path)
    await _assert_refused(path, "not a homeserver database")


async def test_refuses_random_bytes(tmp_path: Path) -> None:
    path = tmp_path / "junk.db"
    path.write_bytes(os.urandom(8192))
    await _assert_refused(path, "not a usable SQLite database|cannot open")


async def test_refuses_text_file(tmp_path: Path) -> None:
    path = tmp_path / "config.db"
    path.write_text("server_name: example.org\n" * 100)
    await _assert_refused(path, "not a usable SQLite database|cannot open")


async def test_refuses_newer_schema(tmp_path: Path) -> None:
    path = tmp_path / "hs.db"
    db = await open_database(_config(path))
    await db.execute(
        "INSERT INTO schema_version (version, name, applied_ts) VALUES (9999, 'future', 0)"
    )
    await db.close()
    await _assert_refused(path, "9999.*newer version")


async def test_empty_file_is_initialised(tmp_path: Path) -> None:
    path = tmp_path / "empty.db"
    path.touch()
    db = await open_database(_config(path))
    try:
        assert await db.fetchval("SELECT COUNT(*) FROM schema_version") >= 1
    finally:
        await db.close()


async def test_unknown_engine_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="unsupported database engine"):
        await open_database({"name": "oracle", "args": {}})
