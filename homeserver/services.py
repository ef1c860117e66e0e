"""The core services (storage, room writer, notifier) as typed app state.

`core_services_ctx` builds them once per app, after the database is open, and handlers
read only the keys they need (`request.config_dict[LOCAL_EVENTS]`): no service locator
object is passed around.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

from aiohttp import web

from homeserver.appstate import CONFIG, DATABASE
from homeserver.events import Event
from homeserver.ratelimit import RATE_LIMITERS, RateLimiters
from homeserver.rooms.creation import RoomCreator
from homeserver.rooms.keyed_lock import KeyedLock
from homeserver.rooms.local_events import LocalEvents
from homeserver.rooms.membership import MembershipService
from homeserver.rooms.persister import Persister
from homeserver.rooms.room_state import RoomState
from homeserver.storage import Stores, open_stores
from homeserver.sync.activity import RoomActivity
from homeserver.sync.extensions import SYNC_EXTENSIONS
from homeserver.sync.notifier import Notifier
from homeserver.sync.tokens import StreamToken

STORES = web.AppKey("stores", Stores)
NOTIFIER = web.AppKey("notifier", Notifier)
ROOM_STATE = web.AppKey("room_state", RoomState)
PERSISTER = web.AppKey("persister", Persister)
LOCAL_EVENTS = web.AppKey("local_events", LocalEvents)
MEMBERSHIP = web.AppKey("membership", MembershipService)
ROOM_CREATOR = web.AppKey("room_creator", RoomCreator)
ROOM_LOCKS = web.AppKey("room_locks", KeyedLock)
ROOM_ACTIVITY = web.AppKey("room_activity", RoomActivity)


class EventNotifierBridge:
    """Tells the sync notifier about each persisted event: its room's listeners, and
    the target of a membership change (who may not be in the room yet)."""

    def __init__(self, notifier: Notifier) -> None:
        self._notifier = notifier

    def on_new_event(self, event: Event, stream_ordering: int) -> None:
        users = [event.state_key] if event.type == "m.room.member" and event.state_key else []
        self._notifier.notify("events", stream_ordering, rooms=[event.room_id], users=users)


def core_services_ctx(
    signing_key_getter: Callable[[web.Application], Any],
) -> Callable[[web.Application], AsyncIterator[None]]:
    """A cleanup_ctx that builds the core services; the app factory passes how to get
    our current signing key (owned by `federation.keys`, which the core may not import)."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        config = app[CONFIG]
        stores = await open_stores(app[DATABASE])
        notifier = Notifier(StreamToken(events=await stores.events.get_current_stream_position()))
        room_state = RoomState(stores)
        persister = Persister(stores, room_state, config.server_name)
        activity = RoomActivity(notifier.current.events)
        persister.add_listener(activity)
        bridge = EventNotifierBridge(notifier)
        persister.add_listener(bridge)
        persister.add_out_of_band_listener(bridge)
        locks = KeyedLock()
        local_events = LocalEvents(
            stores, room_state, persister, locks, config.server_name, signing_key_getter(app)
        )
        app[STORES] = stores
        app[NOTIFIER] = notifier
        app[ROOM_STATE] = room_state
        app[PERSISTER] = persister
        app[ROOM_LOCKS] = locks
        app[ROOM_ACTIVITY] = activity
        app[LOCAL_EVENTS] = local_events
        app[MEMBERSHIP] = MembershipService(stores, local_events, config.server_name)
        app[ROOM_CREATOR] = RoomCreator(local_events)
        app[SYNC_EXTENSIONS] = []
        app[RATE_LIMITERS] = RateLimiters(config.ratelimit)
        yield

    return ctx
