"""A worker's side of replication: keep this process as current as the writer's.

Messages are handled one at a time, in the order they were published:
- `inv`: drop those keys from this process's caches of that name;
- `pos` of the event stream: read the events in (last, N] from the database and tell
  the same read-side listeners the writer tells (activity window, relations, joined
  rooms, bump stamps, then the notifier), so a long-poll here wakes exactly as on the
  writer, and `next_batch` never passes an event this process has not taken in;
- `pos` of another stream: advance and wake (typing and presence carry their data);
- `reload`: re-read something kept whole in memory (moderation);
- another kind: this role's handler for it (federation senders, pushers, the
  appservice sender);
- `resync`, and every (re)connection to Redis: forget every replicated cache (and
  typing replicated whole by an older main), re-read every stream's position from the
  database, and wake every long-poll. Nothing else is needed to recover from a Redis
  restart or lost messages.

`wait_for(token)` lets a request that the main served (forwarded) return only once this
process has caught up with what that request wrote.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from typing import Any, TypeGuard

from homeserver.ephemeral.presence import PresenceService
from homeserver.ephemeral.typing import TypingService
from homeserver.rooms.ports import EventListener
from homeserver.storage.cache import apply_invalidation, clear_named_caches
from homeserver.storage.presence import PresenceRow
from homeserver.storage.replication import ReplicationStore
from homeserver.sync.notifier import Notifier
from homeserver.sync.tokens import STREAMS, StreamToken

log = logging.getLogger(__name__)

EVENTS_BATCH = 500
# How long a forwarded request may wait for this worker to catch up before answering
# anyway (the data is committed; only this process's view lags).
CATCH_UP_WAIT_S = 10.0


class ReplicationFollower:
    def __init__(
        self,
        notifier: Notifier,
        store: ReplicationStore,
        listeners: Iterable[EventListener],
        out_of_band_listeners: Iterable[EventListener],
        typing: TypingService,
        presence: PresenceService,
        positions: Mapping[str, Callable[[], Awaitable[int]]],
        reloads: Iterable[Callable[[], Awaitable[None]]] = (),
        handlers: Mapping[str, Callable[[dict[str, Any]], Awaitable[None] | None]] = {},
        *,
        read_events: bool = True,
    ) -> None:
        """`read_events`: a client reader takes in each event (its long-polls and
        in-memory views need them); other workers only advance the position.
        `handlers`: what this role does with other kinds of messages (`fed` for a
        federation sender, `push`/`badge` for a pusher, `as_*` for the appservice
        sender); `reloads` also run after every gap, so each role can catch up."""
        self._notifier = notifier
        self._store = store
        self._listeners = list(listeners)
        self._out_of_band = list(out_of_band_listeners)
        self._typing = typing
        self._presence = presence
        self._positions = dict(positions)
        self._reloads = list(reloads)
        self._handlers = dict(handlers)
        self._read_events = read_events
        self._events_pos = notifier.current.events
        self._advanced = asyncio.Condition()
        self._lock = asyncio.Lock()
        self._resync_due = False

    @property
    def events_position(self) -> int:
        return self._events_pos

    async def handle(self, message: dict[str, Any]) -> None:
        """Apply one message. Never raises: a message that cannot be applied (a bad
        one, or the database unreachable for a moment) leads to a resync, now or, if
        that fails too, before the next message."""
        async with self._lock:
            try:
                if self._resync_due:
                    await self._resync()
                await self._handle(message)
            except Exception:
                log.exception("Replication: cannot apply %s; resyncing", message.get("k"))
                await self._try_resync()
        await self._tell_waiters()

    async def _try_resync(self) -> None:
        try:
            await self._resync()
        except Exception:
            log.warning("Replication: resync failed; retrying with the next message")
            self._resync_due = True

    async def _handle(self, message: dict[str, Any]) -> None:
        kind = message.get("k")
        if kind == "inv":
            keys = message.get("keys")
            apply_invalidation(str(message.get("c")), keys if isinstance(keys, list) else None)
        elif kind == "pos":
            stream, position = message.get("s"), message.get("p")
            if stream not in STREAMS or not isinstance(position, int):
                return
            if stream == "events":
                await self._events_to(position)
                return
            users, rooms = list(message.get("u") or ()), list(message.get("r") or ())
            data = message.get("d")
            with self._replaying():
                change = message.get("c")
                if stream == "typing" and _typing_change(change):
                    # One user's change, applied with our own timer and position.
                    self._typing.apply_replicated(*change)
                    return
                if stream == "typing" and isinstance(data, dict):
                    for room, typers in data.items():
                        self._typing.replicate(room, list(typers), position)
                elif stream == "presence" and isinstance(data, list):
                    for row in data:
                        self._presence.replicate(PresenceRow(**row), rooms)
                self._notifier.notify(stream, position, users=users, rooms=rooms)
        elif kind == "reload":
            for reload in self._reloads:
                await reload()
        elif kind == "resync":
            await self._resync()
        elif isinstance(kind, str) and (handler := self._handlers.get(kind)) is not None:
            result = handler(message)
            if result is not None:
                await result

    async def connected(self) -> None:
        """Every (re)connection to the bus: what was missed is read from the database."""
        async with self._lock:
            await self._try_resync()
        await self._tell_waiters()

    async def _resync(self) -> None:
        self._resync_due = True  # until it completed
        clear_named_caches()
        for reload in self._reloads:
            await reload()
        for stream, read in self._positions.items():
            position = await read()
            if stream == "events":
                await self._events_to(position)
            else:
                self._notifier.advance(stream, position)
        with self._replaying():
            self._typing.forget_replicated()  # the main may have restarted without it
        self._resync_due = False
        self._notifier.wake_all()

    async def _events_to(self, position: int) -> None:
        while self._read_events and self._events_pos < position:
            batch = await self._store.events_after(self._events_pos, position, EVENTS_BATCH)
            with self._replaying():  # synchronous: nothing of ours runs meanwhile
                for event, stream_ordering, outlier in batch:
                    for listener in self._out_of_band if outlier else self._listeners:
                        listener.on_new_event(event, stream_ordering)
                    self._events_pos = stream_ordering
            if len(batch) < EVENTS_BATCH:
                break
        self._events_pos = max(self._events_pos, position)
        self._notifier.advance("events", self._events_pos)

    @contextlib.contextmanager
    def _replaying(self) -> Iterator[None]:
        """What the notifier announces now is another process's write (the replication
        publisher of a process that also writes must not announce it again). Only
        around synchronous code: no write of this process can happen in between."""
        self._notifier.replaying = True
        try:
            yield
        finally:
            self._notifier.replaying = False

    async def _tell_waiters(self) -> None:
        async with self._advanced:
            self._advanced.notify_all()

    async def wait_for(self, token: StreamToken, timeout_s: float = CATCH_UP_WAIT_S) -> bool:
        """Wait until this process's notifier covers `token` (True) or the timeout."""

        return await self.wait_until(lambda: not token.is_after(self._notifier.current), timeout_s)

    async def wait_until(
        self, caught_up: Callable[[], bool], timeout_s: float = CATCH_UP_WAIT_S
    ) -> bool:
        """Wait until `caught_up()` holds after some replication progress (True), or
        the timeout (False)."""
        if caught_up():
            return True
        try:
            async with self._advanced:
                await asyncio.wait_for(self._advanced.wait_for(caught_up), timeout_s)
        except TimeoutError:
            return False
        return True


def _typing_change(change: Any) -> TypeGuard[list[Any]]:
    """A typing announcement's change: [room ID, user ID, typing, timeout in ms]."""
    return (
        isinstance(change, list)
        and len(change) == 4
        and isinstance(change[0], str)
        and isinstance(change[1], str)
        and isinstance(change[2], bool)
        and isinstance(change[3], int)
        and not isinstance(change[3], bool)
    )
