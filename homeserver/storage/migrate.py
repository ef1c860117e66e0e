"""Numbered schema migrations: `migrations/NNNN_name.sql` or `NNNN_name.py`.

Adding a file is all it takes. Every migration runs in its own transaction together with
the `schema_version` row that records it, so a failed migration leaves no trace. Applied
versions are tracked as a set (not a single number) so areas that add migrations in
parallel (0002-0020 are reserved per area) cannot skip one another's files. A database
that records a version we do not know was written by a newer server: refuse it.

A `.py` migration defines `async def upgrade(conn: Connection) -> None`; `conn.dialect`
tells it which backend it runs on. `.sql` files may use the `{{macro}}` tokens of
`dialect.Dialect.macros`.
"""

from __future__ import annotations

import importlib
import importlib.resources
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from .database import Connection, Database
from .errors import StorageError

MIGRATIONS_PACKAGE = "homeserver.storage.migrations"
_FILE_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.(sql|py)$")

_CREATE_SCHEMA_VERSION = """
CREATE TABLE IF NOT EXISTS schema_version (
    version INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    applied_ts BIGINT NOT NULL
)
"""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str | None = None
    upgrade: Callable[[Connection], Awaitable[None]] | None = None


def discover_migrations(package: str = MIGRATIONS_PACKAGE) -> list[Migration]:
    """All migration files of `package`, sorted by number; duplicates are an error."""
    found: dict[int, Migration] = {}
    for entry in importlib.resources.files(package).iterdir():
        m = _FILE_NAME.match(entry.name)
        if not m:
            continue
        version, name, kind = int(m.group(1)), m.group(2), m.group(3)
        if version in found:
            raise StorageError(
                f"two migrations are numbered {version:04d}: "
                f"{found[version].name} and {name}; renumber one"
            )
        if kind == "sql":
            found[version] = Migration(version, name, sql=entry.read_text(encoding="utf-8"))
        else:
            module = importlib.import_module(f"{package}.{entry.name[:-3]}")
            upgrade = getattr(module, "upgrade", None)
            if upgrade is None:
                raise StorageError(f"migration {entry.name} has no `async def upgrade(conn)`")
            found[version] = Migration(version, name, upgrade=upgrade)
    return [found[v] for v in sorted(found)]


def check_applied_versions(applied: set[int] | None, migrations: Iterable[Migration]) -> None:
    """Refuse a database that records migrations this code does not have."""
    if not applied:
        return
    known = {m.version for m in migrations}
    unknown = sorted(applied - known)
    if unknown:
        newest = max(known, default=0)
        raise StorageError(
            f"the database schema has migration(s) {', '.join(f'{v:04d}' for v in unknown)} "
            f"that this server does not know (newest known: {newest:04d}); it was written "
            "by a newer version of the homeserver, so refusing to use it"
        )


async def applied_versions(db: Database) -> set[int]:
    rows = await db.fetch("SELECT version FROM schema_version")
    return {int(r[0]) for r in rows}


async def pending_migrations(db: Database) -> list[int]:
    """Versions not applied yet (a worker refuses to start until the main migrated)."""
    try:
        applied = await applied_versions(db)
    except StorageError:
        applied = set()
    return [m.version for m in discover_migrations() if m.version not in applied]


async def run_migrations(
    db: Database, migrations: list[Migration] | None = None, *, now_ms: int | None = None
) -> list[int]:
    """Apply every pending migration in order; return the versions applied now."""
    if migrations is None:
        migrations = discover_migrations()
    async with db.transaction() as conn:
        await conn.execute(_CREATE_SCHEMA_VERSION)
        applied = {int(r[0]) for r in await conn.fetch("SELECT version FROM schema_version")}
    check_applied_versions(applied, migrations)
    done: list[int] = []
    for migration in migrations:
        if migration.version in applied:
            continue
        async with db.transaction() as conn:
            try:
                if migration.sql is not None:
                    script = conn.dialect.render_schema(migration.sql)
                    for statement in conn.dialect.split_script(script):
                        await conn.execute(statement)
                if migration.upgrade is not None:
                    await migration.upgrade(conn)
            except StorageError as exc:
                raise StorageError(
                    f"migration {migration.version:04d}_{migration.name} failed: {exc}"
                ) from exc
            await conn.execute(
                "INSERT INTO schema_version (version, name, applied_ts) VALUES ($1, $2, $3)",
                migration.version,
                migration.name,
                now_ms if now_ms is not None else int(time.time() * 1000),
            )
        done.append(migration.version)
    return done
