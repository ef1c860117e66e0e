"""History we never received: homeserver.rooms.ports.Backfill over `/backfill`.

When a local user paginates /messages backwards past the oldest timeline event we hold
(typically: everything before our server joined), the room reader calls
`backfill(room_id, limit)`. We look at the prev_events of our oldest timeline events
that we lack, ask a server in the room for up to `limit` events before them, and
persist what passes the receiving checks (1-3 in remote_events, then auth against the
event's own auth events) as backfilled history: below every stream position we have
handed out, outside current state and forward extremities.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from federation.client import FederationError
from federation.remote_events import FederationRemoteEvents
from homeserver.events import Event, StateKey
from homeserver.rooms.ingest import RemoteEventIngest, _auth_against_own_auth_events
from homeserver.rooms.keyed_lock import KeyedLock
from homeserver.rooms.persister import Persister
from homeserver.rooms.ports import Backfill
from homeserver.rooms.room_state import RoomState
from homeserver.storage import PersistItem, Stores

log = logging.getLogger(__name__)

MAX_BACKFILL = 100
OLDEST_SCANNED = 20
FAR_PAST = -(2**62)


class FederationBackfill:
    """Implements homeserver.rooms.ports.Backfill."""

    def __init__(
        self,
        remote: FederationRemoteEvents,
        ingest: RemoteEventIngest,
        stores: Stores,
        persister: Persister,
        server_name: str,
        room_state: RoomState,
        locks: KeyedLock,
    ) -> None:
        self._remote = remote
        self._ingest = ingest
        self._stores = stores
        self._persister = persister
        self._server_name = server_name
        self._room_state = room_state
        self._locks = locks

    async def backward_extremities(self, room_id: str) -> list[str]:
        """prev_events of our oldest timeline events that we do not hold in the DAG."""
        oldest = await self._stores.events.get_room_events_between(
            room_id, FAR_PAST, None, OLDEST_SCANNED, "f"
        )
        prevs = list(dict.fromkeys(p for row in oldest for p in row.event.prev_event_ids))
        if not prevs:
            return []
        have = await self._stores.events.have_events(prevs)
        missing = []
        for p in prevs:
            if p not in have or await self._stores.events.is_outlier(p):
                missing.append(p)
        return missing

    async def backfill(self, room_id: str, limit: int) -> int:
        extremities = await self.backward_extremities(room_id)
        if not extremities:
            return 0
        limit = max(1, min(limit, MAX_BACKFILL))
        hosts = await self._stores.current_state.get_joined_hosts(room_id)
        room_server = room_id.partition(":")[2]
        servers = sorted(h for h in hosts if h != self._server_name)
        if room_server in servers:
            servers.remove(room_server)
            servers.insert(0, room_server)
        for server in servers:
            try:
                events = await self._remote.backfill(server, room_id, extremities, limit)
            except (FederationError, ValueError, LookupError) as e:
                log.info("backfill of %s from %s failed: %s", room_id, server, e)
                continue
            if events:
                return await self._persist(room_id, events, server)
        return 0

    async def _persist(self, room_id: str, events: list[Event], origin: str) -> int:
        """Check and persist a backfilled batch in one transaction.

        Oldest first we check each event against its own auth events and work out the
        state after it (from its prev_events' groups, or from the origin's state_ids
        when they are beyond the batch) - history visibility needs that state, so an
        event whose state we cannot learn stays an outlier. The batch is then written
        newest first into ever lower stream orderings, so /messages reads it in order.
        """
        have = await self._stores.events.have_events([e.event_id for e in events])
        fresh = [
            e
            for e in events
            if e.room_id == room_id
            and (e.event_id not in have or await self._stores.events.is_outlier(e.event_id))
        ]
        pending = {e.event_id: e for e in fresh}
        groups: dict[str, int] = {}
        items: list[PersistItem] = []
        async with self._locks.hold(room_id):
            for event in sorted(fresh, key=lambda e: (e.depth, e.event_id)):
                auth = await self._auth_events(event, origin)
                reason = _auth_against_own_auth_events(event, auth)
                group = None
                if reason is None:
                    group = await self._group_after(event, origin, groups, pending)
                    if group is None:
                        log.info("no state known before backfilled %s", event.event_id)
                    else:
                        groups[event.event_id] = group
                else:
                    log.info("backfilled %s rejected: %s", event.event_id, reason)
                items.append(
                    PersistItem(
                        event=event,
                        state_group=group,
                        rejected_reason=reason,
                        outlier=reason is None and group is None,
                    )
                )
            if items:
                await self._stores.events.persist_events(
                    room_id, list(reversed(items)), backfilled=True
                )
            for item in items:  # redactions in the batch, or of events in it
                accepted = item.state_group is not None
                await self._persister.redactions.after_persist(item.event, accepted=accepted)
        return len(groups)

    async def _group_after(
        self, event: Event, origin: str, groups: dict[str, int], pending: dict[str, Event]
    ) -> int | None:
        """The state group after `event` (stored if new), or None if the state before it
        cannot be determined."""
        before: dict[StateKey, str]
        before_group: int | None = None
        if event.is_create() and not event.prev_event_ids:
            before = {}
        else:
            try:
                before, before_group = await self._room_state.state_after_events(
                    event.room_version,
                    event.prev_event_ids,
                    extra={p: groups[p] for p in event.prev_event_ids if p in groups},
                    pending=pending,
                )
            except LookupError:
                found = await self._ingest.state_before(event, origin)
                if found is None:
                    return None
                before, before_group = found
        delta = {event.state_tuple: event.event_id} if event.is_state() else {}
        if before_group is not None:
            if not delta:
                return before_group
            return await self._stores.state.store_state_group(
                event.room_id, before_group, delta, None
            )
        return await self._stores.state.store_state_group(
            event.room_id, None, {}, {**before, **delta}
        )

    async def _auth_events(self, event: Event, origin: str) -> dict[str, Any]:
        wanted = list(event.auth_event_ids)
        if event.room_version.room_id_is_create_event_id and not event.is_create():
            wanted.append("$" + event.room_id[1:])
        have = dict(await self._stores.events.get_events(wanted))
        if any(a not in have for a in wanted):
            try:
                chain = await self._remote.get_event_auth(origin, event.room_id, event.event_id)
            except (FederationError, ValueError, LookupError):
                chain = []
            for ev in sorted(chain, key=lambda e: (e.depth, e.event_id)):
                if ev.event_id not in have:
                    own = dict(await self._stores.events.get_events(ev.auth_event_ids))
                    reason = _auth_against_own_auth_events(ev, own)
                    await self._persister.persist(ev, state_before=None, rejected_reason=reason)
            have.update(await self._stores.events.get_events(wanted))
        return have


def _check_protocol(b: FederationBackfill) -> Backfill:
    return b


BACKFILLER = web.AppKey("fed_backfill", FederationBackfill)
