"""State at points of the graph: after a set of events, and the room's current state.

The state after one event is a stored state group. The state after several
(forward extremities, or the prev_events of a received event) is their resolution;
resolutions are cached by the set of groups, so a room whose extremities don't change
never resolves twice.

This is also the one place that stores new state groups (`store_group_after`,
`store_group`): every writer of the graph (local sends, received, fetched and
backfilled events) records the state after an event the same way, as a delta on the
group before it when there is one.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping

from homeserver.events import Event, RoomVersion, StateKey
from homeserver.graph.state_res import resolve_state
from homeserver.storage import Stores

StateMap = dict[StateKey, str]


class RoomState:
    """Reads state groups, resolves forks, and keeps per-room current state in memory."""

    def __init__(self, stores: Stores, cache_size: int = 1000) -> None:
        self._stores = stores
        self._resolved: OrderedDict[frozenset[int], StateMap] = OrderedDict()
        self._cache_size = cache_size

    async def fetch_events(self, event_ids: Iterable[str]) -> Mapping[str, Event]:
        return await self._stores.events.get_events(list(event_ids))

    async def state_after_events(
        self,
        room_version: RoomVersion,
        event_ids: Iterable[str],
        extra: Mapping[str, int] | None = None,
        pending: Mapping[str, Event] | None = None,
    ) -> tuple[StateMap, int | None]:
        """The state after `event_ids`, and a state group holding exactly it if one exists.

        `extra` supplies groups of events not yet persisted (the one being written) and
        `pending` those events themselves: resolution must see them, or it would drop
        them as unknown and cache a wrong answer.

        With one event (the common case) that is its group; with several, the resolved
        state, which has no group of its own until the caller stores one.
        """
        ids = list(dict.fromkeys(event_ids))
        groups = dict(await self._stores.state.get_state_groups_for_events(ids))
        groups.update(extra or {})
        known = {g for g in groups.values() if g is not None}
        missing = [e for e in ids if groups.get(e) is None]
        if missing:
            raise LookupError(f"no state known after events {missing}")
        if len(known) == 1:
            group = next(iter(known))
            return dict(await self._stores.state.get_state_ids(group)), group
        key = frozenset(known)
        cached = self._resolved.get(key)
        if cached is not None:
            self._resolved.move_to_end(key)
            return dict(cached), None
        state_sets = [await self._stores.state.get_state_ids(g) for g in known]
        fetch = self.fetch_events
        if pending:

            async def fetch(event_ids: Iterable[str]) -> Mapping[str, Event]:
                ids = list(event_ids)
                found = dict(await self.fetch_events([i for i in ids if i not in pending]))
                found.update({i: pending[i] for i in ids if i in pending})
                return found

        resolved = await resolve_state(room_version, state_sets, fetch)
        self._resolved[key] = resolved
        if len(self._resolved) > self._cache_size:
            self._resolved.popitem(last=False)
        return dict(resolved), None

    async def store_group_after(
        self, event: Event, state_before: Mapping[StateKey, str], before_group: int | None
    ) -> int:
        """Store (or reuse) the group of the state after `event`, given the state before
        it and, when known, that state's own group."""
        delta = {event.state_tuple: event.event_id} if event.is_state() else {}
        if before_group is not None:
            if not delta:
                return before_group
            return await self._stores.state.store_state_group(
                event.room_id, before_group, delta, None
            )
        return await self.store_group(event.room_id, {**state_before, **delta})

    async def store_group(self, room_id: str, state: Mapping[StateKey, str]) -> int:
        """A new group holding exactly `state` (e.g. a fork resolved just now)."""
        return await self._stores.state.store_state_group(room_id, None, {}, dict(state))

    async def auth_state_for(
        self, state: Mapping[StateKey, str], keys: Iterable[StateKey]
    ) -> dict[StateKey, Event]:
        """Load the events at `keys` of a state map, for the auth rules."""
        wanted = {k: state[k] for k in keys if k in state}
        events = await self.fetch_events(wanted.values())
        return {k: events[eid] for k, eid in wanted.items() if eid in events}
