"""Room-service fixtures: real SQLite storage in a temp dir, no HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from homeserver.events.signing import generate_signing_key
from homeserver.rooms.creation import RoomCreator
from homeserver.rooms.keyed_lock import KeyedLock
from homeserver.rooms.local_events import LocalEvents
from homeserver.rooms.membership import MembershipService
from homeserver.rooms.persister import Persister
from homeserver.rooms.room_state import RoomState
from homeserver.storage import Stores, open_database, open_stores

SERVER = "test.local"


@dataclass
class RoomKit:
    stores: Stores
    events: LocalEvents
    membership: MembershipService
    creator: RoomCreator
    persister: Persister
    seen: list


class _Recorder:
    def __init__(self, seen: list) -> None:
        self.seen = seen

    def on_new_event(self, event, stream_ordering: int) -> None:
        self.seen.append((stream_ordering, event))


@pytest.fixture
async def kit(tmp_path: Path) -> AsyncIterator[RoomKit]:
    db = await open_database({"name": "sqlite3", "args": {"database": str(tmp_path / "hs.db")}})
    stores = await open_stores(db)
    room_state = RoomState(stores)
    seen: list = []
    persister = Persister(stores, room_state, SERVER, listeners=[_Recorder(seen)])
    events = LocalEvents(
        stores, room_state, persister, KeyedLock(), SERVER, generate_signing_key("t1")
    )
    yield RoomKit(
        stores=stores,
        events=events,
        membership=MembershipService(stores, events, SERVER),
        creator=RoomCreator(events),
        persister=persister,
        seen=seen,
    )
    await db.close()
