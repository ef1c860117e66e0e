"""Events from other servers: the auth checks of the receiving algorithm, then persist.

The federation layer has already checked format, signatures and hashes. Here, per the
spec's "Checks performed on receipt of a PDU":
  4. auth against the event's own auth_events (fetched if we lack them),
  5. auth against the state before the event (resolved from its prev_events, which are
     fetched with get_missing_events, or whose state is fetched with state_ids),
  6. soft-fail against the room's current state.
Failing 4 or 5 stores the event as rejected; failing 6 stores it soft-failed (kept out of
timelines and current state, but usable as a prev_event). All of it under the room lock.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum

from homeserver.events import Event, RoomVersion, StateKey
from homeserver.graph.auth_rules import (
    AuthError,
    auth_types_for_event,
    check_auth_events_selection,
    check_auth_rules,
)
from homeserver.graph.state_res import resolve_state
from homeserver.storage import PersistItem, Stores

from .keyed_lock import KeyedLock
from .persister import Persister
from .ports import RemoteEvents
from .room_state import RoomState

log = logging.getLogger(__name__)

CREATE_KEY: StateKey = ("m.room.create", "")
MAX_MISSING_EVENTS = 10


class Outcome(Enum):
    ACCEPTED = "accepted"
    SOFT_FAILED = "soft_failed"
    REJECTED = "rejected"
    DUPLICATE = "duplicate"


@dataclass
class IngestResult:
    outcome: Outcome
    reason: str | None = None


class RemoteEventIngest:
    def __init__(
        self,
        stores: Stores,
        room_state: RoomState,
        persister: Persister,
        locks: KeyedLock,
        remote: RemoteEvents | None = None,
    ) -> None:
        self._stores = stores
        self._room_state = room_state
        self._persister = persister
        self._locks = locks
        self.remote = remote

    # -- the receiving algorithm ---------------------------------------------------------

    async def receive(self, event: Event, origin: str) -> IngestResult:
        """Run checks 4-6 on an event pushed to us (a /send PDU) and persist it."""
        async with self._locks.hold(event.room_id):
            return await self._receive_locked(event, origin, fetch_missing=True)

    async def _receive_locked(self, event: Event, origin: str, fetch_missing: bool) -> IngestResult:
        stores = self._stores
        if event.event_id in await stores.events.have_events(
            [event.event_id]
        ) and not await stores.events.is_outlier(event.event_id):
            return IngestResult(Outcome.DUPLICATE)

        auth_events = await self._auth_events_of(event, origin)
        reason = _auth_against_own_auth_events(event, auth_events)
        if reason is not None:
            await self._persister.persist(event, state_before=None, rejected_reason=reason)
            return IngestResult(Outcome.REJECTED, reason)

        if fetch_missing:
            await self._fill_gap(event, origin)
        state_before = await self._state_before(event, origin)
        if state_before is None:
            reason = "could not determine the state before the event"
            await self._persister.persist(event, state_before=None, rejected_reason=reason)
            return IngestResult(Outcome.REJECTED, reason)
        state_map, group = state_before

        reason = await self._auth_against_state(event, state_map)
        if reason is not None:
            await self._persister.persist(event, state_before=None, rejected_reason=reason)
            return IngestResult(Outcome.REJECTED, reason)

        current = await stores.current_state.get_current_state_ids(event.room_id)
        soft_reason = await self._auth_against_state(event, current)
        await self._persister.persist(
            event,
            state_before=state_map,
            state_before_group=group,
            soft_failed=soft_reason is not None,
        )
        if soft_reason is not None:
            log.info("soft-failed %s: %s", event.event_id, soft_reason)
            return IngestResult(Outcome.SOFT_FAILED, soft_reason)
        return IngestResult(Outcome.ACCEPTED)

    async def _auth_events_of(self, event: Event, origin: str) -> dict[str, Event]:
        """The event's auth events (and the create event), fetched from `origin` if needed."""
        wanted = list(event.auth_event_ids)
        if event.room_version.room_id_is_create_event_id and not event.is_create():
            wanted.append(create_event_id_of(event.room_id))
        have = dict(await self._stores.events.get_events(wanted))
        missing = [e for e in wanted if e not in have]
        if missing and self.remote is not None:
            try:
                fetched = await self.remote.get_event_auth(origin, event.room_id, event.event_id)
            except Exception as e:  # a peer's failure is a reason to reject, not to crash
                log.info("event_auth for %s from %s failed: %s", event.event_id, origin, e)
                fetched = []
            await self._persist_auth_outliers(fetched)
            have.update(await self._stores.events.get_events(missing))
        return have

    async def _persist_auth_outliers(self, events: Iterable[Event]) -> None:
        """Store fetched auth events as outliers, each checked against its own auth
        events (in depth order, so an auth event's own auth comes first)."""
        for ev in sorted(events, key=lambda e: (e.depth, e.event_id)):
            if ev.event_id in await self._stores.events.have_events([ev.event_id]):
                continue
            if await self._stores.rooms.get_room_version(ev.room_id) is None:
                continue
            own = dict(await self._stores.events.get_events(ev.auth_event_ids))
            reason = _auth_against_own_auth_events(ev, own)
            await self._persister.persist(ev, state_before=None, rejected_reason=reason)

    async def _fill_gap(self, event: Event, origin: str) -> None:
        """Fetch missing prev_events with get_missing_events and ingest them oldest first."""
        prevs = event.prev_event_ids
        known = await self._stores.state.get_state_groups_for_events(prevs)
        if all(p in known for p in prevs) or self.remote is None:
            return
        extremities = await self._stores.events.get_forward_extremities(event.room_id)
        try:
            fetched = await self.remote.get_missing_events(
                origin,
                event.room_id,
                earliest=extremities,
                latest=[event.event_id],
                limit=MAX_MISSING_EVENTS,
                min_depth=0,
            )
        except Exception as e:
            log.info("get_missing_events from %s failed: %s", origin, e)
            return
        for missing in sorted(fetched, key=lambda e: (e.depth, e.event_id)):
            if missing.room_id != event.room_id or missing.event_id == event.event_id:
                continue
            await self._receive_locked(missing, origin, fetch_missing=False)

    async def state_before(
        self, event: Event, origin: str
    ) -> tuple[dict[StateKey, str], int | None] | None:
        """(state before `event`, its group if stored), fetching from `origin` what we
        lack; None if it cannot be determined. Callers hold the room lock (backfill)."""
        return await self._state_before(event, origin)

    async def _state_before(
        self, event: Event, origin: str
    ) -> tuple[dict[StateKey, str], int | None] | None:
        """The state before `event`: from our groups, or fetched with state_ids."""
        prevs = list(dict.fromkeys(event.prev_event_ids))
        groups = await self._stores.state.get_state_groups_for_events(prevs)
        if all(p in groups for p in prevs):
            return await self._room_state.state_after_events(event.room_version, prevs)
        if self.remote is None:
            return None
        state_sets: list[Mapping[StateKey, str]] = []
        for prev in prevs:
            group = groups.get(prev)
            if group is not None:
                state_sets.append(await self._stores.state.get_state_ids(group))
                continue
            after = await self._remote_state_after(event.room_id, prev, origin)
            if after is None:
                return None
            state_sets.append(after)
        resolved = await resolve_state(
            event.room_version, state_sets, self._room_state.fetch_events
        )
        return resolved, None

    async def _remote_state_after(
        self, room_id: str, event_id: str, origin: str
    ) -> dict[StateKey, str] | None:
        """State after a prev event we lack, from the origin's state_ids at it."""
        assert self.remote is not None
        try:
            state_ids, auth_ids = await self.remote.get_state_ids(origin, room_id, event_id)
            prev = await self._stores.events.get_event(event_id)
            if prev is None:
                prev = await self.remote.get_event(origin, room_id, event_id)
            wanted = [*auth_ids, *state_ids]
            have = await self._stores.events.have_events(wanted)
            fetched = []
            for eid in wanted:
                if eid not in have:
                    ev = await self.remote.get_event(origin, room_id, eid)
                    if ev is not None:
                        fetched.append(ev)
            await self._persist_auth_outliers(fetched)
            if prev is not None:
                await self._persist_auth_outliers([prev])
        except Exception as e:
            log.info("state_ids at %s from %s failed: %s", event_id, origin, e)
            return None
        events = await self._stores.events.get_events(state_ids)
        state = {
            ev.state_tuple: ev.event_id
            for ev in events.values()
            if ev.is_state() and ev.rejected_reason is None
        }
        if prev is not None and prev.is_state():
            state[prev.state_tuple] = prev.event_id
        return state

    async def _auth_against_state(self, event: Event, state: Mapping[StateKey, str]) -> str | None:
        keys = auth_types_for_event(
            event.room_version, event.type, event.sender, event.state_key, event.content
        )
        auth_state = await self._room_state.auth_state_for(state, keys | {CREATE_KEY})
        try:
            check_auth_rules(event, auth_state)
        except AuthError as e:
            return str(e)
        return None

    # -- joining a room through another server ---------------------------------------------

    async def persist_join(
        self,
        version: RoomVersion,
        join_event: Event,
        state: list[Event],
        auth_chain: list[Event],
    ) -> int:
        """Persist the result of a send_join: the room's state and auth chain as outliers
        (each auth-checked against its own auth events), then our join on top of that
        state. Raises AuthError if the join itself is not allowed by that state."""
        room_id = join_event.room_id
        create = next((e for e in [*state, *auth_chain] if e.is_create()), None)
        if create is None:
            raise AuthError("send_join response has no create event")
        await self._stores.rooms.store_room(room_id, version.identifier, create.sender)
        async with self._locks.hold(room_id):
            by_id = {e.event_id: e for e in [*auth_chain, *state]}
            ordered = sorted(by_id.values(), key=lambda e: (e.depth, e.event_id))
            rejected: dict[str, str] = {}
            items = []
            for ev in ordered:
                own = {a: by_id[a] for a in ev.auth_event_ids if a in by_id}
                if version.room_id_is_create_event_id and not ev.is_create():
                    own[create.event_id] = create
                reason = _auth_against_own_auth_events(ev, own)
                if reason is None and any(a in rejected for a in ev.auth_event_ids):
                    reason = "an auth event was rejected"
                if reason is not None:
                    rejected[ev.event_id] = reason
                items.append(PersistItem(event=ev, outlier=True, rejected_reason=reason))
            await self._stores.events.persist_events(room_id, items)
            state_map = {
                e.state_tuple: e.event_id
                for e in state
                if e.is_state() and e.event_id not in rejected
            }
            reason = await self._auth_against_state(join_event, state_map)
            if reason is not None:
                raise AuthError(f"our join is not allowed by the returned state: {reason}")
            return await self._persister.persist(join_event, state_before=state_map)

    async def persist_outlier(self, event: Event) -> None:
        """Store an event outside the DAG (e.g. an invite to a room we are not in)."""
        async with self._locks.hold(event.room_id):
            await self._persister.persist(event, state_before=None)


def create_event_id_of(room_id: str) -> str:
    """In room v12 the room ID is the create event's ID with another sigil."""
    return "$" + room_id[1:]


def _auth_against_own_auth_events(event: Event, auth_events: Mapping[str, Event]) -> str | None:
    """Check 4: the event is allowed by the auth events it lists (and the create event)."""
    listed = [auth_events[a] for a in event.auth_event_ids if a in auth_events]
    if len(listed) != len(set(event.auth_event_ids)):
        return "some auth events are unknown"
    try:
        check_auth_events_selection(event, listed)
        auth_state = {e.state_tuple: e for e in listed if e.is_state()}
        if CREATE_KEY not in auth_state:
            create = next((e for e in auth_events.values() if e.is_create()), None)
            if create is not None:
                auth_state[CREATE_KEY] = create
        check_auth_rules(event, auth_state)
    except AuthError as e:
        return str(e)
    return None
