"""Wiring replication into the composition: one call for the main, one for a worker."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from contextlib import AsyncExitStack
from dataclasses import asdict, dataclass
from typing import Any

from aiohttp import web

from homeserver.config import Config, RateLimit
from homeserver.config.workers import MAIN
from homeserver.ephemeral.presence import STATES, PresenceService
from homeserver.ephemeral.typing import TypingService
from homeserver.errors import bad_json
from homeserver.moderation import Moderation
from homeserver.push.remote_actions import MAX_POSITIONS, RemoteActions
from homeserver.ratelimit import RateLimiters, override_limit
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
from .pushers import PusherShard, PushForwarder
from .ratelimits import SharedLimits
from .sync_reports import SyncReporter
from .writers import LocalCommits, spawn

log = logging.getLogger(__name__)

# What a role does with each kind of bus message (by its "k").
Handlers = dict[str, Callable[[dict[str, Any]], Awaitable[None] | None]]


@dataclass
class Replication:
    """What the routes and middlewares of this process use (app key REPLICATION)."""

    bus: Any  # .bus.RedisBus
    publisher: ReplicationPublisher | None = None  # the main
    follower: ReplicationFollower | None = None  # a worker
    forwarder: Forwarder | None = None  # a worker
    presence: PresenceService | None = None  # the main: workers report syncs
    backfill: Any = None  # the main: workers' /messages ask it for older history
    commits: LocalCommits | None = None  # with event persisters: what this process wrote
    # The main, event persisters: federation PDUs (and, the main, EDUs) a federation
    # inbound worker checked (replication/federation.py FederationWriter).
    federation: Any = None

    def written(self) -> int:
        """The newest event position this process wrote (0: none, or no persisters)."""
        return self.commits.last if self.commits is not None else 0

    async def report_presence(self, request: web.Request) -> web.Response:
        """POST /_replication/presence (the presence writer; the replication middleware
        checked the secret): another process's client started or ended a sync, its
        user acted or set their presence (answered with the new row), or another
        server's update for one of its users arrived there."""
        body = await request.json()
        if not isinstance(body, dict) or self.presence is None:
            raise bad_json("a JSON object is required, on the presence writer")
        user, process = body.get("user_id"), body.get("process")
        if isinstance(process, str):
            await _sync_report(self.presence, process, body)
            return web.json_response({})
        remote = body.get("remote")
        if isinstance(remote, dict):
            await _set_remote(self.presence, remote)
            return web.json_response({})
        if isinstance(user, str) and isinstance(body.get("set"), str):
            row = await _set_local(self.presence, user, body)
            return web.json_response({"row": asdict(row) if row is not None else None})
        if isinstance(user, str) and body.get("active") is True:
            await self.presence.bump_active(user)  # the user acted on that worker
            return web.json_response({})
        raise bad_json("not a presence report")

    async def run_backfill(self, request: web.Request) -> web.Response:
        """POST /_replication/backfill (the room's persister, or the main): backfill
        for a reader's /messages."""
        body = await request.json()
        room_id, limit = body.get("room_id"), body.get("limit")
        if not isinstance(room_id, str) or not isinstance(limit, int):
            raise bad_json("room_id and limit are required")
        added = 0 if self.backfill is None else await self.backfill.backfill(room_id, limit)
        return web.json_response({"added": added})


async def _set_local(presence: PresenceService, user: str, body: dict[str, Any]) -> Any:
    state, message = body["set"], body.get("status_msg")
    if state not in STATES or not isinstance(message, str | None):
        raise bad_json("set must be a presence state, status_msg a string")
    keep = body.get("keep_msg") is True
    return await presence.set_local(user, state, message, keep_msg=keep)


async def _set_remote(presence: PresenceService, update: dict[str, Any]) -> None:
    user, state = update.get("user_id"), update.get("presence")
    message, ago = update.get("status_msg"), update.get("last_active_ago")
    if (
        isinstance(user, str)
        and isinstance(state, str)
        and isinstance(message, str | None)
        and (ago is None or (isinstance(ago, int) and not isinstance(ago, bool)))
    ):
        active = update.get("currently_active") is True
        await presence.set_remote(user, state, message, ago, active)


async def _sync_report(presence: PresenceService, process: str, body: dict[str, Any]) -> None:
    """Another process's report of its syncing users (replication/sync_reports.py):
    `syncing` {user: set_presence} started there, `stopped` {user: ms ago} no longer,
    `snapshot` {user: set_presence} all of them."""

    def states(value: Any) -> dict[str, str] | None:
        if not isinstance(value, dict):
            return None
        return {u: s for u, s in value.items() if isinstance(u, str) and s in STATES}

    if (syncing := states(body.get("syncing"))) is not None:
        await presence.remote_started(process, syncing)
    stopped = body.get("stopped")
    if isinstance(stopped, dict):
        presence.remote_stopped(
            process,
            {
                u: ago
                for u, ago in stopped.items()
                if isinstance(u, str) and isinstance(ago, int) and not isinstance(ago, bool)
            },
        )
    if (snapshot := states(body.get("snapshot"))) is not None:
        presence.remote_snapshot(process, snapshot)


async def require_migrated(database: Database) -> None:
    """A worker never migrates: the main does, and must have done so first."""
    pending = await pending_migrations(database)
    if pending:
        raise StorageError(
            f"the database lacks migrations {', '.join(map(str, pending))}: "
            "start the main process first (workers never change the schema)"
        )


@dataclass
class ProcessParts:
    """What replication needs from the composition (the same for every role)."""

    config: Config
    stack: AsyncExitStack
    database: Database
    events: EventStore
    notifier: Notifier
    typing: TypingService
    presence: PresenceService
    moderation: Moderation
    # The read side's event listeners (a client reader runs them for every event).
    worker_listeners: Iterable[EventListener]
    out_of_band_listeners: Iterable[EventListener]
    # Each persisted stream's current position, read from the database.
    positions: Mapping[str, Callable[[], Awaitable[int]]]
    # federation.sender.FederationSender or None: learns which destinations this
    # process delivers to; wake-ups for the others go over the bus.
    sender: Any = None
    # (PushStore, PushDelivery): pusher workers send, the writer publishes.
    push: tuple[Any, Any] | None = None
    # push.actions.ActionGenerator: writers announce the actions they recorded,
    # replaying processes wait for them (push/remote_actions.py).
    push_actions: Any = None
    # appservice.sender.AppServiceSender: on the worker named to send, or the main.
    appservices: Any = None
    # With event persisters: what this process writes is announced and followed here.
    commits: LocalCommits | None = None
    # homeserver.ratelimit.RateLimiters: charges and overrides are shared across the
    # deployment; admin_users (storage.admin_users.AdminUserStore) holds the overrides.
    limiters: RateLimiters | None = None
    admin_users: Any = None


async def build_replication(parts: ProcessParts) -> Replication | None:
    """None without workers. The main publishes; workers follow and forward; with
    event persisters (homeserver.replication.writers) the main and the persisters
    publish and every process follows the event stream."""
    workers = parts.config.workers
    if not workers.replicated:
        return None
    from .bus import RedisBus  # the redis package: only deployments with workers

    bus = RedisBus(workers.redis, workers.worker_name)
    parts.stack.push_async_callback(bus.close)
    sender = parts.sender
    if sender is not None and (workers.federation_sender_instances or workers.is_worker):
        sender.owns = workers.sends_to
        sender.elsewhere = lambda dest, up: bus.publish({"k": "fed", "d": dest, "up": up})
    handlers: Handlers = {}
    shared = _shared_limits(parts, bus)
    if shared is not None:
        handlers.update(shared.handlers())
    if workers.is_worker:
        replication = await _worker(parts, bus, handlers, shared)
        replication.commits = parts.commits
        return replication
    replication = _main(parts, bus)
    replication.commits = parts.commits
    if workers.shared_writers:
        return await _main_following(parts, bus, replication, handlers)
    if sender is not None and not workers.federation_sender_instances:
        # The main delivers: a federation inbound worker that heard from a peer
        # tells it here to stop backing off.
        handlers["fed"] = lambda message: _wake(sender, message)

    async def handle(message: dict[str, Any]) -> None:
        kind = message.get("k")
        handler = handlers.get(kind) if isinstance(kind, str) else None
        if handler is not None:
            await _maybe_await(handler(message))

    bus.start(handle)
    return replication


def _shared_limits(parts: ProcessParts, bus: Any) -> SharedLimits | None:
    limiters, store = parts.limiters, parts.admin_users
    if limiters is None or store is None:
        return None

    async def load_override(user_id: str) -> RateLimit | None:
        override = await store.get_ratelimit_override(user_id)
        return None if override is None else override_limit(override)

    async def load_overrides() -> dict[str, RateLimit]:
        stored = await store.all_ratelimit_overrides()
        return {user_id: override_limit(o) for user_id, o in stored.items()}

    return SharedLimits(limiters, bus, load_override, load_overrides)


async def _maybe_await(result: Awaitable[None] | None) -> None:
    if result is not None:
        await result


def _wake(sender: Any, message: dict[str, Any]) -> None:
    """A `fed` message: a destination has news, or its peer is back."""
    destination = message.get("d")
    if not isinstance(destination, str) or not sender.owns(destination):
        return  # another sender's (never passed on again: no echoes)
    if message.get("up"):
        sender.notify_peer_up(destination)
    else:
        sender.wake(destination)


def _publish(parts: ProcessParts, bus: Any) -> ReplicationPublisher:
    """A writing process (the main, an event persister): publish its announcements
    and invalidations, each after its commit; never what it replays from others."""
    bus.before_publish = parts.database.write_barrier
    workers = parts.config.workers
    if parts.push is not None and (workers.pusher_instances or workers.is_event_persister):
        parts.push[1].forward = PushForwarder(bus)
    if not workers.sends_to_appservices and parts.appservices is not None:
        parts.appservices.forward = bus.publish
    publisher = ReplicationPublisher(
        bus, parts.typing, parts.presence, presence_writer=workers.writes("presence")
    )
    publisher.replaying = lambda: parts.notifier.replaying
    parts.notifier.observers.append(publisher.on_announcement)
    set_invalidation_hook(publisher.on_invalidation)
    parts.stack.callback(set_invalidation_hook, None)
    if parts.push_actions is not None:
        parts.push_actions.on_recorded = lambda ps, n, late: _announce_actions(bus, ps, n, late)
    if parts.commits is not None:
        parts.commits.publish = bus.publish  # events: announced by the writer itself
    return publisher


def _publish_streams(parts: ProcessParts, bus: Any, streams: frozenset[str]) -> None:
    """A worker that writes some streams (account data, to-device, receipts) and
    otherwise only reads: announce its writes of those streams and the cache keys it
    invalidates (ignored users, invite permissions, unread counts...), each after its
    commit; never what it replays from others. A receipt changes the user's badge: the
    process sending their push notifications is told over the bus; a device-list change
    is told to the appservice sender the same way (MSC3202)."""
    bus.before_publish = parts.database.write_barrier
    if "receipts" in streams and parts.push is not None:
        parts.push[1].forward = PushForwarder(bus)
    appservices = parts.appservices
    if "device_lists" in streams and appservices is not None:
        appservices.forward = bus.publish  # a reader never sends to appservices
    publisher = ReplicationPublisher(
        bus, parts.typing, parts.presence, presence_writer="presence" in streams
    )
    publisher.replaying = lambda: parts.notifier.replaying

    def announce(
        stream: str, position: int, users: tuple[str, ...], rooms: tuple[str, ...]
    ) -> None:
        if stream in streams:
            publisher.on_announcement(stream, position, users, rooms)

    parts.notifier.observers.append(announce)
    set_invalidation_hook(publisher.on_invalidation)
    parts.stack.callback(set_invalidation_hook, None)


def _announce_actions(bus: Any, positions: list[int], counted: int, late: bool) -> None:
    """A writer finished the push actions of these events (push/remote_actions.py);
    `late`: recorded after later events' (a retry, a catch-up at start)."""
    for i in range(0, len(positions), MAX_POSITIONS):
        message = {"k": "acts", "ps": positions[i : i + MAX_POSITIONS], "n": counted}
        bus.publish({**message, "late": 1} if late else message)


def _follow_actions(
    parts: ProcessParts,
    listeners: list[EventListener],
    reloads: list[Callable[[], Awaitable[None]]],
    handlers: Handlers,
) -> None:
    """A process replaying other processes' events: its /sync counts wait for their
    push actions and include them. First among the listeners: an event is pending
    before the notifier wakes a /sync for it."""
    if parts.push_actions is None or parts.push is None:
        return
    remote = RemoteActions(parts.push[0])
    parts.push_actions.remote = remote
    listeners.insert(0, remote)
    handlers["acts"] = remote.recorded
    reloads.append(remote.forget)
    announce = parts.push_actions.on_recorded
    if announce is not None:  # the main with persisters: it replays its own writes too

        def recorded(positions: list[int], counted: int, late: bool) -> None:
            announce(positions, counted, late)
            remote.local_recorded(positions)

        parts.push_actions.on_recorded = recorded


def _main(parts: ProcessParts, bus: Any) -> Replication:
    """The main: publish every announcement and invalidation, after commit."""
    publisher = _publish(parts, bus)
    parts.moderation.on_change.append(lambda: publisher.reload("moderation"))
    # Workers started before us may hold anything: they resync on this message.
    bus.publish({"k": "resync"})
    writes_presence = parts.config.workers.writes("presence")
    return Replication(
        bus, publisher=publisher, presence=parts.presence if writes_presence else None
    )


async def _main_following(
    parts: ProcessParts,
    bus: Any,
    replication: Replication,
    handlers: Handlers,
) -> Replication:
    """The main with event persisters: it also follows the event stream (its views and
    the once-per-deployment jobs read it from the database), sends the persisters'
    push notifications when no pusher worker does, and routes room writes."""
    workers = parts.config.workers
    assert workers.main is not None and workers.replication_secret is not None
    reloads: list[Callable[[], Awaitable[None]]] = []
    sender = parts.sender
    if sender is not None and not workers.federation_sender_instances:
        handlers["fed"] = lambda message: _wake(sender, message)
    store = ReplicationStore(parts.database, parts.events)
    if parts.push is not None and not workers.pusher_instances:
        pushers = PusherShard(
            parts.push[0], parts.events, parts.push[1], lambda _user: True, store, MAIN
        )
        await pushers.start()
        reloads.append(pushers.catch_up)
        handlers["push"] = handlers["badge"] = pushers.handle
    appservices = parts.appservices
    if appservices is not None and workers.sends_to_appservices:
        # Device-list changes a reader wrote (`stream_writers: {device_lists: [...]}`).
        handlers["as_keys"] = handlers["as_devices"] = appservices.replicated
    listeners = list(parts.worker_listeners)
    _follow_actions(parts, listeners, reloads, handlers)
    follower = _follower(parts, store, listeners, reloads, handlers, True)
    replication.follower = follower
    replication.forwarder = Forwarder(
        workers.main.url, workers.replication_secret, follower, _presence_url(workers)
    )
    parts.stack.push_async_callback(replication.forwarder.close)
    if not workers.writes("presence"):
        _report_presence(parts, replication.forwarder, reloads)
    bus.start(follower.handle, follower.connected)
    return replication


def _presence_url(workers: Any) -> str | None:
    """The presence writer's replication URL (None: the main writes presence)."""
    writer = workers.single_writer("presence")
    return None if writer == MAIN else str(workers.instance_map[writer].url)


def _report_presence(
    parts: ProcessParts, forwarder: Forwarder, reloads: list[Callable[[], Awaitable[None]]]
) -> None:
    """A process that does not write presence: every change made here goes to the
    writer (who syncs here when that changes, actions and other servers' updates best
    effort, a user's own change answered with the writer's row)."""
    presence = parts.presence
    reporter = SyncReporter(
        parts.config.workers.worker_name, forwarder.report_syncs, presence.touch_needed
    )
    presence.forward_syncing = reporter
    reporter.start()
    parts.stack.push_async_callback(reporter.close)

    async def resync() -> None:  # the writer may have restarted
        reporter.resync()

    reloads.append(resync)
    pending: set[asyncio.Task[None]] = set()
    presence.forward_active = lambda user_id: spawn(forwarder.report_active(user_id), pending)
    presence.forward_set = forwarder.set_presence
    presence.forward_remote = forwarder.report_remote


def _follower(
    parts: ProcessParts,
    store: ReplicationStore,
    listeners: list[EventListener],
    reloads: list[Callable[[], Awaitable[None]]],
    handlers: Handlers,
    read_events: bool,
) -> ReplicationFollower:
    follower = ReplicationFollower(
        parts.notifier,
        store,
        listeners,
        parts.out_of_band_listeners,
        parts.typing,
        parts.presence,
        parts.positions,
        reloads,
        handlers,
        read_events=read_events,
    )
    commits = parts.commits
    if commits is not None:
        pending: set[asyncio.Task[None]] = set()

        def follow(position: int) -> None:  # our own write: read it in stream order
            spawn(follower.handle({"k": "pos", "s": "events", "p": position}), pending)

        commits.follow = follow
    return follower


async def _worker(
    parts: ProcessParts,
    bus: Any,
    handlers: Handlers,
    shared: SharedLimits | None,
) -> Replication:
    """A worker: follow the bus, forward what it does not serve (an event persister
    also publishes what it writes)."""
    workers = parts.config.workers
    assert workers.main is not None and workers.replication_secret is not None
    if workers.is_event_persister:
        _publish(parts, bus)
    elif workers.reader_streams:
        _publish_streams(parts, bus, workers.reader_streams)
    reloads: list[Callable[[], Awaitable[None]]] = [parts.moderation.reload]
    if shared is not None:
        reloads.append(shared.reload)  # overrides an admin changed while we missed it
    listeners = list(parts.worker_listeners)
    sender = parts.sender if workers.is_federation_sender else None
    if sender is not None:
        reloads.append(sender.start)  # after a gap: every owned destination with items
        handlers["fed"] = lambda message: _wake(sender, message)
    store = ReplicationStore(parts.database, parts.events)
    if workers.is_pusher and parts.push is not None:
        pushers = PusherShard(
            parts.push[0],
            parts.events,
            parts.push[1],
            workers.pushes_for,
            store,
            workers.worker_name,
        )
        await pushers.start()  # from where this pusher stopped
        reloads.append(pushers.catch_up)  # after a gap: every action since our position
        handlers["push"] = handlers["badge"] = pushers.handle
    appservices = parts.appservices if workers.sends_to_appservices else None
    if appservices is not None:
        listeners.append(appservices)  # a gap replays the events it missed
        reloads.append(appservices.resume_to_device)
        handlers["as_keys"] = handlers["as_devices"] = appservices.replicated
    read_events = "client" in parts.config.resources or appservices is not None
    if "client" in parts.config.resources:
        _follow_actions(parts, listeners, reloads, handlers)
    follower = _follower(parts, store, listeners, reloads, handlers, read_events)
    forwarder = Forwarder(
        workers.main.url,
        workers.replication_secret,
        follower,
        _presence_url(workers),
        room_writer=workers.room_writer_url,
    )
    parts.stack.push_async_callback(forwarder.close)
    writes_presence = workers.writes("presence")
    if not writes_presence:
        _report_presence(parts, forwarder, reloads)
    bus.start(follower.handle, follower.connected)
    log.info("Worker %s: forwarding writes to %s", workers.worker_name, workers.main.url)
    return Replication(
        bus,
        follower=follower,
        forwarder=forwarder,
        presence=parts.presence if writes_presence else None,
    )
