"""Moving a server's data from SQLite to PostgreSQL (`python -m homeserver port-db`).

What it does, in order:

1. The SQLite file must be ours; it is brought up to this server's schema (the same
   migrations the server runs at start) and then read through ONE read-only
   transaction, so the copy is a consistent snapshot.
2. The PostgreSQL target (schema) must be empty: a target with any table is refused,
   never mixed into. It gets the schema from the migrations, exactly as a fresh
   server would create it.
3. Every table the SQLite schema holds is copied, found from the schema itself (so
   tables added by later migrations are covered without being listed here), in
   foreign-key order, rows in primary-key order, with COPY in batches; progress is
   reported per table.
4. Identity sequences are moved past the copied IDs, so new rows do not collide.
5. Checks: every table has as many rows on both sides, and every stream position
   (the largest stream_ordering / stream_id / identity value of each table) matches,
   as does the set of applied migrations.

If anything fails after the target was touched, the tables created in the (previously
empty) target schema are dropped again, so the next attempt starts clean.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiosqlite

from .database import open_database
from .errors import StorageError
from .migrate import applied_versions, run_migrations
from .postgres import PostgresDatabase
from .schema import Table, column_list, dependency_order, quote_ident

DEFAULT_BATCH = 5000
# Columns whose largest value is a stream position other code resumes from.
POSITION_COLUMNS = ("stream_ordering", "stream_id")
SKIPPED_TABLES = frozenset({"schema_version"})  # written by the target's own migrations

Progress = Callable[[str], None]


class PortError(Exception):
    """The port cannot start or did not check out; the message says why."""


@dataclass
class PortReport:
    # table -> (rows in SQLite, rows in PostgreSQL)
    rows: dict[str, tuple[int, int]] = field(default_factory=dict)
    # "table.column" -> (largest in SQLite, largest in PostgreSQL)
    positions: dict[str, tuple[int | None, int | None]] = field(default_factory=dict)
    # "table.column" -> the value the sequence hands out next
    sequences: dict[str, int] = field(default_factory=dict)

    @property
    def total_rows(self) -> int:
        return sum(src for src, _ in self.rows.values())


def _position_columns(table: Table) -> list[str]:
    cols = [c for c in table.columns if c in POSITION_COLUMNS]
    cols += [c for c in table.generated if c not in cols]
    if len(table.primary_key) == 1 and table.types.get(table.primary_key[0], "").startswith(
        ("int", "bigint")
    ):
        pk = table.primary_key[0]
        if pk not in cols:
            cols.append(pk)
    return cols


async def port_sqlite_to_postgres(
    sqlite_path: Path,
    postgres_args: Mapping[str, Any],
    *,
    batch_size: int = DEFAULT_BATCH,
    progress: Progress = print,
) -> PortReport:
    if not sqlite_path.is_file():
        raise PortError(f"{sqlite_path}: no such SQLite database")
    progress(f"Preparing {sqlite_path} (bringing its schema up to date) ...")
    try:
        source_db = await open_database({"name": "sqlite3", "args": {"database": str(sqlite_path)}})
    except StorageError as exc:
        raise PortError(f"cannot use the SQLite database: {exc}") from None
    try:
        source_tables = {t.name: t for t in await source_db.describe_schema()}
        source_versions = await applied_versions(source_db)
    finally:
        await source_db.close()

    target = await _open_empty_target(postgres_args)
    created = False
    try:
        progress("Creating the schema in PostgreSQL ...")
        created = True
        await run_migrations(target)
        target_tables = {t.name: t for t in await target.describe_schema()}
        missing = sorted(set(source_tables) - set(target_tables))
        if missing:
            raise PortError(f"tables missing from the target schema: {', '.join(missing)}")
        if await applied_versions(target) != source_versions:
            raise PortError("the two databases do not record the same migrations")
        report = PortReport()
        order = [
            t for t in dependency_order(source_tables.values()) if t.name not in SKIPPED_TABLES
        ]
        async with _snapshot(sqlite_path) as snapshot:
            for table in order:
                copied = await _copy_table(
                    snapshot, target, table, target_tables[table.name], batch_size, progress
                )
                report.rows[table.name] = (copied, 0)
            progress("Moving PostgreSQL sequences past the copied IDs ...")
            report.sequences = await target.sync_sequences()
            progress("Checking row counts and stream positions ...")
            await _verify(snapshot, target, order, report)
        return report
    except BaseException:
        if created:
            await _drop_created(target, progress)
        raise
    finally:
        await target.close()


async def _open_empty_target(args: Mapping[str, Any]) -> PostgresDatabase:
    """Open the target without migrating; refuse it unless its schema has no table."""
    try:
        db = await PostgresDatabase.open(args)
    except StorageError as exc:
        raise PortError(f"cannot use the PostgreSQL database: {exc}") from None
    tables = await db.describe_schema()
    if tables:
        await db.close()
        names = ", ".join(sorted(t.name for t in tables)[:8])
        raise PortError(
            f"the PostgreSQL target is not empty (it holds {len(tables)} tables: {names}...);"
            " port-db only fills an empty database or schema"
        )
    return db


@contextlib.asynccontextmanager
async def _snapshot(path: Path) -> Any:
    """One read-only connection inside one read transaction: a consistent snapshot."""
    uri = path.resolve().as_uri() + "?mode=ro"
    conn = await aiosqlite.connect(uri, uri=True, isolation_level=None)
    try:
        await conn.execute("BEGIN")
        yield conn
    finally:
        with contextlib.suppress(Exception):
            await conn.execute("COMMIT")
        await conn.close()


async def _copy_table(
    snapshot: aiosqlite.Connection,
    target: PostgresDatabase,
    table: Table,
    target_table: Table,
    batch_size: int,
    progress: Progress,
) -> int:
    columns = [c for c in table.columns if c in target_table.columns]
    extra = sorted(set(table.columns) - set(columns))
    if extra:
        raise PortError(f"{table.name}: columns {', '.join(extra)} do not exist in the target")
    total = int(await _scalar(snapshot, f"SELECT COUNT(*) FROM {quote_ident(table.name)}"))
    order = column_list(table.primary_key) if table.primary_key else "rowid"
    copied = 0
    async with snapshot.execute(
        f"SELECT {column_list(columns)} FROM {quote_ident(table.name)} ORDER BY {order}"
    ) as cursor:
        while True:
            rows = list(await cursor.fetchmany(batch_size))
            if not rows:
                break
            try:
                await target.copy_rows(table.name, columns, [tuple(r) for r in rows])
            except StorageError as exc:
                where = f"rows {copied + 1}-{copied + len(rows)}"
                raise PortError(f"{table.name}: copying {where} failed: {exc}") from None
            copied += len(rows)
            if total > batch_size:
                progress(f"  {table.name}: {copied}/{total} rows")
    progress(f"{table.name}: {copied} rows")
    return copied


async def _scalar(snapshot: aiosqlite.Connection, sql: str) -> Any:
    """The one value an aggregate query over the SQLite snapshot answers."""
    async with snapshot.execute(sql) as cur:
        row = await cur.fetchone()
    assert row is not None  # an aggregate without GROUP BY always answers one row
    return row[0]


async def _verify(
    snapshot: aiosqlite.Connection,
    target: PostgresDatabase,
    tables: list[Table],
    report: PortReport,
) -> None:
    problems: list[str] = []
    for table in tables:
        name = quote_ident(table.name)
        src = int(await _scalar(snapshot, f"SELECT COUNT(*) FROM {name}"))
        dst = int(await target.fetchval(f"SELECT COUNT(*) FROM {name}"))
        report.rows[table.name] = (src, dst)
        if src != dst:
            problems.append(f"{table.name}: {src} rows in SQLite but {dst} in PostgreSQL")
        for column in _position_columns(table):
            col = quote_ident(column)
            high = await _scalar(snapshot, f"SELECT MAX({col}) FROM {name}")
            target_high = await target.fetchval(f"SELECT MAX({col}) FROM {name}")
            key = f"{table.name}.{column}"
            report.positions[key] = (high, target_high)
            if high != target_high:
                problems.append(f"{key}: largest {high} in SQLite, {target_high} in PostgreSQL")
    for key, next_value in report.sequences.items():
        high = report.positions.get(key, (None, None))[1]
        if high is not None and next_value <= high:
            problems.append(f"sequence of {key} would hand out {next_value} again")
    if problems:
        raise PortError("the copy does not check out:\n  " + "\n  ".join(problems))


async def _drop_created(target: PostgresDatabase, progress: Progress) -> None:
    """Leave the (previously empty) target empty again after a failure."""
    with contextlib.suppress(Exception):
        tables = await target.describe_schema()
        async with target.transaction() as conn:
            for table in tables:
                await conn.execute(f"DROP TABLE IF EXISTS {quote_ident(table.name)} CASCADE")
        progress(f"Removed the {len(tables)} tables created in the target; it is empty again.")
