"""Fetching from other servers what a remote event needs before it can be checked: its
auth events, missing prev_events, and the state after prev_events we lack.

This runs WITHOUT the room's write lock. A peer that answers slowly, or names thousands
of state events, delays only the event it sent: local senders and other peers' events
in the room keep going, since the lock is taken only for the short database writes that
store what was fetched. Every fetched event has passed checks 1-3 in the federation
adapter; here it is checked against its own auth events (check 4) and stored as an
outlier, so the locked part of the receiving algorithm finds everything locally.

Bounds (anyone may send us a PDU that cites events we lack):
- `MAX_MISSING_EVENTS` prev_events asked for with get_missing_events per PDU;
- `MAX_AUTH_FETCHES` auth events fetched one by one (/event) when /event_auth fails;
- `MAX_STATE_IDS` state and auth event IDs taken from one state_ids answer;
- `FETCH_CONCURRENCY` single-event fetches in flight, shared by all rooms;
- `FETCH_DEADLINE_S` for everything one PDU makes us fetch: what is not fetched by
  then is given up, and an event whose state is then unknown is rejected, as when the
  peer fails to answer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from homeserver.events import Event, StateKey
from homeserver.storage import PersistItem, Stores

from .auth_checks import auth_event_ids_wanted, check_own_auth_events, in_depth_order
from .keyed_lock import KeyedLock
from .persister import Persister
from .ports import RemoteEvents

log = logging.getLogger(__name__)

MAX_MISSING_EVENTS = 10
MAX_AUTH_FETCHES = 50
MAX_STATE_IDS = 50_000
FETCH_CONCURRENCY = 10
FETCH_DEADLINE_S = 120.0

StateMap = dict[StateKey, str]


@dataclass(frozen=True)
class FetchLimits:
    """The bounds above, as one value (tests shorten the deadline)."""

    max_missing_events: int = MAX_MISSING_EVENTS
    max_state_ids: int = MAX_STATE_IDS
    concurrency: int = FETCH_CONCURRENCY
    deadline_s: float = FETCH_DEADLINE_S


@dataclass
class Prefetched:
    """What the locked part of the receiving algorithm needs from the peer."""

    # Missing prev_events fetched with get_missing_events, oldest first: received
    # (checks 4-6) before the event itself.
    gap: list[Event] = field(default_factory=list)
    # prev event ID -> the state after it as the peer told us (prev events we lack).
    state_after: dict[str, StateMap] = field(default_factory=dict)


class RemoteState:
    """Fetches and stores (as outliers) what remote events need; holds no lock while
    waiting for a peer."""

    def __init__(
        self,
        stores: Stores,
        persister: Persister,
        locks: KeyedLock,
        remote: RemoteEvents | None,
        limits: FetchLimits = FetchLimits(),
    ) -> None:
        self._stores = stores
        self._persister = persister
        self._locks = locks
        self._remote = remote
        self._limits = limits
        self._fetch_slots = asyncio.Semaphore(limits.concurrency)

    async def prepare(self, event: Event, origin: str, *, fill_gap: bool) -> Prefetched:
        """Fetch what `event` needs from `origin` within the deadline: its auth events,
        (with `fill_gap`) its missing prev_events, and the state after any prev event
        still unknown then. Whatever is not fetched is simply missing afterwards."""
        out = Prefetched()
        if self._remote is None:
            return out
        try:
            async with asyncio.timeout(self._limits.deadline_s):
                await self.fetch_auth_events(event, origin)
                if fill_gap:
                    out.gap = await self._fill_gap(event, origin)
                    for missing in out.gap:
                        await self.fetch_auth_events(missing, origin)
                for prev in await self._prevs_without_state([*out.gap, event]):
                    state = await self._state_after(event.room_id, prev, origin)
                    if state is not None:
                        out.state_after[prev] = state
        except TimeoutError:
            log.info(
                "fetching what %s from %s needs took over %.0f s: giving up the rest",
                event.event_id,
                origin,
                self._limits.deadline_s,
            )
        return out

    async def state_after_prevs(self, events: Iterable[Event], origin: str) -> dict[str, StateMap]:
        """For backfill: the peer's state after each prev event of `events` that is
        neither stored with state nor among `events`, within the deadline."""
        out: dict[str, StateMap] = {}
        if self._remote is None:
            return out
        batch = list(events)
        try:
            async with asyncio.timeout(self._limits.deadline_s):
                for event in batch:
                    await self.fetch_auth_events(event, origin)
                for prev in await self._prevs_without_state(batch):
                    state = await self._state_after(batch[0].room_id, prev, origin)
                    if state is not None:
                        out[prev] = state
        except TimeoutError:
            log.info("fetching state for backfill from %s timed out", origin)
        return out

    async def fetch_auth_events(self, event: Event, origin: str) -> None:
        """Store the event's auth chain from `origin` if we lack any of its auth events."""
        assert self._remote is not None
        wanted = auth_event_ids_wanted(event)
        if len(await self._stores.events.have_events(wanted)) == len(set(wanted)):
            return
        try:
            chain = await self._remote.get_event_auth(origin, event.room_id, event.event_id)
        except Exception as e:  # a peer's failure is a reason to reject, not to crash
            log.info("event_auth for %s from %s failed: %s", event.event_id, origin, e)
            chain = []
        found = {e.event_id: e for e in chain}
        # A peer without /event_auth (or with a partial answer): fetch the missing auth
        # events one by one with /event, and theirs in turn, as Synapse does; bounded
        # by MAX_AUTH_FETCHES events per PDU (an auth chain deeper than that is given
        # up, and the PDU rejected).
        missing = await self._missing(wanted, found)
        budget = MAX_AUTH_FETCHES
        while missing and budget > 0:
            ids = missing[:budget]
            budget -= len(ids)
            for fetched in await self._fetch_events(origin, event.room_id, ids):
                found.setdefault(fetched.event_id, fetched)
            wanted_next = [a for e in found.values() for a in auth_event_ids_wanted(e)]
            missing = [m for m in await self._missing(wanted_next, found) if m not in ids]
        await self._store_outliers(event.room_id, found.values())

    async def _missing(self, wanted: Iterable[str], found: Mapping[str, Event]) -> list[str]:
        ids = [w for w in dict.fromkeys(wanted) if w not in found]
        have = await self._stores.events.have_events(ids)
        return [w for w in ids if w not in have]

    async def _fill_gap(self, event: Event, origin: str) -> list[Event]:
        """Missing prev_events between our forward extremities and `event`."""
        assert self._remote is not None
        prevs = event.prev_event_ids
        known = await self._stores.state.get_state_groups_for_events(prevs)
        if all(p in known for p in prevs):
            return []
        extremities = await self._stores.events.get_forward_extremities(event.room_id)
        try:
            fetched = await self._remote.get_missing_events(
                origin,
                event.room_id,
                earliest=extremities,
                latest=[event.event_id],
                limit=self._limits.max_missing_events,
                min_depth=0,
            )
        except Exception as e:
            log.info("get_missing_events from %s failed: %s", origin, e)
            return []
        return in_depth_order(
            e
            for e in fetched[: self._limits.max_missing_events]
            if e.room_id == event.room_id and e.event_id != event.event_id
        )

    async def _prevs_without_state(self, chain: list[Event]) -> list[str]:
        """prev events of `chain` that are neither in it nor stored with a state group."""
        in_chain = {e.event_id for e in chain}
        prevs = list(dict.fromkeys(p for e in chain for p in e.prev_event_ids if p not in in_chain))
        groups = await self._stores.state.get_state_groups_for_events(prevs)
        return [p for p in prevs if p not in groups]

    async def _state_after(self, room_id: str, event_id: str, origin: str) -> StateMap | None:
        """The state after an event we lack, from the origin's state_ids at it, with the
        events we lack fetched (in parallel, bounded) and stored as outliers."""
        assert self._remote is not None
        try:
            state_ids, auth_ids = await self._remote.get_state_ids(origin, room_id, event_id)
        except Exception as e:
            log.info("state_ids at %s from %s failed: %s", event_id, origin, e)
            return None
        wanted = list(dict.fromkeys([*auth_ids, *state_ids, event_id]))
        if len(wanted) > self._limits.max_state_ids:
            log.info(
                "state_ids at %s from %s names %d events: refused", event_id, origin, len(wanted)
            )
            return None
        have = await self._stores.events.have_events(wanted)
        fetched = await self._fetch_events(origin, room_id, [e for e in wanted if e not in have])
        await self._store_outliers(room_id, fetched)
        events = await self._stores.events.get_events(state_ids)
        state = {
            ev.state_tuple: ev.event_id
            for ev in events.values()
            if ev.is_state() and ev.rejected_reason is None
        }
        prev = await self._stores.events.get_event(event_id)
        if prev is not None and prev.is_state():
            state[prev.state_tuple] = prev.event_id
        return state

    async def _fetch_events(self, origin: str, room_id: str, event_ids: list[str]) -> list[Event]:
        """GET each event, at most `concurrency` at a time (across all rooms)."""
        assert self._remote is not None
        remote = self._remote

        async def one(event_id: str) -> Event | None:
            async with self._fetch_slots:
                try:
                    return await remote.get_event(origin, room_id, event_id)
                except Exception as e:
                    log.info("event %s from %s failed: %s", event_id, origin, e)
                    return None

        # One task per slot, each taking IDs from a shared iterator: never more tasks
        # (or coroutines) than slots, however many IDs the peer named.
        pending = iter(event_ids)
        found: list[Event] = []

        async def worker() -> None:
            for event_id in pending:
                event = await one(event_id)
                if event is not None:
                    found.append(event)

        async with asyncio.TaskGroup() as group:
            for _ in range(min(self._limits.concurrency, len(event_ids))):
                group.create_task(worker())
        return found

    async def _store_outliers(self, room_id: str, events: Iterable[Event]) -> None:
        """Check each fetched event against its own auth events (check 4; an auth event
        that was rejected rejects it too) and store them as outliers in one write.

        Shielded: a deadline that expires meanwhile does not cut the write short."""
        await asyncio.shield(self._store_outliers_now(room_id, list(events)))

    async def _store_outliers_now(self, room_id: str, events: list[Event]) -> None:
        if await self._stores.rooms.get_room_version(room_id) is None:
            return
        fresh = {e.event_id: e for e in events if e.room_id == room_id}
        have = await self._stores.events.have_events(fresh)
        batch: dict[str, Event] = {}
        rejected: set[str] = set()
        items: list[PersistItem] = []
        for event in in_depth_order(e for eid, e in fresh.items() if eid not in have):
            wanted = auth_event_ids_wanted(event)
            known: Mapping[str, Event] = {
                **await self._stores.events.get_events(wanted),
                **{a: batch[a] for a in wanted if a in batch},
            }
            reason = check_own_auth_events(event, known)
            if reason is None and any(
                a in rejected or (a in known and known[a].rejected_reason is not None)
                for a in event.auth_event_ids
            ):
                reason = "an auth event was rejected"
            if reason is not None:
                rejected.add(event.event_id)
            batch[event.event_id] = event
            items.append(PersistItem(event=event, outlier=True, rejected_reason=reason))
        if items:
            async with self._locks.hold(room_id):
                await self._persister.persist_outliers(room_id, items)
