"""Persist events with their state, extremities and current state; then announce them.

Callers hold the room's lock (the `KeyedLock` of the room service). Everything about one event lands in
one storage transaction; listeners hear about it only after that commit, and in commit
order (`commit_order`): a listener never hears of stream position N+1 before N, so
whatever it feeds (the notifier's current token, the sync activity window) never claims
a position whose events it does not hold yet. Every accepted redaction is applied to its
target here (`redactions.RedactionApplier`), whoever sent it, before it is announced.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from homeserver.events import Event, StateKey
from homeserver.storage import PersistItem, Stores

from .commit_order import CommitOrder, Turn
from .ports import EventListener, OutboundEvents
from .redactions import RedactionApplier
from .room_state import RoomState, StateMap

log = logging.getLogger(__name__)


class Persister:
    def __init__(
        self,
        stores: Stores,
        room_state: RoomState,
        server_name: str,
        listeners: Iterable[EventListener] = (),
        out_of_band_listeners: Iterable[EventListener] = (),
        outbound: OutboundEvents | None = None,
    ) -> None:
        """`listeners` hear of every event accepted into a room's timeline, in stream
        order; `out_of_band_listeners` of out-of-band membership events (invites, knocks
        and rejections for rooms we are not in: not timeline events, but they move the
        events stream); `outbound` sends our own events to the room's other servers."""
        self._stores = stores
        self._room_state = room_state
        self._server_name = server_name
        self._listeners = list(listeners)
        self._out_of_band_listeners = list(out_of_band_listeners)
        self._outbound = outbound
        self._order = CommitOrder()
        self.redactions = RedactionApplier(stores, server_name)

    async def persist(
        self,
        event: Event,
        *,
        state_before: Mapping[StateKey, str] | None,
        state_before_group: int | None = None,
        rejected_reason: str | None = None,
        soft_failed: bool = False,
        announce_to_peers: bool = False,
        client_txn: tuple[str, str | None, str] | None = None,
    ) -> int:
        """Persist one event; return its stream ordering.

        `state_before=None` stores an outlier (no state, not in the timeline's DAG tips).
        Rejected and soft-failed events are stored but never change current state.
        """
        room_id = event.room_id
        outlier = state_before is None
        group: int | None = None
        new_extremities: list[str] | None = None
        delta: tuple[list[StateKey], dict[StateKey, str]] | None = None
        if not outlier and rejected_reason is None:
            assert state_before is not None
            group = await self._room_state.store_group_after(
                event, state_before, state_before_group
            )
            if not soft_failed:
                new_extremities, delta = await self._advance_room(event, group)
        item = PersistItem(
            event=event,
            state_group=group,
            rejected_reason=rejected_reason,
            outlier=outlier,
            soft_failed=soft_failed,
        )
        (stream,), turn = await self._persist_in_order(
            room_id,
            [item],
            new_extremities=new_extremities,
            current_state_delta=delta,
            client_txns=[(*client_txn, event.event_id)] if client_txn else (),
        )
        if group is not None:
            self._stores.state.remember_event_groups({event.event_id: group})
        accepted = rejected_reason is None and not outlier and not soft_failed
        try:
            await turn.ready()
            # Before announcing: whoever hears of a redaction must read its target redacted.
            await self.redactions.after_persist(event, accepted=accepted)
            if accepted:
                self._tell(self._listeners, event, stream)
        finally:
            turn.finish()
        if accepted and announce_to_peers:
            await self._send_to_peers(
                event, departing_host=await self._departing_host(event, state_before)
            )
        return stream

    async def persist_outliers(self, room_id: str, items: Sequence[PersistItem]) -> None:
        """Store events outside the DAG (auth and state events fetched from a peer, each
        with its check-4 verdict) in ONE transaction. Outliers are announced to no
        listener, but a redaction waiting for one of them is applied."""
        if not items:
            return
        _, turn = await self._persist_in_order(room_id, list(items))
        try:
            await turn.ready()
            for item in items:
                await self.redactions.after_persist(item.event, accepted=False)
        finally:
            turn.finish()

    async def persist_backfilled(self, room_id: str, items: Sequence[PersistItem]) -> None:
        """Store a backfilled batch (newest first) in ONE transaction, below every stream
        position handed out; not announced (history is never new). Redactions in the
        batch, or of events in it, are applied."""
        if not items:
            return
        _, turn = await self._persist_in_order(room_id, list(items), backfilled=True)
        try:
            await turn.ready()
            for item in items:
                accepted = item.state_group is not None and item.rejected_reason is None
                await self.redactions.after_persist(item.event, accepted=accepted)
        finally:
            turn.finish()

    async def persist_out_of_band_membership(self, event: Event) -> int:
        """Store a member event of a room we are not in (an invite we received, our
        knock, our rejection of an invite) outside the DAG: it updates the target's
        membership only. Announced in stream order like timeline events."""
        (stream,), turn = await self._persist_in_order(
            event.room_id,
            [PersistItem(event=event, outlier=True)],
            out_of_band_memberships=[event.event_id],
        )
        try:
            await turn.ready()
            self._tell(self._out_of_band_listeners, event, stream)
        finally:
            turn.finish()
        return stream

    async def _persist_in_order(
        self, room_id: str, items: list[PersistItem], **options: Any
    ) -> tuple[list[int], Turn]:
        """persist_events, taking an announcement turn at commit (see commit_order)."""
        turn: Turn | None = None
        abandoned = False

        def enter() -> None:
            nonlocal turn
            if turn is not None:
                # A grouped transaction failed and this request is retried alone: its
                # first turn is let go (nothing of it was committed).
                turn.finish()
            turn = self._order.enter()
            if abandoned:
                # The caller was cancelled while its group committed: nobody will
                # announce, so the turn must not hold up every later one.
                turn.finish()

        try:
            streams = await self._stores.events.persist_events(
                room_id, items, in_commit_order=enter, **options
            )
        except BaseException:
            abandoned = True
            if turn is not None:  # the commit itself failed after the turn was taken
                turn.finish()
            raise
        assert turn is not None
        return streams, turn

    async def persist_chain(
        self,
        events: list[Event],
        group: int,
        client_txns: list[tuple[str, str | None, str, str]],
        *,
        from_peer: bool = False,
    ) -> list[int]:
        """Persist a chain of non-state events built one on another (each the only
        prev_event of the next) on top of state group `group`, in ONE transaction.

        This is how a burst of messages to one room costs one commit, not one each:
        ours (sent to the room's other servers), or, `from_peer`, another server's
        (accepted by every check; a redaction that arrived before one of them is
        applied, and nothing is sent on).
        """
        first, last = events[0], events[-1]
        new_extremities, delta = await self._advance_room(
            last, group, prevs=set(first.prev_event_ids), pending=events
        )
        streams, turn = await self._persist_in_order(
            last.room_id,
            [PersistItem(event=e, state_group=group) for e in events],
            new_extremities=new_extremities,
            current_state_delta=delta,
            client_txns=client_txns,
            grouped=True,  # with other rooms' chains committing meanwhile
        )
        self._stores.state.remember_event_groups({e.event_id: group for e in events})
        try:
            await turn.ready()
            if from_peer:
                # Before announcing: whoever hears of a redacted event must read it so.
                await self.redactions.apply_waiting(events)
            for event, stream in zip(events, streams, strict=True):
                self._tell(self._listeners, event, stream)
        finally:
            turn.finish()
        if not from_peer:
            await self._send_to_peers(*events)
        return streams

    async def _advance_room(
        self,
        event: Event,
        group: int,
        prevs: set[str] | None = None,
        pending: list[Event] | None = None,
    ) -> tuple[list[str], tuple[list[StateKey], dict[StateKey, str]]]:
        """New forward extremities and the current-state delta the event brings.

        For a chain, `event` is its last event, `prevs` the first one's prev_events and
        `pending` the whole chain (not yet stored)."""
        old_ext = await self._stores.events.get_forward_extremities(event.room_id)
        if prevs is None:
            prevs = set(event.prev_event_ids)
        new_ext = [e for e in old_ext if e not in prevs] + [event.event_id]
        if old_ext and set(old_ext) == prevs:
            # Built on exactly the current tips (every local send): the current state is
            # the state before this event, so the delta is the event itself. This keeps
            # the hot path free of whole-room state reads.
            return new_ext, ([], {event.state_tuple: event.event_id} if event.is_state() else {})
        if len(new_ext) == 1:
            new_current: StateMap = dict(await self._stores.state.get_state_ids(group))
        else:
            others = [e for e in new_ext if e != event.event_id]
            new_current, _ = await self._room_state.state_after_events(
                event.room_version,
                [*others, event.event_id],
                extra={event.event_id: group},
                pending={e.event_id: e for e in pending or [event]},
            )
        old_current = await self._stores.current_state.get_current_state_ids(event.room_id)
        removed = [k for k in old_current if k not in new_current]
        changed = {k: v for k, v in new_current.items() if old_current.get(k) != v}
        return new_ext, (removed, changed)

    @staticmethod
    def _tell(listeners: list[EventListener], event: Event, stream: int) -> None:
        for listener in listeners:
            try:
                listener.on_new_event(event, stream)
            except Exception:  # a listener's bug must not fail an acknowledged write
                log.exception("event listener failed for %s", event.event_id)

    async def _departing_host(
        self, event: Event, state_before: Mapping[StateKey, str] | None
    ) -> str | None:
        """The target's server when `event` takes a member out who the room's peers no
        longer list after it: a kick or ban of a joined user, or a rescinded invite.

        Room PDUs go to the servers of joined members only (Synapse: the hosts joined
        before the event). A server that was merely invited gets its invite through
        /invite, never the room's PDUs; it is told only when that invite is withdrawn.
        """
        if event.type != "m.room.member" or not event.state_key or state_before is None:
            return None
        if (
            event.content.get("membership") not in ("leave", "ban")
            or event.sender == event.state_key
        ):
            return None
        prior_id = state_before.get(("m.room.member", event.state_key))
        if prior_id is None:
            return None
        prior = await self._stores.events.get_event(prior_id)
        if prior is None or prior.content.get("membership") not in ("join", "invite"):
            return None
        return event.state_key.partition(":")[2]

    async def _send_to_peers(self, *events: Event, departing_host: str | None = None) -> None:
        """Send our events (one room's, in order) to the servers of its joined members."""
        if self._outbound is not None:
            hosts = await self._stores.current_state.get_joined_hosts(events[0].room_id)
            if departing_host:
                hosts = set(hosts) | {departing_host}
            destinations = sorted(h for h in hosts if h != self._server_name)
            if destinations:
                await self._outbound.send_events(events, destinations)
