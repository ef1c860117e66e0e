"""Wakes long-polling /sync requests when something they care about changes.

Listeners register the user they sync for and the rooms they are in; writers announce
an update to a set of rooms or users. Waking is O(listeners concerned), never a scan of
all listeners, and the current token only moves forward.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from .tokens import StreamToken


class _Listener:
    __slots__ = ("future", "user_id", "rooms")

    def __init__(self, user_id: str, rooms: frozenset[str]) -> None:
        self.future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.user_id = user_id
        self.rooms = rooms

    @property
    def woken(self) -> bool:
        return self.future.done()

    async def wait(self, timeout_s: float) -> bool:
        """Wait until woken or the timeout; True if woken."""
        if self.future.done():
            return True
        try:
            await asyncio.wait_for(asyncio.shield(self.future), timeout_s)
        except TimeoutError:
            return False
        return True


class Notifier:
    def __init__(self, current: StreamToken | None = None) -> None:
        self.current = current or StreamToken()
        self._by_user: dict[str, set[_Listener]] = defaultdict(set)
        self._by_room: dict[str, set[_Listener]] = defaultdict(set)

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
        woken: set[_Listener] = set()
        for user in users:
            woken |= self._by_user.get(user, set())
        for room in rooms:
            woken |= self._by_room.get(room, set())
        for listener in woken:
            if not listener.future.done():
                listener.future.set_result(None)

    @contextmanager
    def listen(self, user_id: str, rooms: Iterable[str]) -> Iterator[_Listener]:
        """Register interest before computing a sync, so nothing notified while it is
        being computed is missed; then `await listener.wait(timeout)` if it was empty."""
        listener = _Listener(user_id, frozenset(rooms))
        self._by_user[user_id].add(listener)
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
        for room in listener.rooms:
            members = self._by_room.get(room)
            if members is not None:
                members.discard(listener)
                if not members:
                    del self._by_room[room]
