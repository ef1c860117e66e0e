"""Fixtures for the store contract tests, parametrised over database backends.

Every test taking `db` or `stores` runs once per entry of BACKENDS. When the asyncpg
backend exists, enabling it is one line: add "postgres" to BACKENDS (tests then need
HS_TEST_POSTGRES_DSN pointing at a scratch database and are skipped without it).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from homeserver.events import Event, get_room_version
from homeserver.storage import Database, Stores, open_database, open_stores

BACKENDS = ["sqlite"]

_CONFIGS: dict[str, Callable[[Path], dict[str, Any] | None]] = {
    "sqlite": lambda tmp: {"name": "sqlite3", "args": {"database": str(tmp / "hs.db")}},
    "postgres": lambda tmp: (
        {"name": "psycopg2", "args": {"dsn": os.environ["HS_TEST_POSTGRES_DSN"]}}
        if os.environ.get("HS_TEST_POSTGRES_DSN")
        else None
    ),
}


@pytest.fixture(params=BACKENDS)
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    config = _CONFIGS[request.param](tmp_path)
    if config is None:
        pytest.skip(f"no {request.param} database configured")
    database = await open_database(config)
    try:
        yield database
    finally:
        await database.close()


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
