"""The composition module: builds every service of the server and owns their lifetimes.

`lifetime(...)` is the app's only `cleanup_ctx`. At start-up it builds everything in
dependency order, each service receiving what it uses as constructor arguments:

  signing keys -> database and stores -> background tasks, notifier, rate limits
  -> the federation adapter (its client, keyring, receiving checks, transaction sender
     and the ports the core needs: remote events/rooms/keys/profiles/directory...)
  -> moderation (what admins decided about users and rooms, which the services below
     consult) and the room statistics the admin room list reads
  -> the room service (the only writer of the event graph) with its listeners
  -> ephemeral streams, E2EE, accounts, the read side of rooms, profiles, push, sync
  -> the federation adapter's inbound half (EDUs, transactions), which needs them all
  -> server administration (homeserver.admin.build), which uses nearly everything

then publishes what the route modules read (the AppKeys of homeserver.appstate and
federation.appkeys). Every lifetime is registered on one `AsyncExitStack` right where
its owner is built, so shutdown runs in exactly the reverse order: background work
stops before the services it uses, and the database closes last.

This is, with homeserver/composition_federation.py (the federation adapter's half of the
wiring) and the CLI, where the core imports `federation`. Without a
listener for the federation resource, no federation adapter is built and the core gets
no ports (remote look-ups answer 404, like an unreachable peer).

A new capability (media, search, appservices, workers...) is one package plus one place
here: a `_build_<capability>(...)` step taking the services it needs, registering its
own lifetimes on the stack, and a line in `_publish` for what its routes read.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from typing import Any

from aiohttp import web

from federation.appkeys import FEDERATED_MEMBERSHIP, ROOM_STATE, SERVER_KEYS
from federation.keys import load_server_keys
from federation.media import FederationMediaSource
from federation.queries import FederationToDevice
from federation.query_ports import RemoteDirectoryAdapter, RemoteProfilesAdapter
from homeserver import appstate as keys
from homeserver.admin.build import build_admin
from homeserver.admin.room_stats import RoomStatsUpdater
from homeserver.appservice.devices import AppServiceDevices
from homeserver.appservice.registry import AppServices
from homeserver.appservice.sender import AppServiceSender
from homeserver.background import BackgroundTasks, every
from homeserver.composition_accounts import build_accounts
from homeserver.composition_federation import (
    Overrides,
    build_federation,
    build_inbound,
    edu_sender,
    federation_queries,
    federation_services,
    outbound_sender,
    reader_federation_client,
    remote_keys,
    remote_room_limit,
)
from homeserver.config import Config
from homeserver.delayed.service import DelayedEvents
from homeserver.e2ee.build import build_e2ee
from homeserver.e2ee.sync_extension import E2eeSyncExtension
from homeserver.ephemeral.account_data import AccountDataService
from homeserver.ephemeral.edus import EduOutbox
from homeserver.ephemeral.presence import PresenceService
from homeserver.ephemeral.receipts import ReceiptsService
from homeserver.ephemeral.typing import TypingService
from homeserver.ipfilter import outbound_ip_filter
from homeserver.media.admin import MediaAdmin
from homeserver.media.build import build_media
from homeserver.metrics import Metrics
from homeserver.moderation import Moderation
from homeserver.profiles.directory import UserDirectory
from homeserver.profiles.policy import ProfilePolicy
from homeserver.profiles.service import ProfileService
from homeserver.push.actions import ActionGenerator
from homeserver.push.delivery import PushDelivery
from homeserver.push.rules_service import PushRulesService
from homeserver.push.sync_extension import UnreadCountsExtension
from homeserver.ratelimit import RateLimiters, override_limit
from homeserver.relations.service import RelationsService
from homeserver.replication.build import ProcessParts, build_replication, require_migrated
from homeserver.replication.writers import claim_positions, event_listeners, room_locks
from homeserver.reports.service import ReportService
from homeserver.retention import start_retention
from homeserver.retention_purge import RETENTION_PURGE, RetentionPurgeJobs
from homeserver.rooms.auto_accept_invites import auto_accept
from homeserver.rooms.backfill import RoomBackfill
from homeserver.rooms.creation import RoomCreator
from homeserver.rooms.directory import RoomDirectory
from homeserver.rooms.federated_membership import FederatedMembership
from homeserver.rooms.forget_on_leave import forget_on_leave
from homeserver.rooms.forgotten_purge import start_forgotten_purge
from homeserver.rooms.guest_access import GuestEviction
from homeserver.rooms.hierarchy import SpaceHierarchy
from homeserver.rooms.ingest import RemoteEventIngest
from homeserver.rooms.local_events import LocalEvents
from homeserver.rooms.membership import MembershipService, RemoteMembership
from homeserver.rooms.out_of_band import OutOfBandMemberships
from homeserver.rooms.persister import Persister
from homeserver.rooms.policy_server import PolicyServers
from homeserver.rooms.purge import RoomPurger
from homeserver.rooms.reader import RoomReader
from homeserver.rooms.remote_state import FetchLimits, RemoteState
from homeserver.rooms.restricted_joins import RestrictedJoins
from homeserver.rooms.room_state import RoomState
from homeserver.rooms.sending import RoomSender
from homeserver.rooms.upgrade import RoomUpgrader
from homeserver.search.service import SearchService
from homeserver.sliding_sync.bump_stamps import BumpStamps
from homeserver.sliding_sync.rooms import RoomBuilder
from homeserver.sliding_sync.service import SlidingSyncService
from homeserver.storage import open_database, open_stores
from homeserver.storage.account_data import AccountDataStore
from homeserver.storage.admin_rooms import AdminRoomStore
from homeserver.storage.admin_users import AdminUserStore
from homeserver.storage.appservices import AppServiceStore
from homeserver.storage.cache import cache_sizing
from homeserver.storage.delayed_events import DelayedEventStore
from homeserver.storage.filters import FilterStore
from homeserver.storage.presence import PresenceStore
from homeserver.storage.push import PushStore
from homeserver.storage.receipts import ReceiptStore
from homeserver.storage.relations_read import RelationsReadStore
from homeserver.storage.reports import ReportStore
from homeserver.storage.room_directory import RoomReadStore
from homeserver.storage.room_purge import RoomPurgeStore
from homeserver.storage.search import SearchStore
from homeserver.storage.sliding_sync import SlidingSyncStore
from homeserver.storage.sync_queries import SyncQueryStore
from homeserver.storage.user_directory import UserDirectoryStore
from homeserver.sync.activity import RoomActivity
from homeserver.sync.builder import SyncBuilder
from homeserver.sync.joined_rooms import JoinedRoomsCache
from homeserver.sync.notifier import EventNotifierBridge, Notifier
from homeserver.sync.service import SyncService
from homeserver.sync.tokens import StreamToken

log = logging.getLogger(__name__)

Publish = Callable[[web.Application], None]


def lifetime(
    overrides: Overrides, metrics: Metrics | None = None
) -> Callable[[web.Application], AsyncIterator[None]]:
    """The app's cleanup_ctx: build everything from app[CONFIG], publish, tear down.
    `metrics` (built by the app factory, whose middleware feeds it) also hears of the
    database, persisted events and federation traffic."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            with cache_sizing(app[keys.CONFIG].caches.size_for):  # caches built now
                publish = await build(app[keys.CONFIG], stack, overrides, metrics)
            publish(app)
            yield

    return ctx


async def build(
    config: Config, stack: AsyncExitStack, overrides: Overrides, metrics: Metrics | None = None
) -> Publish:
    """Build every service in dependency order; register each lifetime on `stack`.
    Returns the function that puts what the handlers read into app state."""
    server_keys = load_server_keys(config)
    log.info(
        "Signing keys: %s (%s)",
        ", ".join(f"{k.alg}:{k.version}" for k in server_keys.signing_keys),
        config.keys.signing_key_path,
    )
    config.database.path.parent.mkdir(parents=True, exist_ok=True)
    worker = config.workers.is_worker  # a worker writes nothing with a stream position
    database = await open_database(
        config.database,
        migrate=not worker,
        observer=metrics.db_observer if metrics is not None else None,
    )
    stack.push_async_callback(database.close)
    if worker:
        await require_migrated(database)
    log.info("Database: %s", config.database.describe())
    stores = await open_stores(database)
    stores.retention.settings = config.retention  # rooms' retention policies (MSC1763)
    stores.events.index_for_search = config.enable_search
    claim_positions(config, stores, database)
    tasks = BackgroundTasks()
    stack.push_async_callback(tasks.close)
    notifier = Notifier(StreamToken(events=await stores.events.get_current_stream_position()))
    server_name = config.server_name

    fed = build_federation(config, server_keys, stores, stack, overrides)
    sender = outbound_sender(config, stores, fed)
    outbox = EduOutbox(edu_sender(sender), server_name)
    if metrics is not None and fed is not None and fed.sender is not None:
        metrics.watch_outbound(fed.sender)

    # -- what admins decided (consulted by membership, sending, sessions, profiles...) ----
    admin_user_store = AdminUserStore(database)
    admin_room_store = AdminRoomStore(database, server_name)
    moderation = await Moderation.load(admin_user_store, admin_room_store)
    ratelimit_overrides = await admin_user_store.all_ratelimit_overrides()
    app_services = AppServices(config.app_services, server_name)
    limiters = RateLimiters(
        config.ratelimit,
        {u: override_limit(o) for u, o in ratelimit_overrides.items()},
        exempt=app_services.unlimited_user,
    )
    room_stats = RoomStatsUpdater(admin_room_store, stores.events)
    if not worker:
        await room_stats.start()  # folds state changes into room_stats, in the background
        stack.push_async_callback(room_stats.stop)

    # -- what hears of every persisted event (the room service's listeners) --------------
    account_store = AccountDataStore(database)
    account_position = await account_store.get_max_stream_id()
    notifier.advance("account_data", account_position)
    account_data = AccountDataService(account_store, notifier, account_position)
    push_store = PushStore(database)
    push_rules = PushRulesService(push_store, account_data)
    push_delivery = PushDelivery(
        stores,
        push_store,
        outbound_ip_filter(config.federation),
        server_name,
        settings=config.push,
    )
    stack.push_async_callback(push_delivery.close)
    this = config.workers.worker_name
    stores.events.instance_name = this  # whose push rules evaluate what it persists
    push_actions = ActionGenerator(
        stores, push_store, push_rules, server_name, push_delivery, this, config.push.enabled
    )
    stack.push_async_callback(push_actions.close)
    if not worker:  # one process deletes what is kept for a while only
        start_retention(database, tasks, config.redaction_retention_ms, stores.events.forget_cached)
    relations = RelationsService(stores, RelationsReadStore(database), RoomReadStore(database))
    joined = JoinedRoomsCache(stores)
    user_directory = UserDirectory(
        stores,
        UserDirectoryStore(database),
        server_name,
        enabled=config.user_directory_enabled,
        search_all_users=config.search_all_users,
    )
    stack.push_async_callback(user_directory.close)
    activity = RoomActivity(notifier.current.events)
    bridge = EventNotifierBridge(notifier)
    sliding_store = SlidingSyncStore(database)
    bump_stamps = BumpStamps(sliding_store)
    app_service_sender = AppServiceSender(
        app_services, stores, AppServiceStore(database, stores.events)
    )
    if config.workers.sends_to_appservices:
        await app_service_sender.start()  # resume each appservice from its stored position
        stack.push_async_callback(app_service_sender.close)
    if not worker:
        await app_services.create_senders(stores.accounts)  # each acts as its sender user

    # -- the room service: the only writer of the event graph -----------------------------
    room_state = RoomState(stores)
    guest_eviction = GuestEviction(stores, server_name, tasks)
    delayed = DelayedEvents(DelayedEventStore(database), config.max_event_delay_ms, not worker)
    heard = event_listeners(
        config.workers.shared_writers,
        views=[activity, relations, joined, bump_stamps],
        notifier=bridge,
        writer_side=[push_actions, *([metrics] if metrics is not None else [])],
        singletons=[
            user_directory,
            room_stats,
            app_service_sender,
            guest_eviction,
            delayed,
            *forget_on_leave(config, RoomReadStore(database), tasks),
            *auto_accept(config, stores, account_data, moderation, tasks, lambda: membership),
        ],  # fmt: skip
        is_worker=worker,
    )
    persister = Persister(
        stores,
        room_state,
        server_name,
        listeners=heard.persister,
        out_of_band_listeners=heard.out_of_band,
        outbound=fed.sender if fed else None,
    )
    locks = room_locks(config, stores, database, stack, heard.commits)
    policy = PolicyServers(stores, fed.policy if fed else overrides.policy_servers)
    local_events = LocalEvents(
        stores, room_state, persister, locks, server_name, server_keys.primary, policy=policy
    )
    stack.push_async_callback(local_events.close)
    remote_events = fed.remote_events if fed else None
    remote_state = RemoteState(
        stores, persister, locks, remote_events, overrides.fetch_limits or FetchLimits()
    )
    ingest = RemoteEventIngest(stores, room_state, persister, locks, remote_state, policy)
    out_of_band = OutOfBandMemberships(stores, persister, locks, server_name)
    reader_client = reader_federation_client(config, fed, server_keys, stack)
    queries = federation_queries(fed, reader_client)
    remote_profiles = overrides.remote_profiles or (
        RemoteProfilesAdapter(queries) if queries is not None else None
    )
    membership = MembershipService(
        stores,
        local_events,
        server_name,
        RemoteMembership(
            fed.remote_rooms, ingest, out_of_band, remote_room_limit(config, stores, fed.client)
        )
        if fed and fed.remote_rooms
        else None,
        remote_profiles,
        moderation=moderation,
        invites_blocked=account_data.invites_blocked,
        invite_profiles=config.profiles.include_on_invite,
        prejoin_state=config.prejoin_state,
    )
    profile_policy = ProfilePolicy(stores, database, server_name, config.profiles)
    guest_eviction.bind(lambda room, user: membership.set_membership(room, user, user, "leave"))
    room_creator = RoomCreator(local_events)
    federated_membership = FederatedMembership(
        stores,
        local_events,
        membership,
        ingest,
        out_of_band,
        RestrictedJoins(stores, server_name),
        server_name,
        server_keys.primary,
        moderation,
    )
    purger = RoomPurger(
        stores, RoomPurgeStore(database, push_store.forget_room), locks, server_name
    )
    retention_purge = RetentionPurgeJobs(stores.retention, purger)
    if config.retention.enabled and not worker:  # purges run on the main process only
        retention_purge.start(tasks)
    if not worker:
        start_forgotten_purge(
            config.forgotten_room_retention_ms, database, purger, server_name, tasks
        )
    backfill = (
        RoomBackfill(
            stores, room_state, persister, locks, ingest, remote_state, remote_events, server_name
        )
        if remote_events
        else None
    )

    # -- ephemeral streams ---------------------------------------------------------------
    def read_marker_moved(user_id: str, room_id: str) -> None:
        push_store.read_marker_moved(user_id, room_id)
        push_delivery.badge_update(user_id)  # the user's apps get their new badge

    receipt_store = ReceiptStore(database, read_marker_moved)
    receipt_position = await receipt_store.get_max_stream_id()
    notifier.advance("receipts", receipt_position)
    receipts = ReceiptsService(
        stores, receipt_store, account_data, notifier, outbox, receipt_position
    )
    presence = PresenceService(
        PresenceStore(database), joined, notifier, outbox, server_name, mode=config.presence_mode
    )
    await presence.load()
    notifier.advance("presence", presence.position)
    if config.workers.writes("presence"):
        presence.start()  # idle/offline timers, the row writer
    stack.push_async_callback(presence.close)
    typing = TypingService(stores, notifier, outbox, server_name, moderation)
    stack.callback(typing.close)
    app_service_sender.attach_ephemeral(typing, receipts, notifier)

    # -- end-to-end encryption -----------------------------------------------------------
    e2ee = await build_e2ee(
        database,
        stores,
        notifier,
        activity,
        server_name,
        sender,
        remote_keys(fed, reader_client),
        FederationToDevice(sender) if sender else None,
        share_device_names=config.federation.allow_device_name_lookup_over_federation,
    )
    e2ee_keys, to_device, device_lists = e2ee.keys, e2ee.to_device, e2ee.device_lists
    devices = AppServiceDevices(app_services, to_device, e2ee_keys, stores.accounts)
    app_service_sender.attach_devices(devices, e2ee_keys, device_lists)
    replication = await build_replication(
        ProcessParts(
            config,
            stack,
            database,
            stores.events,
            notifier,
            typing,
            presence,
            moderation,
            worker_listeners=heard.follower,
            out_of_band_listeners=heard.follower_out_of_band,
            commits=heard.commits,
            positions={
                "events": stores.events.get_current_stream_position,
                "account_data": account_store.get_max_stream_id,
                "receipts": receipt_store.get_max_stream_id,
                "to_device": to_device.current_position,
                "device_lists": device_lists.current_position,
            },
            sender=sender,
            push=(push_store, push_delivery),
            push_actions=push_actions,
            appservices=app_service_sender,
            limiters=limiters,
            admin_users=admin_user_store,
        )
    )
    if not worker or config.workers.is_event_persister:  # where events are written
        await push_actions.catch_up()

    # -- accounts ------------------------------------------------------------------------
    accounts = await build_accounts(
        config,
        database,
        stores,
        stack,
        tasks,
        e2ee=e2ee,
        push_store=push_store,
        account_data=account_data,
        limiters=limiters,
        moderation=moderation,
        membership=membership,
        local_events=local_events,
        room_creator=room_creator,
        signing_key=server_keys.primary,
        exchange=fed.remote_rooms if fed else None,
        metrics=metrics,
    )

    # -- reading rooms, directories, profiles, reports ------------------------------------
    read_store = RoomReadStore(database)
    reader = RoomReader(  # a worker asks the main to backfill (it persists)
        stores,
        read_store,
        aggregations=relations.bundle_aggregations,
        backfill=replication.forwarder if worker and replication else backfill,
    )
    if replication is not None and (not worker or config.workers.is_event_persister):
        replication.backfill = backfill  # for the readers' /messages
    remote_directory = RemoteDirectoryAdapter(queries) if queries is not None else None
    directory = RoomDirectory(
        stores, server_name, remote_directory, local_events=local_events, policy=config.directory
    )
    accounts.auto_join.bind(directory.resolve_alias)  # other servers' aliases
    profiles = ProfileService(
        stores, local_events, server_name, remote_profiles, moderation, profile_policy
    )
    if not worker:
        await user_directory.reconcile()  # index what changed while we were down
    reports = ReportService(stores, ReportStore(database), server_name)

    # -- sync ----------------------------------------------------------------------------
    builder = SyncBuilder(
        stores, SyncQueryStore(database), read_store, joined, membership, typing, receipts,
        presence, account_data,
        [E2eeSyncExtension(e2ee_keys, to_device, device_lists),
         UnreadCountsExtension(push_actions, push_store)],
        activity=activity, aggregations=relations.bundle_aggregations,
        push_rules=push_rules.account_data_content, excluded_rooms=config.exclude_rooms_from_sync,
    )  # fmt: skip
    sync = SyncService(builder, notifier, joined, presence, FilterStore(database))

    # -- federation, inbound half ----------------------------------------------------------
    ephemeral = [typing, receipts, presence]
    transactions = await build_inbound(
        config, fed, stores, stack, tasks, ingest, ephemeral, e2ee, metrics, replication
    )

    # -- simplified sliding sync (MSC4186) ------------------------------------------------
    sliding_sync = SlidingSyncService(
        stores, sliding_store, RoomBuilder(stores, reader, push_store, membership), notifier,
        account_data, receipts, typing, to_device, e2ee_keys, device_lists, push_actions,
        bump_stamps, activity, excluded_rooms=config.exclude_rooms_from_sync,
        forgotten_rooms=read_store.get_forgotten_rooms,
    )  # fmt: skip
    stack.push_async_callback(sliding_sync.close)  # positions written behind
    if not worker:
        tasks.spawn(every(3600, sliding_sync.expire_positions), "sliding sync expiry")

    # -- the content repository ----------------------------------------------------------
    fetches_media = fed is not None and (fed.sender is not None or "media" in config.resources)
    remote_media = FederationMediaSource(fed.client) if fed and fetches_media else None
    media, previewer = build_media(config, database, stack, tasks, remote_media)
    media.download_limiter = limiters.get("remote_media_download")

    # -- server administration -------------------------------------------------------------
    admin = await build_admin(
        config,
        database,
        stores,
        stack,
        user_store=admin_user_store,
        room_store=admin_room_store,
        moderation=moderation,
        room_stats=room_stats,
        limiters=limiters,
        auth_store=accounts.auth_store,
        hasher=accounts.hasher,
        sessions=accounts.sessions,
        lifecycle=accounts.lifecycle,
        last_seen=accounts.last_seen,
        profiles=profiles,
        push_store=push_store,
        account_data_store=account_store,
        account_data=account_data,
        reader=reader,
        read_store=read_store,
        directory=directory,
        membership=membership,
        local_events=local_events,
        creator=room_creator,
        purger=purger,
        outbound=fed.sender if fed else None,
    )

    room_sender = RoomSender(
        stores, read_store, local_events, moderation, membership.check_invite_allowed
    )
    room_sender.profile_policy = profile_policy
    await delayed.start(room_sender, stores.transactions)  # sends what came due while down
    stack.push_async_callback(delayed.close)
    services: dict[web.AppKey[Any], Any] = {
        keys.STORES: stores,
        keys.RATE_LIMITERS: limiters,
        keys.NOTIFIER: notifier,
        keys.LOCAL_EVENTS: local_events,
        keys.MEMBERSHIP: membership,
        keys.ROOM_CREATOR: room_creator,
        keys.ROOM_READ_STORE: read_store,
        keys.ROOM_READER: reader,
        keys.ROOM_SENDER: room_sender,
        keys.DELAYED_EVENTS: delayed,
        keys.ROOM_DIRECTORY: directory,
        keys.SPACE_HIERARCHY: SpaceHierarchy(stores, directory, remote_directory),
        keys.ROOM_UPGRADER: RoomUpgrader(stores, local_events, room_creator),
        keys.RELATIONS: relations,
        keys.SYNC: sync,
        keys.JOINED_ROOMS: joined,
        keys.ACCOUNT_DATA: account_data,
        keys.RECEIPTS: receipts,
        keys.PRESENCE: presence,
        keys.TYPING: typing,
        keys.PUSH_STORE: push_store,
        keys.PUSH_RULES: push_rules,
        keys.PUSH_ACTIONS: push_actions,
        keys.PROFILES: profiles,
        keys.USER_DIRECTORY: user_directory,
        keys.REPORTS: reports,
        keys.MODERATION: moderation,
        keys.ROOM_STATS: room_stats,
        keys.MEDIA: media,
        keys.SEARCH: SearchService(stores, SearchStore(database), reader),
        keys.SLIDING_SYNC: sliding_sync,
        keys.APP_SERVICES: app_services,
        keys.APP_SERVICE_SENDER: app_service_sender,
        keys.MEDIA_ADMIN: MediaAdmin(media, media.store),
        keys.URL_PREVIEWER: previewer,
        keys.REPLICATION: replication,
        RETENTION_PURGE: retention_purge,
        SERVER_KEYS: server_keys,
        ROOM_STATE: room_state,
        FEDERATED_MEMBERSHIP: federated_membership,
    }
    services.update(keys.e2ee_services(e2ee) | keys.admin_services(admin))
    services.update(accounts.app_keys(config))
    services.update(federation_services(fed, transactions))

    def publish(app: web.Application) -> None:
        for key, value in services.items():
            app[key] = value

    return publish
