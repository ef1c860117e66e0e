"""PostgreSQL-only behaviour of the asyncpg backend (needs HS_TEST_POSTGRES_DSN)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

from homeserver.storage import StorageError, UnstorableValueError, open_database
from homeserver.storage.errors import DatabaseUnavailableError
from homeserver.storage.postgres import connect_kwargs, rowcount

from .conftest import POSTGRES_SKIP_REASON, drop_postgres_schema, postgres_test_config


def test_rowcount_parses_status_strings() -> None:
    assert rowcount("UPDATE 3") == 3
    assert rowcount("INSERT 0 2") == 2
    assert rowcount("DELETE 0") == 0
    assert rowcount("CREATE TABLE") == 0
    assert rowcount("") == 0


def test_connect_kwargs_takes_synapse_args() -> None:
    kwargs = connect_kwargs(
        {
            "user": "synapse",
            "password": "pw",
            "database": "matrix",
            "host": "db.internal",
            "port": 5433,
            "cp_min": 5,
            "cp_max": 10,
        }
    )
    assert kwargs == {
        "user": "synapse",
        "password": "pw",
        "database": "matrix",
        "host": "db.internal",
        "port": 5433,
    }
    assert connect_kwargs({"dbname": "m", "schema": "s1"}) == {
        "database": "m",
        "server_settings": {"search_path": "s1"},
    }
    with pytest.raises(StorageError, match="schema"):
        connect_kwargs({"schema": 'x"; DROP'})


@pytest.fixture
async def pg_config() -> AsyncIterator[dict[str, Any]]:
    config = postgres_test_config()
    if config is None:
        pytest.skip(POSTGRES_SKIP_REASON)
    try:
        yield config
    finally:
        await drop_postgres_schema(config)


async def test_refuses_foreign_schema(pg_config: dict[str, Any]) -> None:
    db = await open_database(pg_config, migrate=False)
    await db.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
    await db.close()
    with pytest.raises(StorageError, match="customers"):
        await open_database(pg_config)


async def test_refuses_newer_schema_and_reopens_own(pg_config: dict[str, Any]) -> None:
    db = await open_database(pg_config)
    n = await db.fetchval("SELECT COUNT(*) FROM schema_version")
    await db.close()
    db = await open_database(pg_config)  # reopening our own schema migrates nothing
    assert await db.fetchval("SELECT COUNT(*) FROM schema_version") == n
    await db.execute(
        "INSERT INTO schema_version (version, name, applied_ts) VALUES ($1, $2, $3)",
        9999,
        "future",
        0,
    )
    await db.close()
    with pytest.raises(StorageError, match="9999"):
        await open_database(pg_config)


async def test_sqlite_style_values_are_converted(pg_config: dict[str, Any]) -> None:
    db = await open_database(pg_config, migrate=False)
    try:
        await db.execute("CREATE TABLE t (id BIGINT PRIMARY KEY, flag BOOLEAN, label TEXT)")
        # 1/0 for a BOOLEAN, a str for a BIGINT, an int for TEXT: what SQLite accepts.
        assert await db.execute("INSERT INTO t VALUES ($1, $2, $3)", "7", 1, 42) == 1
        await db.executemany("INSERT INTO t VALUES ($1, $2, $3)", [(8, 0, "x"), (9, True, 5)])
        rows = await db.fetch("SELECT id, flag, label FROM t ORDER BY id")
        assert [(r["id"], r[1], r["label"]) for r in rows] == [
            (7, True, "42"),
            (8, False, "x"),
            (9, True, "5"),
        ]
        assert await db.execute("UPDATE t SET flag = $1 WHERE id > $2", 0, 7) == 2
        assert await db.fetchval("SELECT COUNT(*) FROM t WHERE flag") == 1
    finally:
        await db.close()


async def test_nul_in_text_finds_nothing_and_is_refused_on_write(
    pg_config: dict[str, Any],
) -> None:
    db = await open_database(pg_config, migrate=False)
    try:
        await db.execute("CREATE TABLE t (k TEXT PRIMARY KEY, n BIGINT)")
        await db.execute("INSERT INTO t VALUES ($1, $2)", "a", 1)
        assert await db.fetchrow("SELECT n FROM t WHERE k = $1", "a\x00") is None
        assert await db.fetch("SELECT n FROM t WHERE k = $1", "\x00") == []
        assert await db.fetchval("SELECT n FROM t WHERE k = $1", "a\x00") is None
        with pytest.raises(UnstorableValueError):
            await db.execute("INSERT INTO t VALUES ($1, $2)", "b\x00", 2)
        # A write that returns rows is a write: refused, not "found nothing" (that
        # dropped a user's abuse report and answered 500 on PostgreSQL).
        for fetch in (db.fetchval, db.fetchrow, db.fetch):
            with pytest.raises(UnstorableValueError):
                await fetch("INSERT INTO t VALUES ($1, $2) RETURNING n", "c\x00", 3)
            with pytest.raises(UnstorableValueError):
                await fetch("UPDATE t SET k = $1 WHERE k = 'a' RETURNING n", "d\x00")
        assert await db.fetchval("SELECT COUNT(*) FROM t") == 1
        assert await db.fetchrow("SELECT n FROM t WHERE k = $1 FOR UPDATE", "a\x00") is None
        # A server-side data error inside a transaction is not retried, and rolls back.
        with pytest.raises(StorageError, match="out of range"):
            async with db.transaction() as conn:
                await conn.execute("UPDATE t SET n = $1 WHERE k = $2", 5, "a")
                await conn.execute("UPDATE t SET n = n * $1 WHERE k = $2", 2**62, "a")
        assert await db.fetchval("SELECT n FROM t WHERE k = $1", "a") == 1
    finally:
        await db.close()


async def test_a_cancelled_write_leaves_its_pooled_connection_clean(
    pg_config: dict[str, Any],
) -> None:
    """Pool connections go back without asyncpg's reset statement (PooledConnection):
    a write cancelled inside its transaction (a client gone mid-request) must still
    leave nothing behind on the one pooled connection: its row rolled back, the
    deployment's write lock free for another process, the schema still on the path."""
    config = {**pg_config, "args": {**pg_config["args"], "cp_min": 1, "cp_max": 1}}
    db = await open_database(config)
    other = await open_database(config, migrate=False)
    locks = [db.share_writes(), other.share_writes()]  # type: ignore[attr-defined]
    try:
        await db.execute("CREATE TABLE cancelled (x INTEGER)")
        inside = asyncio.Event()

        async def write() -> None:
            async with db.transaction() as conn:
                await conn.execute("INSERT INTO cancelled VALUES (1)")
                inside.set()
                await asyncio.sleep(3600)

        task = asyncio.create_task(write())
        await inside.wait()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        assert await db.fetchval("SELECT COUNT(*) FROM cancelled") == 0
        async with asyncio.timeout(5), other.transaction() as conn:
            await conn.execute("INSERT INTO cancelled VALUES (2)")
        async with asyncio.timeout(5), db.transaction() as conn:
            await conn.execute("INSERT INTO cancelled VALUES (3)")
        assert await db.fetchval("SELECT SUM(x) FROM cancelled") == 5
    finally:
        for lock in locks:
            await lock.close()
        await other.close()
        await db.close()


class _Proxy:
    """A TCP proxy on loopback in front of PostgreSQL, to cut: `stop` closes every
    connection through it and refuses new ones (a server restarting), `start` serves
    again on the same port."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.transport.abort()
        self._writers.clear()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self._writers += [writer, up_writer]

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()

        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))


async def test_a_database_that_goes_away_is_unavailable_not_an_error(
    pg_config: dict[str, Any],
) -> None:
    """While PostgreSQL restarts, a pooled connection breaks mid-use and the pool's new
    connection is refused or reset (an OSError from asyncpg's connect): every call says
    DatabaseUnavailableError (a 503 to retry, a push batch retried), never another
    error (a 500, a push batch dropped: the unread count lost in CI); and once the
    server is back the same pool serves again."""
    url = urlsplit(pg_config["args"]["dsn"])
    proxy = _Proxy(url.hostname or "127.0.0.1", url.port or 5432)
    await proxy.start()
    dsn = urlunsplit(url._replace(netloc=f"{url.username}:{url.password}@127.0.0.1:{proxy.port}"))
    config = {**pg_config, "args": {**pg_config["args"], "dsn": dsn, "cp_min": 2, "cp_max": 2}}
    db = await open_database(config, migrate=False)
    try:
        await db.execute("CREATE TABLE kept (x INTEGER)")
        assert await db.fetchval("SELECT 1") == 1
        await proxy.stop()

        async def write() -> None:
            async with db.transaction() as conn:
                await conn.execute("INSERT INTO kept VALUES (1)")

        calls = [
            lambda: db.fetchval("SELECT 1"),
            lambda: db.fetch("SELECT x FROM kept"),
            lambda: db.execute("INSERT INTO kept VALUES (2)"),
            write,
        ]
        for call in calls * 3:  # broken pooled connections first, then refused connects
            with pytest.raises(DatabaseUnavailableError):
                await call()
        await proxy.start()
        for _ in range(50):
            with contextlib.suppress(DatabaseUnavailableError):
                await write()
                break
            await asyncio.sleep(0.1)
        assert await db.fetchval("SELECT COUNT(*) FROM kept") == 1
    finally:
        await db.close()
        with contextlib.suppress(Exception):
            await proxy.stop()
