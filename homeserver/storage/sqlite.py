"""The SQLite backend (the default): aiosqlite, WAL, one writer, a few readers.

SQLite allows one writer at a time, so all writes go through a single connection guarded
by an `asyncio.Lock`; reads run on separate read-only connections and, thanks to WAL,
never wait for the writer. Before anything is opened for writing the file is inspected
read-only, so a foreign, corrupt or too-new database is refused without being touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import re
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import aiosqlite

from .database import Database, Row, WriteStream, WriteTurn
from .dialect import SQLITE, Dialect
from .errors import IntegrityError, StorageError
from .schema import INTERNAL_TABLES, ForeignKey, Table, quote_ident
from .search import DERIVED_TABLE_PREFIX
from .sqlite_checkpoint import JOURNAL_SIZE_LIMIT_BYTES, WRITER_CHECKPOINT_PAGES, WalCheckpointer

# Statement tracing, on its own logger: set it to DEBUG to see every statement.
SQL_LOG = logging.getLogger("homeserver.storage.sql")

# Written into the SQLite header (PRAGMA application_id) so we know the file is ours.
APPLICATION_ID = int.from_bytes(b"MxHs", "big")
BUSY_TIMEOUT_MS = 10_000


def _translate(exc: sqlite3.Error, sql: str) -> StorageError:
    if isinstance(exc, sqlite3.IntegrityError):
        return IntegrityError(f"{exc} (in: {sql.strip()[:200]})")
    return StorageError(f"{type(exc).__name__}: {exc} (in: {sql.strip()[:200]})")


class SQLiteConnection:
    """One aiosqlite connection behind the `Connection` protocol.

    A statement's latency is mostly its trip to the connection's thread and back (the
    thread's answer waits for the event loop, busy with every other request), and the
    writer's trips happen under the write lock that every writer of the database
    queues on. So trips are saved:
    - `executemany` returns nothing, so it is held back and runs in the trip of the
      next statement of the transaction (or its COMMIT), and BEGIN goes with the first
      trip: a transaction that writes ten tables after one read is two trips (BEGIN
      with the read, the writes with the COMMIT), not thirteen. An error in a held-back
      write surfaces at that next statement, still inside the transaction, which then
      rolls back as before.
    - `execute` reads its row count from the returned cursor; closing a cursor would
      cost another trip (a finished statement holds nothing, sqlite3 frees it).
    - the transaction's last trip (its COMMIT) is queued before the write lock is let
      go, and the next transaction's trips queue behind it (SQLiteDatabase.transaction).
    Trips are functions put on aiosqlite's thread queue (`_tx`, as its own `_execute`
    does, but at once): the one private part of aiosqlite this backend uses, the same
    from 0.19 to 0.22; pyproject pins aiosqlite below 0.23 for it.
    """

    dialect: Dialect = SQLITE

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn
        self._held: list[tuple[str, list[tuple[Any, ...]]]] = []  # executemany, held back
        self._begin_due = False  # BEGIN IMMEDIATE goes with the transaction's first trip

    async def execute(self, sql: str, *args: Any) -> int:
        return await self._trip(sql, args, _rowcount)

    async def executemany(self, sql: str, args: Iterable[Sequence[Any]]) -> None:
        """Held back until the next statement on this connection (see the class)."""
        rows = [tuple(a) for a in args]
        if not rows:
            return
        _trace(sql)
        self._held.append((sql, rows))

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        return await self._trip(sql, args, _fetchall)

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        """The first row. Every caller selects by key or with LIMIT 1, so fetching all
        rows in the one trip costs nothing extra."""
        rows = await self.fetch(sql, *args)
        return rows[0] if rows else None

    async def fetchval(self, sql: str, *args: Any) -> Any:
        row = await self.fetchrow(sql, *args)
        return None if row is None else row[0]

    def begin_with_first_trip(self) -> None:
        """A write transaction starts: its BEGIN IMMEDIATE runs in the trip of its
        first statement (or its COMMIT)."""
        self._begin_due = True

    def drop_held(self) -> None:
        """Forget what has not run yet (its transaction is rolling back)."""
        self._held.clear()
        self._begin_due = False

    async def _trip(self, sql: str, args: Sequence[Any], result: Callable[..., Any]) -> Any:
        """A pending BEGIN, the held-back writes, then `sql`: one trip to the thread."""
        _trace(sql)
        return await _outcome(self._enqueue(self._statements(sql, args, result, commit=False)))

    def commit_soon(self) -> Awaitable[None]:
        """Queue the transaction's last trip (held-back writes and COMMIT) at once, before
        the caller lets the write lock go: the next transaction's trips queue behind it
        on the same thread, so they run after it committed. A failed COMMIT is rolled
        back in the same trip, so that next transaction never finds one left open."""
        _trace("COMMIT")
        return _outcome(self._enqueue(self._statements("COMMIT", (), _rowcount, commit=True)))

    def barrier(self) -> Awaitable[None]:
        """Done once every trip queued before it has run."""
        return _outcome(self._enqueue(lambda: None))

    def _statements(
        self, sql: str, args: Sequence[Any], result: Callable[..., Any], *, commit: bool
    ) -> Callable[[], Any]:
        held, self._held = self._held, []
        begin, self._begin_due = self._begin_due, False
        raw = self._conn._conn  # the sqlite3 connection, used on its own thread only

        def run() -> Any:
            running = "BEGIN IMMEDIATE"
            try:
                if begin:
                    raw.execute(running)
                for running, rows in held:  # noqa: B007 (named in the error)
                    _execute_rows(raw, running, rows)
                running = sql
                return result(raw.execute(_convert(sql), args))
            except sqlite3.Error as exc:
                if commit and raw.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        raw.rollback()
                raise _TripFailed(exc, running) from exc

        return run

    def _enqueue(self, run: Callable[[], Any]) -> asyncio.Future[Any]:
        """Put `run` on the connection's thread queue now (not when a task first runs,
        as aiosqlite's own `_execute` does): the order of trips is the order of calls."""
        self._conn._conn  # noqa: B018 (raises ValueError if the connection is closed)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._conn._tx.put_nowait((future, run))
        return future


# Rows per multi-row INSERT at most (and SQLite's bound on a statement's parameters).
MAX_ROWS_PER_INSERT = 256
MAX_PARAMETERS = 32_766


def _execute_rows(raw: sqlite3.Connection, sql: str, rows: list[tuple[Any, ...]]) -> None:
    """`sql` once per row, on the connection's thread.

    sqlite3's executemany lets go of the GIL around every row's step and must take it
    back for the next: while the event loop's thread is busy that wait is up to the
    interpreter's switch interval (5 ms) per row, measured at 3 us a row with an idle
    loop and over 3 ms with a busy one. So a one-row INSERT ... VALUES is sent as
    multi-row INSERTs instead (one step each), in power-of-two sizes so the statement
    cache keeps the few texts. Other statements run row by row as before."""
    width = _row_width(sql)
    if width is None or len(rows) < 2 or any(len(row) != width for row in rows):
        raw.executemany(_convert(sql), rows)
        return
    most = max(1, min(MAX_ROWS_PER_INSERT, MAX_PARAMETERS // width))
    start = 0
    while start < len(rows):
        size = 1 << (min(most, len(rows) - start).bit_length() - 1)
        chunk = rows[start : start + size]
        raw.execute(_multirow(sql, width, size), [value for row in chunk for value in row])
        start += size


_PARAMETER = re.compile(r"\$(\d+)")


_CONFLICT = re.compile(r"\s(?=ON\s+CONFLICT\b)")


def _split_insert(sql: str) -> tuple[str, str, str, str]:
    """(INSERT ... , "VALUES", the row, " ON CONFLICT ..." or "")."""
    head, *conflict = _CONFLICT.split(sql, maxsplit=1)
    insert, values, row = head.rpartition("VALUES")
    return insert, values, row, " " + conflict[0] if conflict else ""


@functools.lru_cache(maxsize=1024)
def _row_width(sql: str) -> int | None:
    """The parameters of `sql`'s one VALUES row if it is a plain INSERT ... VALUES (...)
    [ON CONFLICT ...] with every parameter in that row (and no quoted text, where a
    `$n` would not be a parameter), else None."""
    insert, values, row, conflict = _split_insert(sql)
    row = row.strip()
    if (
        not values
        or not insert.lstrip().upper().startswith("INSERT")
        or not (row.startswith("(") and row.endswith(")"))
        or "'" in row
        or '"' in row
        or _PARAMETER.search(insert)
        or _PARAMETER.search(conflict)
    ):
        return None
    numbers = {int(n) for n in _PARAMETER.findall(row)}
    if not numbers or numbers != set(range(1, len(numbers) + 1)):
        return None
    return len(numbers)


@functools.lru_cache(maxsize=1024)
def _multirow(sql: str, width: int, count: int) -> str:
    """`sql` inserting `count` rows: row k's parameters renumbered past row k-1's."""
    insert, values, row, conflict = _split_insert(sql)

    def renumbered(k: int) -> str:
        return _PARAMETER.sub(lambda m: f"${int(m.group(1)) + k * width}", row.strip())

    rows = ", ".join(renumbered(k) for k in range(count))
    return _convert(f"{insert}{values} {rows}{conflict}")


async def _outcome(trip: asyncio.Future[Any]) -> Any:
    try:
        return await trip
    except _TripFailed as failed:
        raise _translate(failed.error, failed.sql) from failed.error


class _TripFailed(Exception):
    """Which statement of a trip failed (for the error's message)."""

    def __init__(self, error: sqlite3.Error, sql: str) -> None:
        super().__init__(str(error))
        self.error = error
        self.sql = sql


def _rowcount(cursor: sqlite3.Cursor) -> int:
    return cursor.rowcount


def _fetchall(cursor: sqlite3.Cursor) -> list[Row]:
    return cursor.fetchall()


def _trace(sql: str) -> None:
    if SQL_LOG.isEnabledFor(logging.DEBUG):
        SQL_LOG.debug("[SQL] %s", " ".join(sql.split())[:2000])


@functools.lru_cache(maxsize=4096)
def _convert(sql: str) -> str:
    """Placeholder rewriting, once per distinct statement text."""
    return SQLITE.convert(sql)


def inspect_sqlite_file(path: str) -> set[int] | None:
    """Look at a database file read-only: None if new/empty, else its applied versions.

    Raises StorageError if the file is not an SQLite database or not one of ours. Opens
    with `mode=ro` so nothing (not even the journal mode) is changed.
    """
    if path == ":memory:" or not os.path.exists(path) or os.path.getsize(path) == 0:
        return None
    # Without a -wal file everything is in the main file: `immutable` reads it without
    # creating -wal/-shm side files. With one (unclean shutdown, or in use), plain `ro`.
    wal_present = os.path.exists(path + "-wal")
    uri = Path(path).resolve().as_uri() + ("?mode=ro" if wal_present else "?immutable=1")
    try:
        conn = sqlite3.connect(uri, uri=True)
    except sqlite3.Error as exc:
        raise StorageError(f"cannot open database file {path!r}: {exc}") from exc
    try:
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if app_id != APPLICATION_ID:
            if not tables and app_id == 0:
                return None
            raise StorageError(
                f"{path!r} is an SQLite database but not a homeserver database "
                f"(application_id={app_id}, tables: {', '.join(sorted(tables)[:8]) or 'none'}); "
                "refusing to touch it"
            )
        if "schema_version" not in tables:
            return set()
        return {int(r[0]) for r in conn.execute("SELECT version FROM schema_version")}
    except sqlite3.DatabaseError as exc:
        raise StorageError(
            f"{path!r} is not a usable SQLite database ({exc}); refusing to touch it"
        ) from exc
    finally:
        conn.close()


class SQLiteDatabase(Database):
    """SQLite in WAL mode: one locked write connection, a pool of read connections."""

    dialect = SQLITE

    def __init__(
        self,
        path: str,
        writer: aiosqlite.Connection,
        readers: list[aiosqlite.Connection],
        checkpointer: WalCheckpointer | None = None,
    ) -> None:
        self.path = path
        self.checkpointer = checkpointer
        self._writer = SQLiteConnection(writer)
        self._raw_writer = writer
        self._raw_readers = readers
        self._write_lock = asyncio.Lock()
        self._readers: asyncio.Queue[SQLiteConnection] = asyncio.Queue()
        for r in readers:
            self._readers.put_nowait(SQLiteConnection(r))
        self._closed = False

    @classmethod
    async def open(
        cls,
        path: str,
        *,
        read_connections: int = 2,
        check: Callable[[set[int] | None], None] | None = None,
    ) -> SQLiteDatabase:
        """Inspect `path` read-only (and run `check` on what was found), then open it."""
        existing = await asyncio.to_thread(inspect_sqlite_file, path)
        if check is not None:
            check(existing)
        writer = await _connect(path)
        readers: list[aiosqlite.Connection] = []
        checkpointer: WalCheckpointer | None = None
        try:
            await _pragmas(writer, path, write=True)
            if existing is None:
                await writer.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            if path != ":memory:":
                for _ in range(max(0, read_connections)):
                    reader = await _connect(path)
                    readers.append(reader)
                    await _pragmas(reader, path, write=False)
                checkpointer = WalCheckpointer(await _connect(path))
                await checkpointer.conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        except BaseException:
            for c in [*readers, writer, *([checkpointer.conn] if checkpointer else [])]:
                await c.close()
            raise
        if checkpointer is not None:
            checkpointer.start()
        return cls(path, writer, readers, checkpointer)

    @contextlib.asynccontextmanager
    async def transaction(
        self, *, turn: WriteTurn = "alone", stream: WriteStream | None = None
    ) -> AsyncIterator[SQLiteConnection]:
        # One process: its write lock serialises everything; the contract is checked
        # all the same, so a mistake shows here as on PostgreSQL.
        if stream is not None and turn != "alongside":
            raise ValueError(f"a {stream} transaction is written alongside, not {turn}")
        asked = time.perf_counter()
        async with self._write_lock:
            self._check_open()
            conn = self._writer
            started = time.perf_counter()
            try:
                conn.begin_with_first_trip()
                yield conn
            except BaseException:
                # Also reached when the task is cancelled while a trip is queued (a
                # client that went away): that trip still runs on the thread, BEGIN
                # included, and this ROLLBACK is queued after it, so the writer is never
                # left inside a transaction nobody owns.
                conn.drop_held()
                with contextlib.suppress(Exception):
                    await self._raw_writer.rollback()
                self._observe(asked, started)
                raise
            # The lock is let go as soon as the COMMIT is queued, not when the event
            # loop gets round to hearing it ran (milliseconds under load, during which
            # every writer of the server waited): later transactions queue behind it.
            committed = conn.commit_soon()
        try:
            await committed
        finally:
            self._observe(asked, started)
        if self.checkpointer is not None:
            self.checkpointer.committed()

    def _observe(self, asked: float, started: float) -> None:
        if self.observer is not None:
            self.observer("write", started - asked, time.perf_counter() - started)

    async def write_barrier(self) -> None:
        async with self._write_lock:
            done = self._writer.barrier()
        await done

    @contextlib.asynccontextmanager
    async def _reader(self) -> AsyncIterator[SQLiteConnection]:
        self._check_open()
        if not self._raw_readers:  # ":memory:": one connection serves everything.
            async with self._write_lock:
                yield self._writer
            return
        asked = time.perf_counter()
        conn = await self._readers.get()
        started = time.perf_counter()
        try:
            yield conn
        finally:
            self._readers.put_nowait(conn)
            if self.observer is not None:
                self.observer("read", started - asked, time.perf_counter() - started)

    async def describe_schema(self) -> list[Table]:
        async with self._reader() as conn:
            names = [
                r[0]
                for r in await conn.fetch(
                    "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
                )
                if r[0] not in INTERNAL_TABLES and not r[0].startswith(DERIVED_TABLE_PREFIX)
            ]
            tables = []
            for name in names:
                info = await conn.fetch(f"PRAGMA table_info({quote_ident(name)})")
                fks = await conn.fetch(f"PRAGMA foreign_key_list({quote_ident(name)})")
                tables.append(_table_from_pragmas(name, info, fks))
        return tables

    async def set_trace_callback(self, callback: Callable[[str], None] | None) -> None:
        """Report every statement run on every connection (tests use it to check plans)."""
        for c in [self._raw_writer, *self._raw_readers]:
            await c.set_trace_callback(callback)  # type: ignore[arg-type]  # None clears it

    def _check_open(self) -> None:
        if self._closed:
            raise StorageError("database is closed")

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.checkpointer is not None:
            await self.checkpointer.close()
        async with self._write_lock:
            for r in self._raw_readers:
                await r.close()
            await self._raw_writer.close()


def _table_from_pragmas(name: str, info: list[Row], fks: list[Row]) -> Table:
    """A Table from `PRAGMA table_info` (cid, name, type, notnull, default, pk) and
    `PRAGMA foreign_key_list` (id, seq, table, from, to, ...) rows."""
    columns = tuple(r[1] for r in info)
    pk = tuple(r[1] for r in sorted((r for r in info if r[5]), key=lambda r: r[5]))
    grouped: dict[int, list[Row]] = {}
    for r in fks:
        grouped.setdefault(int(r[0]), []).append(r)
    foreign = tuple(
        ForeignKey(
            tuple(r[3] for r in sorted(rows, key=lambda r: r[1])),
            rows[0][2],
            tuple(r[4] or r[3] for r in sorted(rows, key=lambda r: r[1])),
        )
        for _, rows in sorted(grouped.items())
    )
    return Table(
        name,
        columns,
        types={r[1]: str(r[2]).lower() for r in info},
        primary_key=pk,
        foreign_keys=foreign,
    )


async def _connect(path: str) -> aiosqlite.Connection:
    try:
        conn = await aiosqlite.connect(path, isolation_level=None)
    except sqlite3.Error as exc:
        raise StorageError(f"cannot open database {path!r}: {exc}") from exc
    conn.row_factory = sqlite3.Row
    return conn


async def _pragmas(conn: aiosqlite.Connection, path: str, *, write: bool) -> None:
    await conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    await conn.execute("PRAGMA foreign_keys = ON")
    if write and path != ":memory:":
        row = list(await conn.execute_fetchall("PRAGMA journal_mode = WAL"))[0]
        mode = row[0]
        if str(mode).lower() != "wal":
            raise StorageError(f"could not switch {path!r} to WAL mode (got {mode!r})")
        # Checkpoints run beside the writer (sqlite_checkpoint.py); this is the bound.
        await conn.execute(f"PRAGMA wal_autocheckpoint = {WRITER_CHECKPOINT_PAGES}")
        await conn.execute(f"PRAGMA journal_size_limit = {JOURNAL_SIZE_LIMIT_BYTES}")
    # FULL: a commit reaches the disk before we answer (about 0.2 ms here), so an
    # acknowledged event survives a power cut, not only a crash of the process.
    await conn.execute("PRAGMA synchronous = FULL")
    if not write:
        await conn.execute("PRAGMA query_only = ON")
