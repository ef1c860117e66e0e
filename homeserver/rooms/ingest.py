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


def _message_chain(events: list[Event], start: int) -> list[Event]:
    """The longest run of `events` from `start` (one room's, a transaction's: at most
    50) of non-state events other than redactions, each the only prev event of the
    next; at least the event at `start`."""
    run = [events[start]]
    for event in events[start + 1 :]:
        last = run[-1]
        if (
            last.is_state()
            or last.type == "m.room.redaction"
            or event.is_state()
            or event.type == "m.room.redaction"
            or event.prev_event_ids != [last.event_id]
        ):
            break
        run.append(event)
    return run


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
        that fails never stops the rest.

        A run of plain messages each built on the one before (what a busy room's
        transaction mostly is) is checked together and written in one transaction
        when it needs nothing from the peer and every check passes (`_receive_chain`);
        otherwise its events go one by one, as the spec's algorithm reads."""
        errors: list[str | None] = []
        i = 0
        while i < len(events):
            run = _message_chain(events, i)
            if len(run) > 1 and await self._chain_taken(run):
                errors += [None] * len(run)
            else:
                for event in run:
                    errors.append(await self._receive_one(event, origin))
            i += len(run)
        return errors

    async def _receive_one(self, event: Event, origin: str) -> str | None:
        try:
            result = await self.receive(event, origin)
        except Exception as e:
            log.exception("ingest of %s from %s failed", event.event_id, origin)
            return f"Failed to process event: {type(e).__name__}"
        return f"Rejected: {result.reason}" if result.outcome == Outcome.REJECTED else None

    async def _chain_taken(self, run: list[Event]) -> bool:
        try:
            return await self._receive_chain(run)
        except Exception:  # each event then gets its own answer (and its own error)
            log.exception("ingest of a chain of %d events failed", len(run))
            return False

    async def _receive_chain(self, run: list[Event]) -> bool:
        """Checks 4-6 for a chain of non-state events, then ONE write; False (nothing
        written) unless every event is new and accepted with what we hold: anything
        to fetch (auth events, a gap), a duplicate, a rejection or a soft failure
        sends the run through `receive` one by one instead, which handles them.

        Equivalent to `receive` for each: a non-state event leaves the state as it
        found it, so the state before every event of the chain is the state after
        the first one's prev events, and the room's current state (read under the
        room's lock, which every writer of the room holds) does not move either."""
        first, events = run[0], self._stores.events
        ids = [e.event_id for e in run]
        wanted = list(dict.fromkeys(a for e in run for a in auth_event_ids_wanted(e)))
        async with self._locks.hold(first.room_id):
            if await events.have_events(ids):
                return False
            auth_events = await events.get_events(wanted)
            if len(auth_events) != len(wanted):
                return False
            try:
                state_map, group = await self._room_state.state_after_events(
                    first.room_version, first.prev_event_ids
                )
            except LookupError:
                return False
            current = await self._current_state(first, state_map)
            for event in run:
                own = {a: auth_events[a] for a in auth_event_ids_wanted(event)}
                if (
                    check_own_auth_events(event, own) is not None
                    or await check_against_state(self._room_state, event, state_map) is not None
                    or (
                        current is not state_map  # else check 5 was check 6
                        and await check_against_state(self._room_state, event, current) is not None
                    )
                    or (
                        self._policy is not None
                        and not await self._policy.recommended(event, current)
                    )
                ):
                    return False
            group = await self._room_state.store_group_after(first, state_map, group)
            await self._persister.persist_chain(run, group, [], from_peer=True)
        return True

    async def _current_state(self, event: Event, state_before: StateMap) -> StateMap:
        """The room's current state, for check 6 (the caller holds the room's lock).
        An event built on exactly the room's forward extremities (the common case)
        has it as its state before: that very map is returned (no whole-room read,
        and callers skip check 6, which check 5 just made)."""
        room_id = event.room_id
        tips = await self._stores.events.get_forward_extremities(room_id)
        if tips and set(tips) == set(event.prev_event_ids):
            return state_before
        return await self._stores.current_state.get_current_state_ids(room_id)

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
        current = await self._current_state(event, state_map)
        soft_reason = (
            None  # the current state is the state before: check 5 was check 6
            if current is state_map
            else await check_against_state(self._room_state, event, current)
        )
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
