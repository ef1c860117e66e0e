"""`Stores`: every per-area store over one database, built in one place."""

from __future__ import annotations

from dataclasses import dataclass

from .accounts import AccountStore
from .current_state import CurrentStateStore
from .database import Database
from .events import EventStore
from .room_retention import RoomRetention
from .rooms import RoomStore
from .server_keys import ServerKeyStore
from .state import StateStore
from .transactions import TransactionStore


@dataclass
class Stores:
    db: Database
    events: EventStore
    rooms: RoomStore
    state: StateStore
    current_state: CurrentStateStore
    accounts: AccountStore
    server_keys: ServerKeyStore
    transactions: TransactionStore
    retention: RoomRetention  # rooms' m.room.retention policies (off until configured)


async def open_stores(db: Database) -> Stores:
    """Build the stores over an opened (and migrated) database."""
    events = EventStore(db)
    current_state = CurrentStateStore(db)
    events.membership_observers.append(current_state.memberships_changed)
    events.state_observers.append(current_state.state_changed)
    return Stores(
        db=db,
        events=events,
        rooms=RoomStore(db),
        state=StateStore(db),
        current_state=current_state,
        accounts=AccountStore(db),
        server_keys=ServerKeyStore(db),
        transactions=TransactionStore(db),
        retention=RoomRetention(db, events),
    )
