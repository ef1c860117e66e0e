"""The PostgreSQL backend: asyncpg, a connection pool, one writer at a time.

Stores are written against the `Database` contract that SQLite defines: write
transactions are serialised (stores allocate IDs with `MAX(...) + 1` inside one), reads
run concurrently and see committed data. So writes go through an `asyncio.Lock` here too,
while reads take any pooled connection. When several processes write events (event
persisters), `share_writes` makes every write transaction also take one PostgreSQL
advisory lock first (postgres_locks): the same rule across the deployment, except for
the event transactions, which claim their stream positions without waiting for the
other processes (`turn="own"`, event_positions.py), the push actions recorded after
them, which take it shared (`turn="alongside"`, push.py), and the writes of receipts,
to-device messages, account data, device-list changes and the federation outbox's
queueing, which take it shared and their own stream's lock exclusively (`stream=...`):
each stream's writes take turns, different streams' run side by side.

asyncpg encodes arguments strictly by the column type the server infers (a BOOLEAN wants
a `bool`, a BIGINT an `int`), where SQLite stores whatever it is given. When an argument
is refused, the statement is prepared, its parameter types read, and SQLite-style values
(0/1 for booleans, ints for text) are converted once; the fast path pays nothing.

Before migrating, the target schema is inspected: a schema holding other tables but no
`schema_version` belongs to someone else and is refused, as SQLite refuses a foreign file.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar, get_args

import asyncpg

from .database import Database, Row, WriteStream, WriteTurn
from .dialect import POSTGRES, Dialect
from .errors import DatabaseUnavailableError, IntegrityError, StorageError, UnstorableValueError
from .postgres_locks import SessionLocks, lock_key
from .schema import ForeignKey, Table

T = TypeVar("T")
# Statement tracing, on its own logger: set it to DEBUG to see every statement.
SQL_LOG = logging.getLogger("homeserver.storage.sql")

_STATUS_COUNT = re.compile(r"(\d+)$")
_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_INT_TYPES = frozenset({"int2", "int4", "int8", "oid"})
_TEXT_TYPES = frozenset({"text", "varchar", "bpchar", "name"})
_FLOAT_TYPES = frozenset({"float4", "float8", "numeric"})


def rowcount(status: str) -> int:
    """The row count in an asyncpg status string ("UPDATE 3", "INSERT 0 2"); else 0."""
    m = _STATUS_COUNT.search(status or "")
    return int(m.group(1)) if m else 0


def _coerce(value: Any, type_name: str) -> Any:
    """Convert a value SQLite would have accepted into what asyncpg encodes for the type."""
    if value is None:
        return None
    if type_name == "bool" and isinstance(value, int) and not isinstance(value, bool):
        return bool(value)
    if type_name in _INT_TYPES:
        if isinstance(value, bool):
            return int(value)
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str) and value.lstrip("-").isdigit():
            return int(value)
    if type_name in _TEXT_TYPES and isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    if type_name in _FLOAT_TYPES and isinstance(value, int) and not isinstance(value, bool):
        return float(value) if type_name != "numeric" else value
    return value


def _is_argument_refusal(exc: Exception) -> bool:
    """asyncpg's own refusal to encode an argument (raised before anything is sent).

    Server-side data errors (SQLSTATE class 22) are DataError subclasses; those abort
    the transaction and must not be retried.
    """
    return type(exc) is asyncpg.DataError and str(exc).startswith("invalid input for query")


def _has_nul(args: Sequence[Any]) -> bool:
    return any(isinstance(a, str) and "\x00" in a for a in args)


_WRITES = re.compile(r"\b(?:INSERT|DELETE)\b|(?<!FOR )\bUPDATE\b")  # not SELECT ... FOR UPDATE


def _nul_in_read(sql: str, args: Sequence[Any]) -> bool:
    """Whether a row-returning statement with U+0000 in an argument is a read (it then
    finds nothing); a write raises UnstorableValueError."""
    if not _has_nul(args):
        return False
    if _WRITES.search(sql):
        _refuse_nul(sql, args)
    return True


def _refuse_nul(sql: str, args: Sequence[Any]) -> None:
    if _has_nul(args):
        raise UnstorableValueError(
            f"text containing U+0000 cannot be stored in PostgreSQL (in: {sql.strip()[:120]})"
        )


# What a statement, BEGIN, COMMIT or a pool acquire may raise that is the database's, not
# ours. OSError: a pool replacing a connection that broke connects anew, and a server that
# is restarting refuses or resets that connection (ConnectionRefusedError, ...).
_BROKEN = (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError, OSError)
# The deployment-wide write lock as each turn takes it ("own" takes none): "alone"
# waits for every holder, "alongside" only for an "alone" one. A stream's own lock
# (`stream=`) is taken like "alone", after the shared deployment lock.
_TAKE_TURN = {
    "alone": "SELECT pg_advisory_xact_lock($1)",
    "alongside": "SELECT pg_advisory_xact_lock_shared($1)",
}


def _translate(exc: Exception, sql: str) -> StorageError:
    where = f"(in: {sql.strip()[:200]})"
    if isinstance(exc, asyncpg.IntegrityConstraintViolationError):
        return IntegrityError(f"{exc} {where}")
    if isinstance(
        exc,
        asyncpg.InternalClientError  # a connection left mid-operation when it broke
        | asyncpg.ConnectionDoesNotExistError
        | asyncpg.PostgresConnectionError
        | asyncpg.CannotConnectNowError
        | asyncpg.AdminShutdownError
        | OSError,
    ) or (isinstance(exc, asyncpg.InterfaceError) and "connection is closed" in str(exc)):
        return DatabaseUnavailableError(f"{type(exc).__name__}: {exc} {where}")
    return StorageError(f"{type(exc).__name__}: {exc} {where}")


class PooledConnection(asyncpg.Connection):
    """A pool connection released without asyncpg's reset statement (advisory unlock,
    CLOSE ALL, UNLISTEN, RESET ALL), a round trip on every release, which is every
    statement outside a transaction. Nothing here leaves session state on a pooled
    connection: the advisory locks held across a session are SessionLocks' own
    connection's, the write lock is transaction-scoped, the schema is a startup setting,
    and there are no cursors or listeners. An open transaction is still rolled back on
    release (asyncpg does that before the reset statement)."""

    def get_reset_query(self) -> str:
        return ""


class PostgresConnection:
    """One asyncpg connection behind the `Connection` protocol."""

    dialect: Dialect = POSTGRES

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def _coerced(self, sql: str, args: Sequence[Any]) -> tuple[Any, ...]:
        stmt = await self._conn.prepare(sql)
        types = [p.name for p in stmt.get_parameters()]
        return tuple(_coerce(v, t) for v, t in zip(args, types, strict=False))

    async def _run(self, sql: str, args: Sequence[Any], op: Callable[..., Awaitable[T]]) -> T:
        if SQL_LOG.isEnabledFor(logging.DEBUG):
            SQL_LOG.debug("[SQL] %s", " ".join(sql.split())[:2000])
        try:
            try:
                return await op(sql, *args)
            except asyncpg.DataError as exc:
                if not _is_argument_refusal(exc):
                    raise
                # Client-side encoding refusal: retry once with SQLite-style values converted.
                return await op(sql, *(await self._coerced(sql, args)))
        except _BROKEN as exc:
            raise _translate(exc, sql) from exc

    async def execute(self, sql: str, *args: Any) -> int:
        _refuse_nul(sql, args)
        status = await self._run(sql, args, self._conn.execute)
        return rowcount(status)

    async def executemany(self, sql: str, args: Iterable[Sequence[Any]]) -> None:
        rows = [tuple(a) for a in args]
        if not rows:
            return
        for row in rows:
            _refuse_nul(sql, row)
        try:
            try:
                await self._conn.executemany(sql, rows)
            except asyncpg.DataError as exc:
                if not _is_argument_refusal(exc):
                    raise
                stmt = await self._conn.prepare(sql)
                types = [p.name for p in stmt.get_parameters()]
                fixed = [tuple(_coerce(v, t) for v, t in zip(r, types, strict=False)) for r in rows]
                await self._conn.executemany(sql, fixed)
        except _BROKEN as exc:
            raise _translate(exc, sql) from exc

    # A read whose argument holds U+0000 cannot match anything stored here (no stored
    # text can contain it), so it finds nothing, as the same lookup does on SQLite. A
    # write that returns rows (INSERT ... RETURNING) is refused like any other write:
    # answering "nothing" would drop it silently.

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        if _nul_in_read(sql, args):
            return []
        return await self._run(sql, args, self._conn.fetch)

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        if _nul_in_read(sql, args):
            return None
        return await self._run(sql, args, self._conn.fetchrow)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        if _nul_in_read(sql, args):
            return None
        return await self._run(sql, args, self._conn.fetchval)


def connect_kwargs(args: Mapping[str, Any]) -> dict[str, Any]:
    """asyncpg connection keywords from Synapse-style `database.args`.

    Accepts `dsn` or the libpq-style keys Synapse users write (user, password, database
    or dbname, host, port, sslmode); `schema` (ours) selects a schema other than `public`.
    """
    kwargs: dict[str, Any] = {}
    if args.get("dsn"):
        kwargs["dsn"] = str(args["dsn"])
    for key in ("user", "password", "host"):
        if args.get(key) is not None:
            kwargs[key] = str(args[key])
    dbname = args.get("database") or args.get("dbname")
    if dbname:
        kwargs["database"] = str(dbname)
    if args.get("sslmode"):
        kwargs["ssl"] = str(args["sslmode"])  # asyncpg takes libpq's mode names
    if args.get("port") is not None:
        kwargs["port"] = int(args["port"])
    schema = args.get("schema")
    if schema:
        if not _SCHEMA_NAME.match(str(schema)):
            raise StorageError(f"database.args.schema {schema!r} is not a plain lowercase name")
        kwargs["server_settings"] = {"search_path": str(schema)}
    return kwargs


async def inspect_schema(conn: asyncpg.Connection) -> set[int] | None:
    """None if the current schema is empty, else its applied migration versions.

    Raises StorageError for a schema that has tables but none of ours.
    """
    tables = {
        r[0]
        for r in await conn.fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
        )
    }
    if not tables:
        return None
    if "schema_version" not in tables:
        schema = await conn.fetchval("SELECT current_schema()")
        raise StorageError(
            f"PostgreSQL schema {schema!r} holds tables that are not a homeserver's "
            f"({', '.join(sorted(tables)[:8])}) and no schema_version table; refusing to touch it"
        )
    return {int(r[0]) for r in await conn.fetch("SELECT version FROM schema_version")}


class PostgresDatabase(Database):
    """An asyncpg pool: serialised write transactions, concurrent reads."""

    dialect = POSTGRES

    def __init__(
        self,
        pool: asyncpg.Pool,
        connect_kwargs: Mapping[str, Any] | None = None,
        schema: str | None = None,
    ) -> None:
        self._pool = pool
        self._write_lock = asyncio.Lock()
        self._closed = False
        self._connect_kwargs = dict(connect_kwargs or {})
        self.schema = schema
        # Set when several processes write (postgres_locks): the advisory lock every
        # write transaction takes first.
        self._shared_write_key: int | None = None
        self._stream_keys: dict[str, int] = {}

    def share_writes(self) -> SessionLocks:
        """Serialise write transactions with the other processes of the deployment;
        the room locks they share, on a connection of their own."""
        self._shared_write_key = lock_key(self.schema, "write transactions")
        self._stream_keys = {s: lock_key(self.schema, f"{s} stream") for s in get_args(WriteStream)}
        return SessionLocks(lambda: asyncpg.connect(**self._connect_kwargs), self.schema)

    @classmethod
    async def open(
        cls,
        args: Mapping[str, Any],
        *,
        check: Callable[[set[int] | None], None] | None = None,
    ) -> PostgresDatabase:
        """Connect, create the configured schema if missing, inspect it, run `check`."""
        kwargs = connect_kwargs(args)
        cp_min = int(args.get("cp_min", 1))
        cp_max = max(cp_min, int(args.get("cp_max", 10)))
        schema = args.get("schema")
        try:
            if schema:
                # The schema must exist before pooled connections put it on their path.
                setup = await asyncpg.connect(
                    **{k: v for k, v in kwargs.items() if k != "server_settings"}
                )
                try:
                    await setup.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
                finally:
                    await setup.close()
            pool = await asyncpg.create_pool(
                min_size=cp_min, max_size=cp_max, connection_class=PooledConnection, **kwargs
            )
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StorageError(f"cannot connect to PostgreSQL: {exc}") from exc
        try:
            async with pool.acquire() as conn:
                existing = await inspect_schema(conn)
            if check is not None:
                check(existing)
        except BaseException:
            await pool.close()
            raise
        return cls(pool, kwargs, str(schema) if schema else None)

    @contextlib.asynccontextmanager
    async def transaction(
        self, *, turn: WriteTurn = "alone", stream: WriteStream | None = None
    ) -> AsyncIterator[PostgresConnection]:
        if stream is not None and turn != "alongside":
            raise ValueError(f"a {stream} transaction is written alongside, not {turn}")
        asked = time.perf_counter()
        async with self._write_lock, self._translated():
            self._check_open()
            async with self._pool.acquire() as raw, self._observed("write", asked):
                tx = raw.transaction()
                try:
                    await tx.start()
                    if turn != "own" and self._shared_write_key is not None:
                        asked_turn = time.perf_counter()
                        await raw.execute(_TAKE_TURN[turn], self._shared_write_key)
                        if stream is not None:  # after the deployment lock: no cycle
                            await raw.execute(_TAKE_TURN["alone"], self._stream_keys[stream])
                        if self.observer is not None:
                            waited = time.perf_counter() - asked_turn
                            self.observer(f"turn {stream or turn}", waited, 0.0)
                except _BROKEN as exc:  # a connection cut since it was pooled
                    with contextlib.suppress(Exception):
                        await tx.rollback()
                    raise _translate(exc, "BEGIN") from exc
                try:
                    yield PostgresConnection(raw)
                except BaseException:
                    with contextlib.suppress(Exception):
                        await tx.rollback()
                    raise
                try:
                    await tx.commit()
                except _BROKEN as exc:
                    with contextlib.suppress(Exception):
                        await tx.rollback()
                    raise _translate(exc, "COMMIT") from exc

    @contextlib.asynccontextmanager
    async def _reader(self) -> AsyncIterator[PostgresConnection]:
        self._check_open()
        asked = time.perf_counter()
        async with (
            self._translated(),
            self._pool.acquire() as raw,
            self._observed("read", asked),
        ):
            yield PostgresConnection(raw)

    @staticmethod
    @contextlib.asynccontextmanager
    async def _translated() -> AsyncIterator[None]:
        """A pooled connection that broke (a PostgreSQL restart) surfaces on acquire or
        release as asyncpg's own error: ours instead (503 for the client)."""
        try:
            yield
        except _BROKEN as exc:
            raise _translate(exc, "(connection)") from exc

    @contextlib.asynccontextmanager
    async def _observed(self, kind: str, asked: float) -> AsyncIterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            if self.observer is not None:
                self.observer(kind, started - asked, time.perf_counter() - started)

    def _check_open(self) -> None:
        if self._closed:
            raise StorageError("database is closed")

    async def describe_schema(self) -> list[Table]:
        async with self._reader() as wrapped:
            conn = wrapped._conn
            columns = await conn.fetch(_COLUMNS_SQL)
            keys = await conn.fetch(_KEYS_SQL)
        by_table: dict[str, list[Any]] = {}
        for r in columns:
            by_table.setdefault(r["table_name"], []).append(r)
        pks: dict[str, tuple[str, ...]] = {}
        fks: dict[str, list[ForeignKey]] = {}
        for r in keys:
            if r["contype"] == "p":
                pks[r["table_name"]] = tuple(r["columns"])
            else:
                fks.setdefault(r["table_name"], []).append(
                    ForeignKey(tuple(r["columns"]), r["ref_table"], tuple(r["ref_columns"]))
                )
        return [
            Table(
                name,
                tuple(c["column_name"] for c in cols),
                types={c["column_name"]: c["data_type"].lower() for c in cols},
                primary_key=pks.get(name, ()),
                foreign_keys=tuple(fks.get(name, [])),
                generated=tuple(
                    c["column_name"]
                    for c in cols
                    if c["is_identity"] == "YES"
                    or str(c["column_default"] or "").startswith("nextval(")
                ),
            )
            for name, cols in sorted(by_table.items())
        ]

    async def sync_sequences(self) -> dict[str, int]:
        """Move every identity/serial sequence past the largest value its column holds
        (after rows were inserted with explicit IDs, as port-db does); returns
        "table.column" -> the value the sequence will hand out next."""
        moved: dict[str, int] = {}
        for table in await self.describe_schema():
            for column in table.generated:
                async with self.transaction() as conn:
                    raw = conn._conn
                    seq = await raw.fetchval(
                        "SELECT pg_get_serial_sequence($1, $2)", table.name, column
                    )
                    if seq is None:
                        continue
                    high = await raw.fetchval(f'SELECT MAX("{column}") FROM "{table.name}"')
                    if high is None:
                        await raw.execute("SELECT setval($1::regclass, 1, false)", seq)
                        moved[f"{table.name}.{column}"] = 1
                    else:
                        await raw.execute("SELECT setval($1::regclass, $2, true)", seq, high)
                        moved[f"{table.name}.{column}"] = int(high) + 1
        return moved

    async def copy_rows(
        self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]
    ) -> None:
        """Bulk-insert rows with COPY (port-db); values are converted to the columns'
        types the way single statements convert SQLite-style values."""
        if not rows:
            return
        async with self.transaction() as conn:
            raw = conn._conn
            types = await raw.fetch(
                "SELECT a.attname, t.typname FROM pg_attribute a"
                " JOIN pg_type t ON t.oid = a.atttypid"
                " WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped",
                f'"{table}"',
            )
            by_name = {r[0]: r[1] for r in types}
            kinds = [by_name.get(c, "text") for c in columns]
            records = []
            for row in rows:
                _refuse_nul(f"COPY {table}", row)
                records.append(tuple(_coerce(v, k) for v, k in zip(row, kinds, strict=True)))
            try:
                await raw.copy_records_to_table(table, columns=list(columns), records=records)
            except (asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                raise _translate(exc, f"COPY {table}") from exc

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        async with self._write_lock:
            await self._pool.close()


_COLUMNS_SQL = """
SELECT table_name, column_name, data_type, is_identity, column_default
FROM information_schema.columns
WHERE table_schema = current_schema()
ORDER BY table_name, ordinal_position
"""

# Primary and foreign keys with their columns in key order.
_KEYS_SQL = """
SELECT cl.relname AS table_name, co.contype::text AS contype,
       ARRAY(SELECT a.attname FROM unnest(co.conkey) WITH ORDINALITY k(num, pos)
             JOIN pg_attribute a ON a.attrelid = co.conrelid AND a.attnum = k.num
             ORDER BY k.pos) AS columns,
       rf.relname AS ref_table,
       ARRAY(SELECT a.attname FROM unnest(co.confkey) WITH ORDINALITY k(num, pos)
             JOIN pg_attribute a ON a.attrelid = co.confrelid AND a.attnum = k.num
             ORDER BY k.pos) AS ref_columns
FROM pg_constraint co
JOIN pg_class cl ON cl.oid = co.conrelid
JOIN pg_namespace n ON n.oid = cl.relnamespace
LEFT JOIN pg_class rf ON rf.oid = co.confrelid
WHERE n.nspname = current_schema() AND co.contype IN ('p', 'f')
"""


__all__ = ["PostgresConnection", "PostgresDatabase", "connect_kwargs", "rowcount"]
