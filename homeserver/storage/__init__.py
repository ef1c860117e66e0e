"""Storage: one async `Database` interface, numbered migrations, narrow per-area stores.

Consumers get a `Stores` bundle (`open_stores(await open_database(config))`) and call
store methods; no SQL leaves this package. See ARCHITECTURE.md for the import rules:
storage never imports rooms, client or federation.
"""

from .accounts import AccountStore, DeviceInfo, Profile, RefreshTokenInfo, TokenInfo, UserInfo
from .current_state import CurrentStateStore, MembershipInfo
from .database import Connection, Database, Row, open_database
from .errors import IntegrityError, StorageError, UnstorableValueError
from .event_reads import TimelineEvent
from .events import EventStore, PersistItem
from .rooms import AliasInfo, RoomInfo, RoomStore
from .server_keys import ServerKeyStore
from .state import StateStore, apply_delta, state_delta
from .stores import Stores, open_stores
from .transactions import OutboxBatch, RetryState, TransactionStore

__all__ = [
    "AccountStore",
    "AliasInfo",
    "Connection",
    "CurrentStateStore",
    "Database",
    "DeviceInfo",
    "EventStore",
    "IntegrityError",
    "MembershipInfo",
    "OutboxBatch",
    "PersistItem",
    "Profile",
    "RefreshTokenInfo",
    "RetryState",
    "RoomInfo",
    "RoomStore",
    "Row",
    "ServerKeyStore",
    "StateStore",
    "StorageError",
    "Stores",
    "TimelineEvent",
    "TokenInfo",
    "TransactionStore",
    "UnstorableValueError",
    "UserInfo",
    "apply_delta",
    "open_database",
    "open_stores",
    "state_delta",
]
