"""The one async database interface every store is written against.

SQL is written once with `$1, $2` placeholders (the PostgreSQL spelling); each backend
converts it through its `Dialect`. Rows support index and column-name access (`sqlite3.Row`
and asyncpg's `Record` both do). Writes are serialised: `transaction()` hands out the one
write connection; plain `execute` is a one-statement transaction. Reads outside a
transaction may run concurrently on separate read connections and see committed data only.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Literal, Protocol

from .dialect import Dialect
from .errors import StorageError
from .schema import Table

Row = Any  # sqlite3.Row / asyncpg.Record: row[0] and row["column"] both work.
# Which other processes' write transactions one may run beside (Database.transaction).
WriteTurn = Literal["alone", "alongside", "own"]
# The streams whose writes, written alongside, take a lock of their own
# (Database.transaction's `stream`): a fixed set, so the metric's labels are bounded.
WriteStream = Literal["receipts", "to_device", "account_data", "device_lists", "federation_outbox"]


class TransactionObserver(Protocol):
    """Told about every transaction ("write") and read ("read"): how long it waited
    for its connection and how long it then took, in seconds (the metrics); in a
    deployment also how long each write waited for its turn at the deployment's write
    lock ("turn alone", "turn alongside", or the stream's name for a stream's
    transaction, "turn receipts" say: `waited_s`, `took_s` 0)."""

    def __call__(self, kind: str, waited_s: float, took_s: float) -> None: ...


class Connection(Protocol):
    """What a store may do with a connection: the same calls as `Database`."""

    dialect: Dialect

    async def execute(self, sql: str, *args: Any) -> int:
        """Run one statement; return the number of rows it changed."""
        ...

    async def executemany(self, sql: str, args: Iterable[Sequence[Any]]) -> None:
        """Run one statement per row of `args`. A backend may hold it back until the
        transaction's next statement or its commit (SQLite does: one trip for all of
        them), so its error can surface there; either way the transaction rolls back."""
        ...

    async def fetch(self, sql: str, *args: Any) -> list[Row]: ...

    async def fetchrow(self, sql: str, *args: Any) -> Row | None: ...

    async def fetchval(self, sql: str, *args: Any) -> Any: ...


class Database(abc.ABC):
    """A database handle: reads, one-statement writes and multi-statement transactions."""

    dialect: Dialect
    observer: TransactionObserver | None = None

    @abc.abstractmethod
    def transaction(
        self, *, turn: WriteTurn = "alone", stream: WriteStream | None = None
    ) -> AbstractAsyncContextManager[Connection]:
        """Open a write transaction: commit on normal exit, roll back on any exception.

        Only one transaction of this process runs at a time. With several writing
        processes (PostgresDatabase.share_writes), `turn` says which of theirs it may
        run beside: "alone" (the default) none; "alongside" the other "alongside" ones
        (never an "alone" one), for writes that neither allocate stream positions nor
        depend on each other's order; "own" all of them (an event transaction, which
        claims its stream positions from storage/event_positions.py). With `stream`
        (and turn "alongside"): a transaction that allocates positions of that one
        stream as MAX + 1 (or from the stream's sequence) and writes nothing another
        stream's transaction writes; it runs beside other streams' transactions and
        the "alongside" ones, and in turn with its own stream's, so that stream's
        positions stay unique and commit in order. Do not call the `Database` itself
        from inside one (use the yielded connection) or the read may not see the
        uncommitted writes.
        """

    async def write_barrier(self) -> None:
        """Return once every write transaction begun before the call has ended (the
        replication bus publishes invalidations only after their writes committed)."""
        lock = getattr(self, "_write_lock", None)
        if lock is not None:
            async with lock:
                pass

    @abc.abstractmethod
    def _reader(self) -> AbstractAsyncContextManager[Connection]:
        """A connection for one read (committed data only); returned when done."""

    # One-statement writes are transactions of their own; reads borrow a reader. The
    # backends differ only in how they provide those two.

    async def execute(self, sql: str, *args: Any) -> int:
        async with self.transaction() as conn:
            return await conn.execute(sql, *args)

    async def executemany(self, sql: str, args: Iterable[Sequence[Any]]) -> None:
        async with self.transaction() as conn:
            await conn.executemany(sql, args)

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        async with self._reader() as conn:
            return await conn.fetch(sql, *args)

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        async with self._reader() as conn:
            return await conn.fetchrow(sql, *args)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        async with self._reader() as conn:
            return await conn.fetchval(sql, *args)

    @abc.abstractmethod
    async def describe_schema(self) -> list[Table]:
        """Every application table with its columns, keys and foreign keys, by name."""

    @abc.abstractmethod
    async def close(self) -> None: ...

    async def __aenter__(self) -> Database:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


# Synapse's spelling first; the others are accepted for convenience.
POSTGRES_NAMES = ("psycopg2", "postgres", "postgresql", "psycopg")


def _config_parts(config: Any) -> tuple[str, Mapping[str, Any]]:
    """Accept a config object with `.name`/`.args` or a plain mapping with those keys."""
    if isinstance(config, Mapping):
        return str(config.get("name", "sqlite3")), config.get("args") or {}
    return str(getattr(config, "name", "sqlite3")), getattr(config, "args", None) or {}


async def open_database(
    config: Any, *, migrate: bool = True, observer: TransactionObserver | None = None
) -> Database:
    """Open (and by default migrate) the database a `DatabaseConfig`-like object names.

    `config.name` is "sqlite3" (`args.database` is the file path, ":memory:" allowed) or
    "psycopg2"/"postgres" (`args`: Synapse's user, password, database, host, port,
    cp_min, cp_max, or a `dsn`; see `postgres.connect_kwargs`).
    """
    from .migrate import check_applied_versions, discover_migrations, run_migrations

    migrations = discover_migrations()
    name, args = _config_parts(config)
    if name in ("sqlite3", "sqlite"):
        from .sqlite import SQLiteDatabase

        path = args.get("database")
        if not path:
            raise StorageError("database.args.database (the SQLite file path) is required")
        db: Database = await SQLiteDatabase.open(
            str(path),
            read_connections=int(args.get("read_connections", 2)),
            check=lambda applied: check_applied_versions(applied, migrations),
        )
    elif name in POSTGRES_NAMES:
        try:
            from .postgres import PostgresDatabase
        except ImportError as exc:
            raise StorageError(
                f"database.name {name!r} needs asyncpg: pip install 'homeserver[postgres]'"
            ) from exc
        db = await PostgresDatabase.open(
            args, check=lambda applied: check_applied_versions(applied, migrations)
        )
    else:
        raise StorageError(
            f"unsupported database engine {name!r} (supported: sqlite3, psycopg2/postgres)"
        )
    db.observer = observer
    if migrate:
        try:
            await run_migrations(db, migrations)
        except BaseException:
            await db.close()
            raise
    return db


__all__ = [
    "POSTGRES_NAMES",
    "Connection",
    "Database",
    "Row",
    "TransactionObserver",
    "open_database",
]
