"""Builds the sync area's services once per app (a cleanup_ctx) and exposes AppKeys.

Order matters only in that it runs after the core services (stores, notifier,
persister): it advances the notifier to each stream's stored maximum and registers the
joined-rooms cache as a persister listener.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from homeserver.appstate import CONFIG, DATABASE
from homeserver.ephemeral.account_data import AccountDataService
from homeserver.ephemeral.edus import EDU_SENDERS, EduOutbox
from homeserver.ephemeral.keys import ACCOUNT_DATA, PRESENCE, RECEIPTS, TYPING
from homeserver.ephemeral.presence import PresenceService
from homeserver.ephemeral.receipts import ReceiptsService
from homeserver.ephemeral.typing import TypingService
from homeserver.push.rules_service import PushRulesService
from homeserver.push.services import PUSH_RULES
from homeserver.relations.service import RELATIONS
from homeserver.services import MEMBERSHIP, NOTIFIER, PERSISTER, ROOM_ACTIVITY, STORES
from homeserver.storage.account_data import AccountDataStore
from homeserver.storage.filters import FilterStore
from homeserver.storage.presence import PresenceStore
from homeserver.storage.receipts import ReceiptStore
from homeserver.storage.room_directory import RoomReadStore
from homeserver.storage.sync_queries import SyncQueryStore

from .builder import SyncBuilder
from .extensions import SYNC_EXTENSIONS
from .joined_rooms import JoinedRoomsCache
from .service import SyncService

SYNC = web.AppKey("sync", SyncService)
JOINED_ROOMS = web.AppKey("joined_rooms", JoinedRoomsCache)


def ensure_edu_senders(app: web.Application) -> list:
    """The shared EDU hook list (whichever area touches it first creates it)."""
    if EDU_SENDERS not in app:
        app[EDU_SENDERS] = []
    return app[EDU_SENDERS]


def _wire_push_rules(
    rules: PushRulesService, builder: SyncBuilder, account_data: AccountDataService
) -> None:
    """m.push_rules in /sync: the builder reads the live ruleset; each rule change
    writes it as account data, which moves the user's account_data stream (and wakes
    their long-polls) so incremental syncs carry it."""

    async def push_rules_content(user_id: str) -> dict[str, Any]:
        return {"global": (await rules.get_ruleset(user_id)).to_json()}

    async def on_change(user_id: str) -> None:
        await account_data.put(user_id, "m.push_rules", await push_rules_content(user_id))

    builder.push_rules = push_rules_content
    rules.on_change.append(on_change)


async def sync_ctx(app: web.Application) -> AsyncIterator[None]:
    db = app[DATABASE]
    stores = app[STORES]
    notifier = app[NOTIFIER]
    server_name = app[CONFIG].server_name
    outbox = EduOutbox(ensure_edu_senders(app), server_name)

    joined = JoinedRoomsCache(stores)
    app[PERSISTER].add_listener(joined)

    account_store = AccountDataStore(db)
    account_pos = await account_store.get_max_stream_id()
    notifier.advance("account_data", account_pos)
    account_data = AccountDataService(account_store, notifier, account_pos)

    receipt_store = ReceiptStore(db)
    receipt_pos = await receipt_store.get_max_stream_id()
    notifier.advance("receipts", receipt_pos)
    receipts = ReceiptsService(stores, receipt_store, account_data, notifier, outbox, receipt_pos)

    presence = PresenceService(PresenceStore(db), joined, notifier, outbox, server_name)
    await presence.load()
    notifier.advance("presence", presence.position)
    presence.start()  # idle/offline timers; stopped below

    typing = TypingService(stores, notifier, outbox, server_name)
    builder = SyncBuilder(
        stores,
        SyncQueryStore(db),
        RoomReadStore(db),
        joined,
        app[MEMBERSHIP],
        typing,
        receipts,
        presence,
        account_data,
        app[SYNC_EXTENSIONS],
    )
    builder.activity = app.get(ROOM_ACTIVITY)
    if RELATIONS in app:  # the relations area's lifetime runs before this one
        builder.aggregations = app[RELATIONS].bundle_aggregations
    if PUSH_RULES in app:  # so does the push area's
        _wire_push_rules(app[PUSH_RULES], builder, account_data)
    app[JOINED_ROOMS] = joined
    app[ACCOUNT_DATA] = account_data
    app[RECEIPTS] = receipts
    app[PRESENCE] = presence
    app[TYPING] = typing
    app[SYNC] = SyncService(builder, notifier, joined, presence, FilterStore(db))
    try:
        yield
    finally:
        typing.close()
        await presence.close()
