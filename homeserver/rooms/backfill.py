"""History we never received: the room service's half of backfill (`ports.Backfill`).

When a local user paginates /messages backwards past the oldest timeline event we hold
(typically: everything before our server joined), the room reader calls
`backfill(room_id, limit)`. We look at the prev_events of our oldest timeline events
that we lack, ask a server in the room for up to `limit` events before them
(`RemoteEvents.backfill`: checks 1-3 done by the adapter), and persist what passes the
auth check against the event's own auth events as backfilled history: below every
stream position we have handed out, outside current state and forward extremities.

Like the receiving algorithm, everything that comes from a peer (the batch, auth
chains, the state before events whose prev_events are beyond the batch) is fetched
before the room's lock is taken; the lock covers only the checks and the one write.
"""

from __future__ import annotations

import logging

from homeserver.events import Event
from homeserver.storage import PersistItem, Stores

from .auth_checks import auth_event_ids_wanted, check_own_auth_events, in_depth_order
from .ingest import RemoteEventIngest, StateMap
from .keyed_lock import KeyedLock
from .persister import Persister
from .ports import RemoteEvents
from .remote_state import RemoteState
from .room_state import RoomState

log = logging.getLogger(__name__)

MAX_BACKFILL = 100
OLDEST_SCANNED = 20
FAR_PAST = -(2**62)


class RoomBackfill:
    """Implements homeserver.rooms.ports.Backfill over a RemoteEvents port."""

    def __init__(
        self,
        stores: Stores,
        room_state: RoomState,
        persister: Persister,
        locks: KeyedLock,
        ingest: RemoteEventIngest,
        remote_state: RemoteState,
        remote: RemoteEvents,
        server_name: str,
    ) -> None:
        self._stores = stores
        self._room_state = room_state
        self._persister = persister
        self._locks = locks
        self._ingest = ingest
        self._remote_state = remote_state
        self._remote = remote
        self._server_name = server_name

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
            except Exception as e:  # a peer's failure: ask the next one
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
        if not fresh:
            return 0
        remote_state = await self._remote_state.state_after_prevs(fresh, origin)
        pending = {e.event_id: e for e in fresh}
        groups: dict[str, int] = {}
        items: list[PersistItem] = []
        async with self._locks.hold(room_id):
            for event in in_depth_order(fresh):
                auth = await self._stores.events.get_events(auth_event_ids_wanted(event))
                reason = check_own_auth_events(event, auth)
                group = None
                if reason is None:
                    group = await self._group_after(event, groups, pending, remote_state)
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
            await self._persister.persist_backfilled(room_id, list(reversed(items)))
        return len(groups)

    async def _group_after(
        self,
        event: Event,
        groups: dict[str, int],
        pending: dict[str, Event],
        remote_state: dict[str, StateMap],
    ) -> int | None:
        """The state group after `event` (stored if new), or None if the state before it
        cannot be determined."""
        if event.is_create() and not event.prev_event_ids:
            return await self._room_state.store_group_after(event, {}, None)
        try:
            before, before_group = await self._room_state.state_after_events(
                event.room_version,
                event.prev_event_ids,
                extra={p: groups[p] for p in event.prev_event_ids if p in groups},
                pending=pending,
            )
        except LookupError:
            found = await self._ingest.state_before_for_backfill(event, remote_state)
            if found is None:
                return None
            before, before_group = found
        return await self._room_state.store_group_after(event, before, before_group)
