"""Fixtures for the store contract tests, parametrised over database backends.

Every test taking `db` or `stores` runs once per entry of BACKENDS. The postgres runs
need HS_TEST_POSTGRES_DSN (a role that may create schemas in a scratch database) and are
skipped without it; each test gets its own fresh schema, dropped afterwards.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from homeserver.events import Event, get_room_version
from homeserver.storage import Database, Stores, open_database, open_stores

BACKENDS = ["sqlite", "postgres"]

POSTGRES_SKIP_REASON = (
    "HS_TEST_POSTGRES_DSN is not set (CI sets it when it could install PostgreSQL)"
)


def postgres_test_config() -> dict[str, Any] | None:
    """A psycopg2 config naming a fresh, unique schema; None without HS_TEST_POSTGRES_DSN."""
    dsn = os.environ.get("HS_TEST_POSTGRES_DSN")
    if not dsn:
        return None
    schema = f"hs_test_{uuid.uuid4().hex[:16]}"
    return {"name": "psycopg2", "args": {"dsn": dsn, "schema": schema, "cp_max": 4}}


async def drop_postgres_schema(config: dict[str, Any]) -> None:
    import asyncpg

    conn = await asyncpg.connect(config["args"]["dsn"])
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{config["args"]["schema"]}" CASCADE')
    finally:
        await conn.close()


_CONFIGS: dict[str, Callable[[Path], dict[str, Any] | None]] = {
    "sqlite": lambda tmp: {"name": "sqlite3", "args": {"database": str(tmp / "hs.db")}},
    "postgres": lambda tmp: postgres_test_config(),
}


async def _open(backend: str, tmp_path: Path, *, migrate: bool) -> AsyncIterator[Database]:
    config = _CONFIGS[backend](tmp_path)
    if config is None:
        pytest.skip(POSTGRES_SKIP_REASON)
    try:
        database = await open_database(config, migrate=migrate)
        try:
            yield database
        finally:
            await database.close()
    finally:
        if backend == "postgres":
            await drop_postgres_schema(config)


@pytest.fixture(params=BACKENDS)
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    async for database in _open(request.param, tmp_path, migrate=True):
        yield database


@pytest.fixture(params=BACKENDS)
async def unmigrated_db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    """An empty database: a test applies migrations up to a point, then the rest."""
    async for database in _open(request.param, tmp_path, migrate=False):
        yield database


@pytest.fixture
async def stores(db: Database) -> Stores:
    return await open_stores(db)


ROOM = "!room:example.org"
RV = "10"


def make_event(
    event_id: str,
    event_type: str = "m.room.message",
    *,
    room_id: str = ROOM,
    sender: str = "@alice:example.org",
    state_key: str | None = None,
    content: dict[str, Any] | None = None,
    prev: list[str] | None = None,
    auth: list[str] | None = None,
    depth: int = 1,
    ts: int = 1_700_000_000_000,
    room_version: str = RV,
    **extra: Any,
) -> Event:
    """An Event with an explicit ID (hashes/signatures are irrelevant to storage)."""
    pdu: dict[str, Any] = {
        "room_id": room_id,
        "type": event_type,
        "sender": sender,
        "content": content if content is not None else {},
        "prev_events": prev or [],
        "auth_events": auth or [],
        "depth": depth,
        "origin_server_ts": ts,
        "hashes": {"sha256": "aGFzaA"},
        "signatures": {},
        **extra,
    }
    if state_key is not None:
        pdu["state_key"] = state_key
    return Event(pdu, get_room_version(room_version), event_id=event_id)


def member(event_id: str, user_id: str, membership: str, **kw: Any) -> Event:
    return make_event(
        event_id,
        "m.room.member",
        sender=kw.pop("sender", user_id),
        state_key=user_id,
        content={"membership": membership},
        **kw,
    )
