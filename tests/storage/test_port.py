"""port-db's copier (homeserver.storage.port) between a real SQLite file and a fresh
PostgreSQL schema: every table found from the schema (a table added by a later
migration included), identity sequences moved on, checks, refusal of a non-empty
target, and a failed copy leaving the target empty again.

The end-to-end run (a real server's database, then the server on PostgreSQL) is in
tests/storage/test_port_db_e2e.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import homeserver.storage.migrate as migrate
from homeserver.storage import open_database, open_stores
from homeserver.storage.port import PortError, port_sqlite_to_postgres
from tests.storage.conftest import POSTGRES_SKIP_REASON, drop_postgres_schema, postgres_test_config

EXTRA = migrate.Migration(
    9999,
    "future_area",
    sql="CREATE TABLE future_things (id {{auto_id}}, room_id TEXT, flag BOOLEAN NOT NULL);",
)


@pytest.fixture
async def pg() -> AsyncIterator[dict[str, Any]]:
    config = postgres_test_config()
    if config is None:
        pytest.skip(POSTGRES_SKIP_REASON)
    try:
        yield config
    finally:
        await drop_postgres_schema(config)


@pytest.fixture
def with_future_migration(monkeypatch: pytest.MonkeyPatch) -> None:
    """A migration another branch might add later: port-db must copy its table too."""
    real = migrate.discover_migrations
    monkeypatch.setattr(migrate, "discover_migrations", lambda *a: [*real(*a), EXTRA])


async def make_source(path: Path) -> None:
    db = await open_database({"name": "sqlite3", "args": {"database": str(path)}})
    try:
        stores = await open_stores(db)
        for i in range(30):
            await stores.accounts.create_user(f"@u{i}:x.test", None, is_admin=i == 0)
            await stores.accounts.add_access_token(f"tok{i}", f"@u{i}:x.test", None)
        # A chain of state groups (a self-referencing foreign key) with entries.
        prev = None
        for i in range(5):
            await stores.rooms.store_room(f"!r{i}:x.test", "10")
            prev = await stores.state.store_state_group(
                "!r0:x.test", prev, {("m.room.name", ""): f"$e{i}"}
            )
        async with db.transaction() as conn:
            await conn.executemany(
                "INSERT INTO future_things (room_id, flag) VALUES ($1, $2)",
                [(f"!r{i % 5}:x.test", i % 2) for i in range(12)],
            )
    finally:
        await db.close()


async def test_port_copies_every_table_and_moves_sequences(
    tmp_path: Path, pg: dict[str, Any], with_future_migration: None
) -> None:
    source = tmp_path / "hs.db"
    await make_source(source)
    lines: list[str] = []
    report = await port_sqlite_to_postgres(source, pg["args"], batch_size=7, progress=lines.append)
    assert report.rows["users"] == (30, 30)
    assert report.rows["access_tokens"] == (30, 30)
    assert report.rows["state_groups"] == (5, 5)
    assert report.rows["future_things"] == (12, 12)  # found from the schema, not a list
    assert "schema_version" not in report.rows
    assert report.positions["access_tokens.id"] == (30, 30)
    assert report.sequences["access_tokens.id"] == 31
    assert "users: 30 rows" in lines and "  users: 28/30 rows" in lines  # progress per batch

    db = await open_database(pg)
    try:
        stores = await open_stores(db)
        user = await stores.accounts.get_user("@u0:x.test")
        assert user is not None and user.is_admin is True  # 0/1 became a boolean
        new_id = await stores.accounts.add_access_token("fresh", "@u1:x.test", None)
        assert new_id == 31  # the sequence continues after the copied IDs
        flags = await db.fetch("SELECT flag FROM future_things ORDER BY id")
        assert [r[0] for r in flags] == [bool(i % 2) for i in range(12)]
        state = await stores.state.get_state_ids(5)
        assert state == {("m.room.name", ""): "$e4"}
    finally:
        await db.close()

    with pytest.raises(PortError, match="not empty"):
        await port_sqlite_to_postgres(source, pg["args"], progress=lines.append)


async def test_a_failed_copy_leaves_the_target_empty(tmp_path: Path, pg: dict[str, Any]) -> None:
    source = tmp_path / "hs.db"
    db = await open_database({"name": "sqlite3", "args": {"database": str(source)}})
    try:
        stores = await open_stores(db)
        await stores.accounts.create_user("@ok:x.test", None)
        await stores.accounts.set_displayname("@ok:x.test", "fine")
        # SQLite stores U+0000 in text; PostgreSQL cannot.
        await db.execute(
            "UPDATE profiles SET displayname = 'bad' || char(0) WHERE user_id = '@ok:x.test'"
        )
    finally:
        await db.close()
    with pytest.raises(PortError, match="profiles"):
        await port_sqlite_to_postgres(source, pg["args"], progress=lambda _: None)
    target = await open_database(pg, migrate=False)
    try:
        assert await target.describe_schema() == []
    finally:
        await target.close()


async def test_refuses_what_is_not_a_homeserver_database(
    tmp_path: Path, pg: dict[str, Any]
) -> None:
    with pytest.raises(PortError, match="no such"):
        await port_sqlite_to_postgres(tmp_path / "missing.db", pg["args"], progress=lambda _: None)
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not sqlite at all" * 100)
    with pytest.raises(PortError):
        await port_sqlite_to_postgres(junk, pg["args"], progress=lambda _: None)
