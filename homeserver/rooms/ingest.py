"""Events from other servers: the auth checks of the receiving algorithm, then persist.

The federation layer has already checked format, signatures and hashes. Here, per the
spec's "Checks performed on receipt of a PDU":
  4. auth against the event's own auth_events (fetched if we lack them),
  5. auth against the state before the event (resolved from its prev_events, which are
     fetched with get_missing_events, or whose state is fetched with state_ids),
  6. soft-fail against the room's current state.
Failing 4 or 5 stores the event as rejected; failing 6 stores it soft-failed (kept out of
timelines and current state, but usable as a prev_event).

Two phases: whatever must come from the peer is fetched first WITHOUT the room's lock
(`remote_state.RemoteState`), then checks 4-6 and the write run under the lock on local
data only, so no local sender ever waits for a remote server.

Membership events handed to us in a handshake (send_join, send_leave, send_knock) take
the strict path `accept_membership`: the same checks 4-6, but an event that fails any of
them is refused (403) and not stored, since the peer is asking us to vouch for it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum

from homeserver.errors import MatrixError, forbidden
from homeserver.events import Event, RoomVersion, StateKey
from homeserver.graph.state_res import resolve_state
from homeserver.storage import PersistItem, Stores

from .auth_checks import (
    auth_event_ids_wanted,
    check_against_state,
    check_own_auth_events,
    in_depth_order,
)
from .keyed_lock import KeyedLock
from .persister import Persister
from .policy_server import PolicyServers
from .ports import RefusedAnswer
from .remote_state import Prefetched, RemoteState
from .room_state import RoomState

log = logging.getLogger(__name__)

StateMap = dict[StateKey, str]


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
        remote_state: RemoteState,
        policy: PolicyServers | None = None,
    ) -> None:
        self._stores = stores
        # The rooms' Policy Servers (v1.18): events without their signature soft fail.
        self._policy = policy
        self._room_state = room_state
        self._persister = persister
        self._locks = locks
        self._remote_state = remote_state

    # -- the receiving algorithm ---------------------------------------------------------

    async def receive(self, event: Event, origin: str) -> IngestResult:
        """Run checks 4-6 on an event pushed to us (a /send PDU) and persist it."""
        if await self._in_graph(event):
            return IngestResult(Outcome.DUPLICATE)
        fetched = await self._remote_state.prepare(event, origin, fill_gap=True)
        async with self._locks.hold(event.room_id):
            for missing in fetched.gap:
                await self._receive_locked(missing, fetched)
            return await self._receive_locked(event, fetched)

    async def receive_all(self, events: list[Event], origin: str) -> list[str | None]:
        """`receive` for each of one room's events in order (a transaction's): for each,
        None if it was taken (accepted, soft-failed or a duplicate), else why not. One
        that fails never stops the rest."""
        errors: list[str | None] = []
        for event in events:
            try:
                result = await self.receive(event, origin)
            except Exception as e:
                log.exception("ingest of %s from %s failed", event.event_id, origin)
                errors.append(f"Failed to process event: {type(e).__name__}")
                continue
            rejected = result.outcome == Outcome.REJECTED
            errors.append(f"Rejected: {result.reason}" if rejected else None)
        return errors

    async def _in_graph(self, event: Event) -> bool:
        events = self._stores.events
        return event.event_id in await events.have_events(
            [event.event_id]
        ) and not await events.is_outlier(event.event_id)

    async def _receive_locked(self, event: Event, fetched: Prefetched) -> IngestResult:
        if await self._in_graph(event):
            return IngestResult(Outcome.DUPLICATE)
        auth_events = await self._stores.events.get_events(auth_event_ids_wanted(event))
        reason = check_own_auth_events(event, auth_events)
        if reason is not None:
            return await self._reject(event, reason)
        state_before = await self._state_before(event, fetched.state_after)
        if state_before is None:
            return await self._reject(event, "could not determine the state before the event")
        state_map, group = state_before
        reason = await check_against_state(self._room_state, event, state_map)
        if reason is not None:
            return await self._reject(event, reason)
        current = await self._stores.current_state.get_current_state_ids(event.room_id)
        soft_reason = await check_against_state(self._room_state, event, current)
        if (
            soft_reason is None
            and self._policy is not None
            and not await self._policy.recommended(event, current)
        ):
            soft_reason = "no valid signature of the room's policy server"
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

    async def _reject(self, event: Event, reason: str) -> IngestResult:
        await self._persister.persist(event, state_before=None, rejected_reason=reason)
        return IngestResult(Outcome.REJECTED, reason)

    async def _state_before(
        self, event: Event, remote_state_after: Mapping[str, StateMap]
    ) -> tuple[StateMap, int | None] | None:
        """The state before `event`: from our groups, or for prev events we lack from
        what the peer told us (fetched beforehand); None if it cannot be determined."""
        prevs = list(dict.fromkeys(event.prev_event_ids))
        groups = await self._stores.state.get_state_groups_for_events(prevs)
        if all(p in groups for p in prevs):
            return await self._room_state.state_after_events(event.room_version, prevs)
        state_sets: list[Mapping[StateKey, str]] = []
        for prev in prevs:
            group = groups.get(prev)
            if group is not None:
                state_sets.append(await self._stores.state.get_state_ids(group))
            elif prev in remote_state_after:
                state_sets.append(remote_state_after[prev])
            else:
                return None
        resolved = await resolve_state(
            event.room_version, state_sets, self._room_state.fetch_events
        )
        return resolved, None

    async def state_before_for_backfill(
        self, event: Event, remote_state_after: Mapping[str, StateMap]
    ) -> tuple[StateMap, int | None] | None:
        """`_state_before` for a backfilled event whose prev events are beyond the batch
        (the caller holds the room lock)."""
        return await self._state_before(event, remote_state_after)

    # -- membership events a peer asks us to vouch for ----------------------------------

    async def accept_membership(self, event: Event) -> StateMap:
        """send_join / send_leave / send_knock: checks 4-6 on an event built on our own
        template, persisted and sent to the room's other servers only if it passes all
        of them, including the check against current state (a remote user banned since
        make_join is refused here, not let in above the ban). Returns the state before
        the event. Everything it needs is local: 400 for unknown prev or auth events."""
        async with self._locks.hold(event.room_id):
            try:
                state_before, group = await self._room_state.state_after_events(
                    event.room_version, event.prev_event_ids
                )
            except LookupError:
                raise MatrixError(400, "M_BAD_JSON", "Unknown prev_events") from None
            if await self._in_graph(event):
                return state_before
            wanted = auth_event_ids_wanted(event)
            auth_events = await self._stores.events.get_events(wanted)
            if any(a not in auth_events for a in event.auth_event_ids):
                raise MatrixError(400, "M_BAD_JSON", "Unknown auth_events")
            current = await self._stores.current_state.get_current_state_ids(event.room_id)
            reason = (
                check_own_auth_events(event, auth_events)
                or await check_against_state(self._room_state, event, state_before)
                or await check_against_state(self._room_state, event, current)
            )
            if reason is not None:
                raise forbidden(f"Event not allowed: {reason}")
            await self._persister.persist(
                event, state_before=state_before, state_before_group=group, announce_to_peers=True
            )
            return state_before

    # -- joining a room through another server ---------------------------------------------

    async def _adopt_version(self, room_id: str, version: RoomVersion) -> None:
        """The room's version is what the join dance says, unless we hold its state.

        An invite (or a knock answer) for a room we are not in records the version its
        sender named, and anyone can send an invite: a forged one must not make us store
        and read the real room's events under the wrong version. Once we hold the room's
        state, its version is known, and an answer naming another one is refused."""
        known = await self._stores.rooms.get_room_version(room_id)
        if known is None or known == version.identifier:
            return
        if await self._stores.current_state.get_current_state_ids(room_id, ["m.room.create"]):
            raise RefusedAnswer(f"the room is version {known}, the answer says otherwise")
        log.info("room %s: version %s (not %s, from an invite)", room_id, version.identifier, known)
        await self._stores.rooms.correct_room_version(room_id, version.identifier)

    async def persist_join(
        self,
        version: RoomVersion,
        join_event: Event,
        state: list[Event],
        auth_chain: list[Event],
    ) -> int:
        """Persist the result of a send_join: the room's state and auth chain as outliers
        (each auth-checked against its own auth events), then our join on top of that
        state. Raises RefusedAnswer if the join itself is not allowed by that state."""
        room_id = join_event.room_id
        create = next((e for e in [*state, *auth_chain] if e.is_create()), None)
        if create is None:
            raise RefusedAnswer("send_join response has no create event")
        await self._stores.rooms.store_room(room_id, version.identifier, create.sender)
        async with self._locks.hold(room_id):
            await self._adopt_version(room_id, version)
            by_id = {e.event_id: e for e in [*auth_chain, *state]}
            rejected: dict[str, str] = {}
            items = []
            for ev in in_depth_order(by_id.values()):
                own = {a: by_id[a] for a in ev.auth_event_ids if a in by_id}
                if version.room_id_is_create_event_id and not ev.is_create():
                    own[create.event_id] = create
                reason = check_own_auth_events(ev, own)
                if reason is None and any(a in rejected for a in ev.auth_event_ids):
                    reason = "an auth event was rejected"
                if reason is not None:
                    rejected[ev.event_id] = reason
                items.append(PersistItem(event=ev, outlier=True, rejected_reason=reason))
            await self._persister.persist_outliers(room_id, items)
            state_map = {
                e.state_tuple: e.event_id
                for e in state
                if e.is_state() and e.event_id not in rejected
            }
            reason = await check_against_state(self._room_state, join_event, state_map)
            if reason is not None:
                raise RefusedAnswer(f"our join is not allowed by the returned state: {reason}")
            return await self._persister.persist(join_event, state_before=state_map)
