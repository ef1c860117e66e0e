"""Push actions that another process of a worker deployment records.

Push rules run where an event is written (actions.py), a moment after the event itself
committed. A process that replays other processes' events (a client reader; the main
when event persisters write) serves /sync counts for them, so it must (1) not count
before the writer has recorded an event's actions (the spec wants the new counts in
the same /sync response as the event), and (2) fold those actions into its cached
unread counts (storage/push.py caches them per user and room, and a cache filled
before the actions committed would otherwise never move).

Writers publish the positions of every batch they finished ("acts" on the Redis bus,
homeserver.replication.build); this class tracks the replayed positions still waiting
for that message, and on it reads the batch's notifying rows and folds them in. The
cache's `seen_upto` makes that exactly-once whether the fill or the fold saw a row
first.

Bounds: a position waits at most WAIT_S (a writer killed before recording, a message
lost with Redis: counts are then read as they are, and a resync refills the cache);
at most MAX_PENDING positions are tracked (the oldest are dropped past that); a message
names at most MAX_POSITIONS positions (writers split bigger batches).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from typing import Any

from homeserver.events import Event
from homeserver.storage.push import PushStore

WAIT_S = 2.0
MAX_PENDING = 100_000
MAX_POSITIONS = 1000
MAX_EARLY = 10_000


class RemoteActions:
    """An `EventListener` on the replaying side, plus the "acts" message handler."""

    def __init__(self, store: PushStore) -> None:
        self._store = store
        self._pending: OrderedDict[int, float] = OrderedDict()  # position -> replayed at
        # Positions recorded before this process replayed them (our own writes on the
        # main: its generator may finish before the replay reaches them).
        self._early: OrderedDict[int, None] = OrderedDict()
        self._changed = asyncio.Event()  # replaced after each set: one wake-up per change

    # -- the replaying side ---------------------------------------------------------------

    def on_new_event(self, event: Event, stream_ordering: int) -> None:
        if stream_ordering <= 0:
            return  # history (backfill) gets no actions
        if stream_ordering in self._early:
            del self._early[stream_ordering]
            return
        self._pending[stream_ordering] = time.monotonic()
        while len(self._pending) > MAX_PENDING:
            self._pending.popitem(last=False)

    async def wait_until(self, stream_ordering: int) -> None:
        """Return once every replayed event at or below `stream_ordering` has its actions
        here (or has waited WAIT_S)."""
        deadline = time.monotonic() + WAIT_S
        while self._waiting(stream_ordering):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                return

    def _waiting(self, stream_ordering: int) -> bool:
        cutoff = time.monotonic() - WAIT_S
        while self._pending:
            position, since = next(iter(self._pending.items()))
            if since >= cutoff:
                break
            del self._pending[position]  # given up on: a lost message or a dead writer
        # Replayed in stream order: the first pending position is the lowest.
        return bool(self._pending) and next(iter(self._pending)) <= stream_ordering

    # -- the writers' messages --------------------------------------------------------------

    async def recorded(self, message: dict[str, Any]) -> None:
        """Another process recorded the actions of the events at `ps`; `n` of its rows
        notify or highlight (0: nothing to read); `late`: after later events' actions (a
        retry or a catch-up), so cached counts that include later ones are recomputed."""
        positions = message.get("ps")
        if not isinstance(positions, list) or len(positions) > MAX_POSITIONS:
            return
        positions = [p for p in positions if isinstance(p, int) and not isinstance(p, bool)]
        if message.get("n"):
            rows = await self._store.counted_actions_at(positions)
            self._store.apply_recorded_actions(rows)
            if message.get("late"):  # older than counts cached since: recount those
                for user_id, room_id in {(r.user_id, r.room_id) for r in rows}:
                    self._store.read_marker_moved(user_id, room_id)
        self.local_recorded(positions)

    def local_recorded(self, positions: list[int]) -> None:
        """This process's own generator finished these (the main with persisters
        replays its own writes too); its cache already has their rows."""
        for position in positions:
            if self._pending.pop(position, None) is None:
                self._early[position] = None
                if len(self._early) > MAX_EARLY:
                    self._early.popitem(last=False)
        self._changed.set()
        self._changed = asyncio.Event()

    async def forget(self) -> None:
        """A resync (a gap on the bus): messages may be lost, and the unread cache was
        emptied (storage/cache.py), so nothing is worth waiting for."""
        self._pending.clear()
        self._early.clear()
