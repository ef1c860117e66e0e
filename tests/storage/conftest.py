"""Fixtures for the store contract tests, parametrised over database backends.

To run every storage test on PostgreSQL too, add "postgres" to BACKENDS and a branch to
`_open` once the asyncpg backend exists.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from homeserver.events import Event, get_room_version
from homeserver.storage import Database, Stores, open_database, open_stores

BACKENDS = ["sqlite"]


async def _open(backend: str, tmp_path: Path) -> Database:
    if backend == "sqlite":
        return await open_database(
            {"name": "sqlite3", "args": {"database": str(tmp_path / "hs.db")}}
        )
    raise NotImplementedError(backend)


@pytest.fixture(params=BACKENDS)
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    database = await _open(request.param, tmp_path)
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
