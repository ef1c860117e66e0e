"""Event persisters: several processes write rooms (`stream_writers: {events: [...]}`).

The single-writer rule of a room holds across the deployment by PostgreSQL, not by
which process a request reached:
- event transactions of different processes run side by side, each claiming its
  stream positions (storage/event_positions.py), and what is announced is the
  visible position, below every claim still in flight: a stream token stays one
  integer, a reader never serves a position beyond what every writer has persisted,
  and tokens survive restarts and any change in the number of writers. Every other
  write transaction takes one advisory lock first (storage/postgres_locks.py), so
  the smaller streams are allocated and committed in one order;
- a room write (build on the room's tips, auth, persist) holds the room's advisory
  lock (`room_locks`); on taking it, a process whose own write is not the room's
  newest forgets the room's tips and members it cached (another process changed them).

Persisters are where room writes are routed, by `sha256(room_id) mod N` (Synapse's
sharding): sends, state, redactions and memberships of a room go to its persister
(ROOM_WRITES), from the client readers (nginx sends room writes to them), the
federation inbound workers (membership handshakes; /send: replication/federation.py)
and from the main, so each room's lock is almost never contended and its caches stay warm on one
process. A room creation or a profile change goes to the persister the access token
hashes to (TOKEN_ROUTED_WRITES: the rooms are not named in the path). Everything
else is written where it lands, under the same locks. A persister that cannot be reached is skipped: its
rooms are written by the main until it is back (correct anywhere, only slower).

Every process reads the event stream in order from PostgreSQL (the replication
follower): in-memory views (sync windows, joined-rooms caches, the notifier) and the
main's once-per-deployment jobs (room stats, user directory, appservices, guest
eviction) are fed from it, never from a local write, so nothing is seen out of stream
order. A writer only tells its writer-side listeners (push rules, metrics) of its own
events, and announces each commit on the bus (`LocalCommits`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from homeserver.events import Event
from homeserver.rooms.keyed_lock import KeyedLock
from homeserver.rooms.ports import EventListener
from homeserver.storage import Stores
from homeserver.storage.errors import StorageError
from homeserver.storage.replication import ReplicationStore

log = logging.getLogger(__name__)

ROOMS_REMEMBERED = 100_000  # rooms whose newest write here is kept (about 100 B each)
# How often a writer whose events wait behind a lower position still being written
# elsewhere reads the visible position again (a write takes milliseconds: from 2 ms,
# doubling to 50 ms while nothing moves), and how soon it retries when the database
# is away.
VISIBLE_RECHECK_S = 0.002
VISIBLE_RECHECK_MAX_S = 0.05
VISIBLE_RETRY_S = 0.5
_C = r"^/_matrix/client/(?:r0|v3|unstable)"
_F = r"^/_matrix/federation/v[12]"
# Room writes routed to the room's persister, with the room ID in group 1 (a room
# upgrade: the old room's; it creates the new one). Other servers'
# membership handshakes too: make_* builds on the room's tips, send_* writes (an
# invite of one of our users is stored by the persister its room ID names).
ROOM_WRITES: dict[str, tuple[re.Pattern[str], ...]] = {
    "GET": (re.compile(_F + r"/make_(?:join|leave|knock)/([^/]+)/[^/]+$"),),
    "PUT": (
        re.compile(_C + r"/rooms/([^/]+)/(?:send|state|redact)/"),
        re.compile(_C + r"/rooms/([^/]+)/state/[^/]+$"),
        re.compile(_F + r"/(?:send_join|send_leave|send_knock|invite)/([^/]+)/[^/]+$"),
        re.compile(_F + r"/exchange_third_party_invite/([^/]+)$"),
    ),
    "POST": (
        re.compile(_C + r"/rooms/([^/]+)/(?:send|redact)/"),
        re.compile(_C + r"/rooms/([^/]+)/(?:join|leave|invite|kick|ban|unban)$"),
        re.compile(_C + r"/(?:join|knock)/((?:!|%21)[^/]+)$"),
        re.compile(_C + r"/rooms/([^/]+)/upgrade$"),
    ),
}


# Writes to rooms the path does not name, routed to the event persister the access
# token hashes to (so they work while the main is down): a room creation (the new
# room's ID is not known before), a profile change (a new member event in each of
# the user's rooms) and a join or knock by alias (the persister resolves the alias,
# asking its server if it is another's). Any process may write any room under its lock; a room's later
# writes go to the persister its ID hashes to.
TOKEN_ROUTED_WRITES: dict[str, tuple[re.Pattern[str], ...]] = {
    "POST": (
        re.compile(_C + r"/createRoom$"),
        re.compile(_C + r"/(?:join|knock)/(?:#|%23)[^/]+$"),
    ),
    "PUT": (re.compile(_C + r"/profile/[^/]+/[^/]+$"),),
    "DELETE": (re.compile(_C + r"/profile/[^/]+/[^/]+$"),),
}


def room_written(method: str, path: str) -> str | None:
    """The room a request writes to, if it is one of ROOM_WRITES."""
    for pattern in ROOM_WRITES.get(method, ()):
        match = pattern.match(path)
        if match is not None:
            room_id = unquote(match.group(1))
            return room_id if room_id.startswith("!") else None
    return None


def write_shard_key(method: str, path: str, access_token: str | None) -> str | None:
    """What picks the event persister a request goes to (sha256 mod N): the room it
    writes (ROOM_WRITES), or the access token (TOKEN_ROUTED_WRITES); None for any
    other request."""
    room_id = room_written(method, path)
    if room_id is not None:
        return room_id
    if access_token and any(p.match(path) for p in TOKEN_ROUTED_WRITES.get(method, ())):
        return "token " + access_token
    return None


def claim_positions(config: Any, stores: Stores, database: Any) -> None:
    """With event persisters, this process's event transactions claim their stream
    positions beside the other processes' (storage/event_positions.py); set before
    anything reads the current position."""
    if config.workers.shared_writers:
        from homeserver.storage.event_positions import ConcurrentEventPositions

        stores.events.concurrent_positions = ConcurrentEventPositions(database, database.schema)


def room_locks(
    config: Any, stores: Stores, database: Any, stack: Any, commits: LocalCommits | None
) -> KeyedLock:
    """The room service's locks. With event persisters every write transaction of this
    process also takes the deployment's write lock, and each room lock is held across
    the deployment (the database's SessionLocks, closed with the process). A fresh
    holder whose own write is not the room's newest forgets the room's cached tips and
    members (one indexed read; a room written only here, which routing makes the rule,
    keeps its caches)."""
    if not config.workers.shared_writers or commits is None:
        return KeyedLock()
    shared = database.share_writes()  # a PostgresDatabase: workers need PostgreSQL
    stack.push_async_callback(shared.close)
    commits.visible = stores.events.get_current_stream_position
    stack.push_async_callback(commits.close)
    store = ReplicationStore(database, stores.events)

    async def acquired(room_id: str) -> None:
        if commits.wrote_last(room_id, await store.latest_in_room(room_id)):
            return
        stores.events.forget_extremities(room_id)
        stores.current_state.forget_room(room_id)

    return KeyedLock(lambda room_id: shared.hold("room " + room_id), acquired)


class LocalCommits:
    """A writer-side listener: each event this process persisted is announced on the
    bus (other processes read it from the database) and handed to this process's own
    follower, which feeds the read side in stream order with everyone else's."""

    def __init__(self) -> None:
        self.publish: Callable[[dict[str, Any]], None] | None = None
        self.follow: Callable[[int], None] | None = None
        # The visible position (storage/event_positions.py): what is announced when
        # the processes claim positions side by side, rather than each write's own.
        self.visible: Callable[[], Awaitable[int]] | None = None
        self.last = 0  # the highest position written here
        self._announced = 0
        self._announcing: asyncio.Task[None] | None = None
        # room -> the newest position this process wrote in it (most recent rooms).
        self._rooms: OrderedDict[str, int] = OrderedDict()

    def wrote_last(self, room_id: str, newest: int) -> bool:
        """Whether the room's `newest` position is a write of this process."""
        return newest > 0 and self._rooms.get(room_id) == newest

    def on_new_event(self, event: Event, stream_ordering: int) -> None:
        if stream_ordering <= 0:
            return  # history (backfill) is below every token
        self.last = max(self.last, stream_ordering)
        self._rooms[event.room_id] = stream_ordering
        self._rooms.move_to_end(event.room_id)
        if len(self._rooms) > ROOMS_REMEMBERED:
            self._rooms.popitem(last=False)
        if self.visible is None:
            self._announce(stream_ordering)
        elif self._announcing is None or self._announcing.done():
            self._announcing = asyncio.get_running_loop().create_task(self._announce_visible())

    def _announce(self, position: int) -> None:
        if self.publish is not None:
            self.publish({"k": "pos", "s": "events", "p": position})
        if self.follow is not None:
            self.follow(position)

    async def _announce_visible(self) -> None:
        """Announce the visible position until it covers every write of ours: at once
        when nothing lower is in flight elsewhere, else when that ends (committed,
        rolled back, or its process gone). One task at a time; writes made meanwhile
        are covered by its next read."""
        assert self.visible is not None
        delay = VISIBLE_RECHECK_S
        while True:
            target = self.last
            try:
                visible = await self.visible()
            except StorageError as exc:  # the database is away: ours are committed
                log.warning("Cannot read the visible event position (%s); retrying", exc)
                await asyncio.sleep(VISIBLE_RETRY_S)
                continue
            except Exception:  # never give up: our writes would stay unannounced
                log.exception("Reading the visible event position failed; retrying")
                await asyncio.sleep(VISIBLE_RETRY_S)
                continue
            if visible > self._announced:
                self._announced = visible
                self._announce(visible)
                delay = VISIBLE_RECHECK_S
            if visible >= self.last:
                return
            if visible < target:  # a lower position is still being written elsewhere
                await asyncio.sleep(delay)
                delay = min(delay * 2, VISIBLE_RECHECK_MAX_S)

    async def close(self) -> None:
        task = self._announcing
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def spawn(coro: Any, tasks: set[asyncio.Task[Any]]) -> None:
    task = asyncio.get_running_loop().create_task(coro)
    tasks.add(task)
    task.add_done_callback(tasks.discard)


@dataclass
class EventListeners:
    """Who hears of persisted events, by where they hear it (the module's doc)."""

    persister: list[EventListener]  # told by this process's own writes
    out_of_band: list[EventListener]
    follower: list[EventListener]  # fed from the database by the replication follower
    commits: LocalCommits | None = None
    follower_out_of_band: list[EventListener] = field(default_factory=list)


def event_listeners(
    shared_writers: bool,
    *,
    views: list[EventListener],
    notifier: EventListener,
    writer_side: list[EventListener],
    singletons: list[EventListener],
    is_worker: bool,
) -> EventListeners:
    """`views`: in-memory read views (sync window, relations, joined rooms, bump stamps,
    in that order); `notifier` wakes long-polls (told last, once the views are
    current); `writer_side`: once per event where it is written (push rules first,
    metrics); `singletons`: once per deployment, on the main (user directory, room
    stats, appservices, guest eviction, delayed events); a singleton whose
    `hears_out_of_band` is true (auto-accepting invites) also hears out-of-band
    memberships (an invite from a server whose room we are not in), on the main too."""
    follower = [*views, notifier]
    out_of_band = [s for s in singletons if getattr(s, "hears_out_of_band", False)]
    if not shared_writers:
        activity, relations, joined, bump_stamps = views
        push, *rest = writer_side
        directory, stats, *later = singletons
        persister = [activity, notifier, push, relations, joined, directory, stats]
        persister += [bump_stamps, *later, *rest]
        return EventListeners(persister, [notifier, *out_of_band], follower, None, [notifier])
    commits = LocalCommits()
    followed = [notifier]
    if not is_worker:
        follower = [*views, *singletons, notifier]
        followed = [*out_of_band, notifier]
    return EventListeners([*writer_side, commits], [commits], follower, commits, followed)
