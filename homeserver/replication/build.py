"""Wiring replication into the composition: one call for the main, one for a worker."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from homeserver.config import Config
from homeserver.ephemeral.presence import PresenceService
from homeserver.ephemeral.typing import TypingService
from homeserver.errors import bad_json
from homeserver.moderation import Moderation
from homeserver.rooms.ports import EventListener
from homeserver.storage.cache import set_invalidation_hook
from homeserver.storage.database import Database
from homeserver.storage.errors import StorageError
from homeserver.storage.events import EventStore
from homeserver.storage.migrate import pending_migrations
from homeserver.storage.replication import ReplicationStore
from homeserver.sync.notifier import Notifier

from .follower import ReplicationFollower
from .forward import Forwarder
from .publisher import ReplicationPublisher

log = logging.getLogger(__name__)


@dataclass
class Replication:
    """What the routes and middlewares of this process use (app key REPLICATION)."""

    bus: Any  # .bus.RedisBus
    publisher: ReplicationPublisher | None = None  # the main
    follower: ReplicationFollower | None = None  # a worker
    forwarder: Forwarder | None = None  # a worker
    presence: PresenceService | None = None  # the main: workers report syncs
    backfill: Any = None  # the main: workers' /messages ask it for older history

    async def report_presence(self, request: web.Request) -> web.Response:
        """POST /_replication/presence (main; the replication middleware checked the
        secret): a worker's client started or ended a sync."""
        body = await request.json()
        user, state, started = body.get("user_id"), body.get("set_presence"), body.get("started")
        if not isinstance(user, str) or not isinstance(state, str) or self.presence is None:
            raise bad_json("user_id and set_presence are required")
        if started:
            await self.presence.sync_started(user, state)
        else:
            self.presence.sync_ended(user)
        return web.json_response({})

    async def run_backfill(self, request: web.Request) -> web.Response:
        """POST /_replication/backfill (main): backfill for a worker's /messages."""
        body = await request.json()
        room_id, limit = body.get("room_id"), body.get("limit")
        if not isinstance(room_id, str) or not isinstance(limit, int):
            raise bad_json("room_id and limit are required")
        added = 0 if self.backfill is None else await self.backfill.backfill(room_id, limit)
        return web.json_response({"added": added})


async def require_migrated(database: Database) -> None:
    """A worker never migrates: the main does, and must have done so first."""
    pending = await pending_migrations(database)
    if pending:
        raise StorageError(
            f"the database lacks migrations {', '.join(map(str, pending))}: "
            "start the main process first (workers never change the schema)"
        )


async def build_replication(
    config: Config,
    stack: AsyncExitStack,
    database: Database,
    events: EventStore,
    notifier: Notifier,
    typing: TypingService,
    presence: PresenceService,
    *,
    worker_listeners: Iterable[EventListener],
    out_of_band_listeners: Iterable[EventListener],
    positions: Mapping[str, Callable[[], Awaitable[int]]],
    moderation: Moderation,
    sender: Any = None,
) -> Replication | None:
    """None without workers; else the main's publisher or this worker's follower.
    `sender` (federation.sender.FederationSender or None) learns which destinations
    this process delivers to; wake-ups for the others go over the bus."""
    workers = config.workers
    if not workers.replicated:
        return None
    if not workers.is_worker:
        replication = await build_main_replication(
            config, stack, database, notifier, typing, presence
        )
        publisher = replication.publisher
        assert publisher is not None
        moderation.on_change.append(lambda: publisher.reload("moderation"))
        _shard_sender(workers, sender, replication.bus)
        if sender is not None and not workers.federation_sender_instances:
            # The main delivers: a federation inbound worker that heard from a peer
            # tells it here to stop backing off.
            replication.bus.start(_main_handler(sender))
        else:
            replication.bus.start()
        return replication
    reloads: list[Callable[[], Awaitable[None]]] = [moderation.reload]
    on_fed = None
    if sender is not None and workers.is_federation_sender:
        reloads.append(sender.start)  # after a gap: every owned destination with items

        def on_fed(destination: str, peer_up: bool) -> None:
            if not sender.owns(destination):
                return  # another sender's (never passed on again: no echoes)
            if peer_up:
                sender.notify_peer_up(destination)
            else:
                sender.wake(destination)

    replication = await build_worker_replication(
        config,
        stack,
        database,
        events,
        notifier,
        worker_listeners,
        out_of_band_listeners,
        typing,
        presence,
        positions,
        reloads,
        on_fed,
    )
    _shard_sender(workers, sender, replication.bus)
    return replication


def _main_handler(sender: Any) -> Callable[[dict[str, Any]], Awaitable[None]]:
    async def handle(message: dict[str, Any]) -> None:
        destination = message.get("d")
        if message.get("k") == "fed" and isinstance(destination, str):
            if message.get("up"):
                sender.notify_peer_up(destination)
            else:
                sender.wake(destination)

    return handle


def _shard_sender(workers: Any, sender: Any, bus: Any) -> None:
    """Which destinations this process delivers to; the others' wake-ups go on the bus
    (a worker delivers nothing unless it is a federation sender)."""
    if sender is None or (not workers.federation_sender_instances and not workers.is_worker):
        return
    sender.owns = workers.sends_to
    sender.elsewhere = lambda destination, up: bus.publish({"k": "fed", "d": destination, "up": up})


async def build_main_replication(
    config: Config,
    stack: AsyncExitStack,
    database: Database,
    notifier: Notifier,
    typing: TypingService,
    presence: PresenceService,
) -> Replication:
    """The main: publish every announcement and invalidation, after commit."""
    from .bus import RedisBus  # the redis package: only deployments with workers

    bus = RedisBus(config.workers.redis, config.workers.worker_name)
    bus.before_publish = database.write_barrier
    publisher = ReplicationPublisher(bus, typing, presence)
    notifier.observers.append(publisher.on_announcement)
    set_invalidation_hook(publisher.on_invalidation)
    stack.callback(set_invalidation_hook, None)
    stack.push_async_callback(bus.close)  # started by the caller
    # Workers started before us may hold anything: they resync on this message.
    bus.publish({"k": "resync"})
    return Replication(bus, publisher=publisher, presence=presence)


async def build_worker_replication(
    config: Config,
    stack: AsyncExitStack,
    database: Database,
    events: EventStore,
    notifier: Notifier,
    listeners: Iterable[EventListener],
    out_of_band_listeners: Iterable[EventListener],
    typing: TypingService,
    presence: PresenceService,
    positions: Mapping[str, Callable[[], Awaitable[int]]],
    reloads: Iterable[Callable[[], Awaitable[None]]],
    on_fed: Callable[[str, bool], None] | None = None,
) -> Replication:
    """A worker: follow the bus, forward what it does not serve."""
    from .bus import RedisBus

    workers = config.workers
    assert workers.main is not None and workers.replication_secret is not None
    follower = ReplicationFollower(
        notifier,
        ReplicationStore(database, events),
        listeners,
        out_of_band_listeners,
        typing,
        presence,
        positions,
        reloads,
        on_fed,
        read_events="client" in config.resources,
    )
    forwarder = Forwarder(workers.main.url, workers.replication_secret, follower)
    stack.push_async_callback(forwarder.close)
    pending: set[asyncio.Task[None]] = set()

    def report_sync(user_id: str, set_presence: str, started: bool) -> None:
        task = asyncio.get_running_loop().create_task(
            forwarder.report_sync(user_id, set_presence, started)
        )
        pending.add(task)
        task.add_done_callback(pending.discard)

    presence.forward_syncing = report_sync
    bus = RedisBus(workers.redis, workers.worker_name)
    bus.start(follower.handle, follower.connected)
    stack.push_async_callback(bus.close)
    log.info("Worker %s: forwarding writes to %s", workers.worker_name, workers.main.url)
    return Replication(bus, follower=follower, forwarder=forwarder)
