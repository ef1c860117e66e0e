"""Push notifications from pusher workers (`pusher_instances`), users sharded by hash.

The process that persists an event still evaluates the push rules for it (the action
generator runs where events are written, so /sync's counts stay exact) and records the
actions. With pusher workers it then sends nothing itself: it publishes how far the
recorded actions go (`push`, a stream ordering) and which users read something
(`badge`). Each pusher reads the notifying actions after its own position from
PostgreSQL, keeps those of the users it owns (`sha256(user) mod N`, as Synapse shards
pushers) and hands them to its PushDelivery, so every notification is sent by exactly
one process. Redis carries no event data.

Gaps: after a resync (Redis restarted, messages lost) a pusher reads on from its
position to the newest recorded action, so nothing is missed. Each pusher stores how
far it has handed actions to delivery (worker_positions), so one that was killed
catches up on what was recorded while it was down when it restarts; what was queued
for a gateway but not sent when it died is lost, as on a single process (delivery
queues live in memory; the phone learns of it at its next sync). A pusher new to the
deployment starts from the newest action.

Bounds: EVENTS_PER_READ events per database read (all their rows), and the delivery's
own queue limits (homeserver.push.delivery).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from homeserver.events import Event
from homeserver.push.delivery import PushDelivery
from homeserver.storage.events import EventStore
from homeserver.storage.push import PushAction, PushStore
from homeserver.storage.replication import ReplicationStore

log = logging.getLogger(__name__)

EVENTS_PER_READ = 100
STREAM = "push_actions"  # this role's row in worker_positions


class PushForwarder:
    """The writer's delivery when pushers are workers: publish, never send."""

    def __init__(self, bus: Any) -> None:
        self._bus = bus

    def notify(self, rows: Sequence[PushAction], events: dict[str, Event]) -> None:
        notifying = sorted({row.stream_ordering for row in rows if row.notif})
        if notifying:
            # The positions themselves: with several event persisters, actions are not
            # recorded in stream order across processes, so a range could skip some.
            self._bus.publish({"k": "push", "p": notifying[-1], "ps": notifying})

    def badge_update(self, user_id: str) -> None:
        self._bus.publish({"k": "badge", "u": user_id})


class PusherShard:
    """A pusher worker's side: read its users' notifying actions, deliver them."""

    def __init__(
        self,
        store: PushStore,
        events: EventStore,
        delivery: PushDelivery,
        owns: Callable[[str], bool],
        positions: ReplicationStore,
        instance: str,
    ) -> None:
        self._store = store
        self._events = events
        self._delivery = delivery
        self._owns = owns
        self._positions = positions
        self._instance = instance
        self._position: int | None = None

    @property
    def position(self) -> int | None:
        return self._position

    async def start(self) -> None:
        """From the stored position (catching up on what was recorded while this
        process was down), or for a new pusher from the newest action."""
        stored = await self._positions.worker_position(self._instance, STREAM)
        if stored is None:
            stored = await self._store.newest_action_position()
            await self._positions.set_worker_position(self._instance, STREAM, stored)
        self._position = stored
        await self.catch_up()

    async def catch_up(self) -> None:
        """After a gap: everything recorded since our position."""
        await self._read_to(await self._store.newest_action_position())

    async def handle(self, message: dict[str, Any]) -> None:
        """A `push` or `badge` message from the bus (the follower hands them over)."""
        kind = message.get("k")
        positions = message.get("ps")
        if kind == "push" and isinstance(positions, list) and self._position is not None:
            exact = [p for p in positions[:EVENTS_PER_READ] if isinstance(p, int)]
            await self._deliver(await self._store.notifying_actions_at(exact))
            newest = max(exact, default=self._position)
            if newest > self._position:
                self._position = newest
                await self._positions.set_worker_position(self._instance, STREAM, newest)
        elif kind == "push" and isinstance(message.get("p"), int):
            await self._read_to(message["p"])
        elif kind == "badge":
            user_id = message.get("u")
            if isinstance(user_id, str) and self._owns(user_id):
                self._delivery.badge_update(user_id)

    async def _deliver(self, rows: list[PushAction]) -> None:
        mine = [row for row in rows if self._owns(row.user_id)]
        if mine:
            events = await self._events.get_events({row.event_id for row in mine})
            self._delivery.notify(mine, events)

    async def _read_to(self, upto: int) -> None:
        if self._position is None:
            return  # not started: nothing is ours yet
        start = self._position
        while self._position < upto:
            rows, last = await self._store.notifying_actions(self._position, upto, EVENTS_PER_READ)
            if last is None:
                break
            await self._deliver(rows)
            self._position = last
        self._position = max(self._position, upto)
        if self._position != start:
            await self._positions.set_worker_position(self._instance, STREAM, self._position)
