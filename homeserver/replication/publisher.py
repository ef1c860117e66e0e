"""The writing process's side of replication: every announcement and invalidation,
on the bus in the order they happened.

Announcements come from the notifier (one per committed write, in commit order, see
homeserver.rooms.commit_order); invalidations from every named cache (storage/cache.py).
Some stores invalidate a key just before their transaction, so the bus publishes each
batch only after the database's write barrier: a worker never hears of an invalidation
before the write it announces has committed (it would re-read and cache the old row).
Typing and presence live in this process's memory, so their current values travel with
their announcements; everything else a worker reads from the database.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from homeserver.ephemeral.presence import PresenceService
from homeserver.ephemeral.typing import TypingService


class ReplicationPublisher:
    def __init__(
        self,
        bus: Any,
        typing: TypingService,
        presence: PresenceService,
        *,
        presence_writer: bool = True,
    ) -> None:
        self._bus = bus
        self._typing = typing
        self._presence = presence
        # Only the presence writer announces presence (another process adopting a row
        # the writer answered with does not announce it again).
        self._presence_writer = presence_writer
        # Whether the announcement being made replays another process's (not ours).
        self.replaying: Callable[[], bool] = lambda: False

    def on_announcement(
        self, stream: str, position: int, users: tuple[str, ...], rooms: tuple[str, ...]
    ) -> None:
        """Notifier observer."""
        if self.replaying() or (stream == "presence" and not self._presence_writer):
            return
        message: dict[str, Any] = {"k": "pos", "s": stream, "p": position}
        if stream == "events":
            pass  # the worker reads the events themselves from the database
        else:
            message["u"], message["r"] = users, rooms
        if stream == "typing":
            message["d"] = {room: self._typing.typing_users(room) for room in rooms}
            change = self._typing.last_change
            if change is not None and change[0] in rooms:
                message["c"] = list(change)  # applied with the follower's own timer
        elif stream == "presence":
            rows = (self._presence.get(user) for user in users)
            message["d"] = [asdict(row) for row in rows if row is not None]
        self._bus.publish(message)

    def on_invalidation(self, name: str, keys: list[Any] | None) -> None:
        """storage.cache invalidation hook."""
        self._bus.publish({"k": "inv", "c": name, "keys": keys})

    def reload(self, what: str) -> None:
        """Tell workers to re-read something kept whole in memory (moderation)."""
        self._bus.publish({"k": "reload", "w": what})
