"""Wakes long-polling /sync requests when something they care about changes.

Listeners register the user they sync for and the rooms they are in; writers announce
an update to a set of rooms or users. Waking is O(listeners concerned), never a scan of
all listeners, and the current token only moves forward.

A listener of a user in more than WIDE_ROOMS rooms is not entered in each room's set
(registering and removing it would cost thousands of set operations per request);
it goes on a short list of wide listeners that each announcement checks by set
membership. Few accounts are that big, so the list stays short.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from .tokens import StreamToken

# Streams whose updates may wait a little to be answered together: when everyone in a
# big room comes online at once, each arrival would otherwise wake every other member's
# long-poll (N^2 responses for N users).
LAZY_STREAMS = frozenset({"presence"})
WIDE_ROOMS = 256


class _Listener:
    """One long-poll's interest. The futures are made only if it comes to waiting
    (most syncs that find something never wait): a fan-out registers thousands."""

    __slots__ = ("woken", "woken_urgent", "_any", "_urgent", "user_id", "rooms")

    def __init__(self, user_id: str, rooms: frozenset[str]) -> None:
        self.woken = False  # any update since registering
        self.woken_urgent = False  # one not in LAZY_STREAMS
        self._any: asyncio.Future[None] | None = None
        self._urgent: asyncio.Future[None] | None = None
        self.user_id = user_id
        self.rooms = rooms

    def wake(self, stream: str) -> None:
        if not self.woken:
            self.woken = True
            if self._any is not None and not self._any.done():
                self._any.set_result(None)
        if stream not in LAZY_STREAMS and not self.woken_urgent:
            self.woken_urgent = True
            if self._urgent is not None and not self._urgent.done():
                self._urgent.set_result(None)

    async def wait(self, timeout_s: float) -> bool:
        """Wait until woken or the timeout; True if woken."""
        if self.woken:
            return True
        if self._any is None:
            self._any = asyncio.get_running_loop().create_future()
        return await _wait(self._any, timeout_s)

    async def wait_urgent(self, timeout_s: float) -> bool:
        """Wait until an update of a stream outside LAZY_STREAMS, or the timeout."""
        if self.woken_urgent:
            return True
        if self._urgent is None:
            self._urgent = asyncio.get_running_loop().create_future()
        return await _wait(self._urgent, timeout_s)


async def _wait(future: asyncio.Future[None], timeout_s: float) -> bool:
    """Wait for `future` (never cancelling it) or the timeout. A waiter future, a
    timer and one callback: cheaper than wait_for(shield(...)), and every long-poll
    of a fan-out wakes through here."""
    if future.done():
        return True
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[bool] = loop.create_future()

    def woken(_: asyncio.Future[None]) -> None:
        if not waiter.done():
            waiter.set_result(True)

    def timed_out() -> None:
        if not waiter.done():
            waiter.set_result(False)

    future.add_done_callback(woken)
    timer = loop.call_later(max(0.0, timeout_s), timed_out)
    try:
        return await waiter
    finally:
        timer.cancel()
        future.remove_done_callback(woken)


class EventNotifierBridge:
    """Tells the notifier about each persisted event (a room service listener): its
    room's listeners, and the target of a membership change (maybe not in the room yet)."""

    def __init__(self, notifier: Notifier) -> None:
        self._notifier = notifier

    def on_new_event(self, event: Any, stream_ordering: int) -> None:
        users = [event.state_key] if event.type == "m.room.member" and event.state_key else []
        self._notifier.notify("events", stream_ordering, rooms=[event.room_id], users=users)


class Notifier:
    def __init__(self, current: StreamToken | None = None) -> None:
        self.current = current or StreamToken()
        self._by_user: dict[str, set[_Listener]] = defaultdict(set)
        self._by_room: dict[str, set[_Listener]] = defaultdict(set)
        self._wide: set[_Listener] = set()
        # Called with every announcement (stream, position, users, rooms): what must
        # hear of ephemeral updates besides long-polls (appservices).
        self.observers: list[Callable[[str, int, tuple[str, ...], tuple[str, ...]], None]] = []
        # True while the replication follower replays another process's writes: the
        # replication publisher must not announce them again (no echoes).
        self.replaying = False

    def advance(self, stream: str, position: int) -> None:
        self.current = self.current.advance(stream, position)

    def notify(
        self,
        stream: str,
        position: int,
        *,
        users: Iterable[str] = (),
        rooms: Iterable[str] = (),
    ) -> None:
        """Record a new position of `stream` and wake whoever it concerns."""
        self.advance(stream, position)
        users, rooms = tuple(users), tuple(rooms)
        if self.observers:
            for observer in self.observers:
                observer(stream, position, users, rooms)
        woken: set[_Listener] = set()
        for user in users:
            woken |= self._by_user.get(user, set())
        for room in rooms:
            woken |= self._by_room.get(room, set())
        if self._wide:
            woken.update(w for w in self._wide if any(r in w.rooms for r in rooms))
        for listener in woken:
            listener.wake(stream)

    def wake_all(self) -> None:
        """Wake every long-poll (a worker that may have missed announcements: each
        listener answers with whatever its token does not cover yet)."""
        for listeners in list(self._by_user.values()):
            for listener in list(listeners):
                listener.wake("events")

    @contextmanager
    def listen(self, user_id: str, rooms: Iterable[str]) -> Iterator[_Listener]:
        """Register interest before computing a sync, so nothing notified while it is
        being computed is missed; then `await listener.wait(timeout)` if it was empty."""
        listener = _Listener(user_id, frozenset(rooms))
        self._by_user[user_id].add(listener)
        if len(listener.rooms) > WIDE_ROOMS:
            self._wide.add(listener)
        else:
            for room in listener.rooms:
                self._by_room[room].add(listener)
        try:
            yield listener
        finally:
            self._discard(listener)

    def _discard(self, listener: _Listener) -> None:
        users = self._by_user.get(listener.user_id)
        if users is not None:
            users.discard(listener)
            if not users:
                del self._by_user[listener.user_id]
        if listener in self._wide:
            self._wide.discard(listener)
            return
        for room in listener.rooms:
            members = self._by_room.get(room)
            if members is not None:
                members.discard(listener)
                if not members:
                    del self._by_room[room]
