"""State resolution v2 (room versions 2-11) and v2.1 (room version 12).

Spec: content/rooms/fragments/v2-state-res.md and content/rooms/v12.md. v2.1 differs
in two places, both switched on `RoomVersion.state_res`:

* the full conflicted set also holds the *conflicted state subgraph* (events on an
  auth-event path between two conflicted events);
* the iterative auth checks for the power events start from an empty state rather than
  the unconflicted state, so an unconflicted event can no longer "reset" state that a
  conflicted branch changed.

Work is bounded by the conflicted events and their auth chains: the unconflicted state
is only walked (through `fetch_auth_chain`, or `compute_auth_chain`) when an event of
the conflicted events' chains could be in the auth difference and cannot be ruled out
cheaply. Points where the spec is silent follow Synapse, the reference implementation
we federate with:

* an event's auth chain counts the event itself when computing the auth difference
  (this only matters for events already in the conflicted set or unconflicted state);
* the create event counts as a power event;
* events rejected before (`Event.rejected_reason`) are never admitted to the resolved
  state, and rejected auth events are not used when checking;
* step 1 collects the power events' auth ancestors along auth-event paths that stay in
  the full conflicted set.
"""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence

from ..events.event import Event, StateKey
from ..events.room_versions import RoomVersion, StateResAlgorithm
from .auth_chain import EventLoader, FetchEvents, compute_auth_chain, load_auth_closure
from .auth_rules import AuthError, auth_types_for_event, check_auth_rules, get_power_level

StateMap = Mapping[StateKey, str]
FetchAuthChain = Callable[[Iterable[str]], Awaitable[set[str]]]

CREATE_KEY: StateKey = ("m.room.create", "")
POWER_LEVELS_KEY: StateKey = ("m.room.power_levels", "")
JOIN_RULES_KEY: StateKey = ("m.room.join_rules", "")

# Hand the event loop back this often in loops over many events.
_YIELD_EVERY = 100


async def resolve_v2(
    room_version: RoomVersion,
    state_sets: Sequence[StateMap],
    fetch_events: FetchEvents,
    fetch_auth_chain: FetchAuthChain | None = None,
) -> dict[StateKey, str]:
    """Resolve `state_sets` with state resolution v2, or v2.1 for room version 12."""
    unconflicted, conflicted = separate(state_sets)
    if not conflicted:
        return unconflicted

    loader = EventLoader(fetch_events)
    conflicted_ids = set().union(*conflicted.values())
    # The conflicted events and their whole auth chains; everything the conflicted part
    # of the algorithm looks at is in here (auth chains are closed downwards).
    closure = await load_auth_closure(conflicted_ids, loader)
    full_set = await _full_conflicted_set(
        room_version, state_sets, unconflicted, conflicted, closure, loader, fetch_auth_chain
    )
    room_create = await _room_create_event(state_sets, loader)

    # 1. Power events and their auth ancestors inside the full conflicted set, in
    #    reverse topological power order.
    power_ids = [i for i in full_set if is_power_event(closure[i])]
    power_closure = _reachable(power_ids, closure, within=full_set)
    power_order = await _reverse_topological_power_sort(power_closure, closure, room_create)

    # 2. Iterative auth checks over them: from the unconflicted state in v2, from an
    #    empty state in v2.1.
    v2_1 = room_version.state_res == StateResAlgorithm.V2_1
    base: StateMap = {} if v2_1 else unconflicted
    changes: dict[StateKey, str] = {}
    await _iterative_auth_checks(power_order, base, changes, loader, room_create)

    # 3. The other events, in mainline order of the partially resolved power levels.
    leftover = [i for i in full_set if i not in power_closure]
    resolved_pl = changes.get(POWER_LEVELS_KEY, base.get(POWER_LEVELS_KEY))
    leftover_order = await _mainline_sort(leftover, resolved_pl, loader)

    # 4. Iterative auth checks over them, on top of step 2.
    await _iterative_auth_checks(leftover_order, base, changes, loader, room_create)

    # 5. The unconflicted state wins over anything resolved.
    resolved = dict(unconflicted)
    for key, event_id in changes.items():
        resolved.setdefault(key, event_id)
    return resolved


# --------------------------------------------------------------------------------------
# Definitions
# --------------------------------------------------------------------------------------


def separate(
    state_sets: Sequence[StateMap],
) -> tuple[dict[StateKey, str], dict[StateKey, set[str]]]:
    """Split into the unconflicted state map and the conflicted state, by key.

    A key is unconflicted only if every state set has it with the same event; a key
    missing from some set is conflicted (and the missing side adds no event).
    """
    unconflicted: dict[StateKey, str] = {}
    conflicted: dict[StateKey, set[str]] = {}
    if not state_sets:
        return unconflicted, conflicted
    first, rest = state_sets[0], state_sets[1:]
    keys = set(first)
    for state_set in rest:
        keys.update(state_set)
    for key in keys:
        value = first.get(key)
        if value is not None and all(s.get(key) == value for s in rest):
            unconflicted[key] = value
        else:
            conflicted[key] = {v for s in state_sets if (v := s.get(key)) is not None}
    return unconflicted, conflicted


def is_power_event(event: Event) -> bool:
    """Power levels, join rules and create events, and kicks and bans.

    (The spec lists the first two and the member events; Synapse and ruma also count
    the create event, which can only matter when it is in the auth difference.)
    """
    if not event.is_state():
        return False
    key = event.state_tuple
    if key in (POWER_LEVELS_KEY, JOIN_RULES_KEY, CREATE_KEY):
        return True
    return (
        event.type == "m.room.member"
        and event.membership in ("leave", "ban")
        and event.sender != event.state_key
    )


def _reachable(
    starts: Iterable[str], closure: Mapping[str, Event], within: set[str] | None = None
) -> set[str]:
    """`starts` and everything reachable from them over auth edges inside `closure`
    (and inside `within`, if given)."""
    seen: set[str] = set()
    stack = [i for i in starts if i in closure and (within is None or i in within)]
    seen.update(stack)
    while stack:
        event = closure[stack.pop()]
        for auth_id in event.auth_event_ids:
            if auth_id in seen or auth_id not in closure:
                continue
            if within is not None and auth_id not in within:
                continue
            seen.add(auth_id)
            stack.append(auth_id)
    return seen


async def _full_conflicted_set(
    room_version: RoomVersion,
    state_sets: Sequence[StateMap],
    unconflicted: Mapping[StateKey, str],
    conflicted: Mapping[StateKey, set[str]],
    closure: Mapping[str, Event],
    loader: EventLoader,
    fetch_auth_chain: FetchAuthChain | None,
) -> set[str]:
    """The conflicted events, plus the auth difference, plus (v2.1) the conflicted
    state subgraph; only events we could load.

    Write C_i for the auth chain of state set i. Every unconflicted event is in every
    set, so with U the chains of the unconflicted events and K_i those of set i's
    conflicted events, the auth difference is (∪K_i − ∩K_i) − U. K_i only needs the
    already loaded closure; U is consulted only for the few candidates left after the
    cheap exclusions.
    """
    conflicted_ids: set[str] = set().union(*conflicted.values())
    chains = [_reachable((s[k] for k in conflicted if k in s), closure) for s in state_sets]
    union = set().union(*chains)
    intersection = set.intersection(*chains) if chains else set()
    candidates = union - intersection - conflicted_ids

    if candidates:
        unconflicted_ids = set(unconflicted.values())
        candidates -= unconflicted_ids
        # Unconflicted events that sit in the conflicted events' chains: their own
        # chains are already loaded.
        candidates -= _reachable((u for u in unconflicted_ids if u in closure), closure)
        if candidates:
            # Only now walk the rest of the unconflicted state's auth chains.
            others = [u for u in unconflicted_ids if u not in closure]
            if fetch_auth_chain is not None:
                candidates -= await fetch_auth_chain(others)
            else:
                candidates -= await compute_auth_chain(others, loader)

    full_set = conflicted_ids | candidates
    if room_version.state_res == StateResAlgorithm.V2_1:
        full_set |= _conflicted_subgraph(conflicted_ids, closure)
    return {i for i in full_set if i in closure}


def _conflicted_subgraph(conflicted_ids: set[str], closure: Mapping[str, Event]) -> set[str]:
    """Events on an auth-event path from one conflicted event to another (ends included).

    Those are the events both reachable from a conflicted event (its auth chain) and
    from which a conflicted event is reachable.
    """
    below = _reachable(conflicted_ids, closure)
    cited_by: dict[str, list[str]] = {}
    for event_id in below:
        for auth_id in closure[event_id].auth_event_ids:
            if auth_id in below:
                cited_by.setdefault(auth_id, []).append(event_id)
    above: set[str] = {i for i in conflicted_ids if i in below}
    stack = list(above)
    while stack:
        for citer in cited_by.get(stack.pop(), ()):
            if citer not in above:
                above.add(citer)
                stack.append(citer)
    return above


async def _room_create_event(state_sets: Sequence[StateMap], loader: EventLoader) -> Event | None:
    """The room's create event, from whichever state set names one.

    v12 events never cite it, so auth checks need it from here; earlier versions use it
    only as a fallback.
    """
    candidates = sorted({s[CREATE_KEY] for s in state_sets if CREATE_KEY in s})
    loaded = await loader.load(candidates)
    for event_id in candidates:
        if event_id in loaded:
            return loaded[event_id]
    return None


# --------------------------------------------------------------------------------------
# Orderings
# --------------------------------------------------------------------------------------


def _sender_power(event: Event, closure: Mapping[str, Event], room_create: Event | None) -> float:
    """The sender's power level according to the event's own auth events."""
    if event.is_create():
        return 0
    power_levels: Event | None = None
    create: Event | None = None
    for auth_id in event.auth_event_ids:
        auth_event = closure.get(auth_id)
        if auth_event is None or not auth_event.is_state():
            continue
        if auth_event.state_tuple == POWER_LEVELS_KEY:
            power_levels = auth_event
        elif auth_event.state_tuple == CREATE_KEY:
            create = auth_event
    return get_power_level(event.sender, power_levels, create or room_create)


async def _reverse_topological_power_sort(
    event_ids: set[str], closure: Mapping[str, Event], room_create: Event | None
) -> list[str]:
    """Kahn's algorithm over the auth edges among `event_ids`, oldest first; among the
    events ready at each step, highest sender power, then earliest
    origin_server_ts, then smallest event ID goes first."""
    remaining: dict[str, int] = {}
    cited_by: dict[str, list[str]] = {i: [] for i in event_ids}
    for event_id in event_ids:
        auth_ids = {a for a in closure[event_id].auth_event_ids if a in event_ids}
        remaining[event_id] = len(auth_ids)
        for auth_id in auth_ids:
            cited_by[auth_id].append(event_id)

    keys: dict[str, tuple[float, int, str]] = {}
    for n, event_id in enumerate(event_ids, 1):
        event = closure[event_id]
        power = _sender_power(event, closure, room_create)
        keys[event_id] = (-power, event.origin_server_ts, event_id)
        if n % _YIELD_EVERY == 0:
            await asyncio.sleep(0)

    ready = [keys[i] for i, count in remaining.items() if count == 0]
    heapq.heapify(ready)
    order: list[str] = []
    while ready:
        event_id = heapq.heappop(ready)[2]
        order.append(event_id)
        for citer in cited_by[event_id]:
            remaining[citer] -= 1
            if remaining[citer] == 0:
                heapq.heappush(ready, keys[citer])
    # Events on an auth cycle (forged v1/v2 IDs) never become ready; they are dropped.
    return order


async def _power_levels_auth_event(event: Event, loader: EventLoader) -> str | None:
    """The m.room.power_levels event among the event's auth events, if any."""
    auth_events = await loader.load(event.auth_event_ids)
    for auth_id in event.auth_event_ids:
        auth_event = auth_events.get(auth_id)
        if (
            auth_event is not None
            and auth_event.is_state()
            and auth_event.state_tuple == POWER_LEVELS_KEY
        ):
            return auth_id
    return None


async def _mainline_sort(
    event_ids: list[str], power_levels_id: str | None, loader: EventLoader
) -> list[str]:
    """Order events by the mainline of `power_levels_id`: events whose power levels
    ancestry joins the mainline further back come first; then origin_server_ts, then
    event ID."""
    if not event_ids:
        return []
    mainline: list[str] = []
    current = power_levels_id
    while current is not None and current not in mainline:
        mainline.append(current)
        event = await loader.get(current)
        current = None if event is None else await _power_levels_auth_event(event, loader)
    # Closeness to the resolved power levels: the oldest mainline event is 1, events
    # that never reach the mainline 0, so sorting ascending puts the latter first.
    closeness = {event_id: len(mainline) - n for n, event_id in enumerate(mainline)}

    memo: dict[str, int] = {}
    keys: dict[str, tuple[int, int, str]] = {}
    for n, event_id in enumerate(event_ids, 1):
        event = loader.events[event_id]
        position = await _mainline_position(event, closeness, memo, loader)
        keys[event_id] = (position, event.origin_server_ts, event_id)
        if n % _YIELD_EVERY == 0:
            await asyncio.sleep(0)
    return sorted(event_ids, key=keys.__getitem__)


async def _mainline_position(
    event: Event, closeness: Mapping[str, int], memo: dict[str, int], loader: EventLoader
) -> int:
    """How close to the resolved power levels the event's power levels ancestry meets
    the mainline (0 if never). Results are memoised per power levels event, so a
    chain of power levels is walked once for all the events that cite it."""
    walked: list[str] = []
    current = await _power_levels_auth_event(event, loader)
    position = 0
    while current is not None:
        if current in closeness:
            position = closeness[current]
            break
        if current in memo:
            position = memo[current]
            break
        if current in walked:
            break  # an auth cycle
        walked.append(current)
        pl_event = await loader.get(current)
        current = None if pl_event is None else await _power_levels_auth_event(pl_event, loader)
    for event_id in walked:
        memo[event_id] = position
    return position


# --------------------------------------------------------------------------------------
# Iterative auth checks
# --------------------------------------------------------------------------------------


def _auth_keys(event: Event) -> set[StateKey]:
    """The state an event's authorisation depends on (create included in every version)."""
    keys = auth_types_for_event(
        event.room_version, event.type, event.sender, event.state_key, event.content
    )
    keys.add(CREATE_KEY)
    return keys


async def _iterative_auth_checks(
    order: list[str],
    base: StateMap,
    changes: dict[StateKey, str],
    loader: EventLoader,
    room_create: Event | None,
) -> None:
    """Apply each event of `order` to the state `base` overlaid with `changes` if the
    auth rules allow it, recording accepted events in `changes`.

    Each event is checked against its own (non-rejected) auth events, replaced by the
    resolved state wherever that has an entry for a key the rules look at.
    """
    if not order:
        return
    events = [loader.events[i] for i in order]
    # Load, in one go, the base state events the checks may read.
    wanted = {base[k] for event in events for k in _auth_keys(event) if k in base}
    await loader.load(wanted)

    for n, event in enumerate(events, 1):
        if n % _YIELD_EVERY == 0:
            await asyncio.sleep(0)
        if event.rejected_reason is not None or not event.is_state():
            continue
        auth_state: dict[StateKey, Event] = {}
        for auth_id in event.auth_event_ids:
            auth_event = loader.events.get(auth_id)
            if (
                auth_event is not None
                and auth_event.rejected_reason is None
                and auth_event.is_state()
            ):
                auth_state[auth_event.state_tuple] = auth_event
        for key in _auth_keys(event):
            state_id = changes.get(key, base.get(key))
            if state_id is None:
                continue
            state_event = loader.events.get(state_id) or await loader.get(state_id)
            if state_event is not None and state_event.rejected_reason is None:
                auth_state[key] = state_event
        if CREATE_KEY not in auth_state and room_create is not None:
            auth_state[CREATE_KEY] = room_create
        try:
            check_auth_rules(event, auth_state)
        except AuthError:
            continue
        changes[event.state_tuple] = event.event_id


__all__ = ["FetchAuthChain", "StateMap", "is_power_event", "resolve_v2", "separate"]
