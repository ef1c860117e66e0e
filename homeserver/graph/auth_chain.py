"""Auth chains: every event reachable from some events by following `auth_events`.

The auth chain of an event E is E's auth events, their auth events, and so on back to
the create event (spec: room versions 2+, "Auth chain"). E itself is not part of its
own chain. State resolution, `/event_auth` and `/state` answers, and the checks on
received events all need it.

Events come in through an async `fetch_events` callback so this module stays pure.
The walk is breadth-first by frontier: one callback call per level of the graph, and no
event is ever requested twice in one walk. Callers that compute many chains pass a
`cache` dict (event_id -> frozenset of that event's chain); an event found there is not
loaded again, and every event loaded whose chain is fully known is added to it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Mapping

from ..events.event import Event

FetchEvents = Callable[[Iterable[str]], Awaitable[Mapping[str, Event]]]
"""Load events by ID; IDs that cannot be found are omitted from the answer."""

AuthChainCache = dict[str, frozenset[str]]

# Hand the event loop back this often in loops over many events.
_YIELD_EVERY = 500


async def compute_auth_chain(
    event_ids: Iterable[str],
    fetch_events: FetchEvents,
    cache: AuthChainCache | None = None,
) -> set[str]:
    """The union of the auth chains of `event_ids` (the IDs themselves excluded,
    unless one is in another's chain).

    Auth event IDs that cannot be fetched are still part of the answer (they are
    referenced), but their own ancestors are unknown, so no chain depending on them is
    cached. Cycles (possible only with forged v1/v2 event IDs) terminate.
    """
    result: set[str] = set()
    # event_id -> its auth event IDs, for every event loaded during this walk.
    edges: dict[str, list[str]] = {}
    missing: set[str] = set()
    queued: set[str] = set()
    frontier: list[str] = []

    for event_id in event_ids:
        if cache is not None and event_id in cache:
            result |= cache[event_id]
        elif event_id not in queued:
            queued.add(event_id)
            frontier.append(event_id)

    steps = 0
    while frontier:
        fetched = await fetch_events(frontier)
        next_frontier: list[str] = []
        for event_id in frontier:
            event = fetched.get(event_id)
            if event is None:
                missing.add(event_id)
                edges[event_id] = []
                continue
            auth_ids = event.auth_event_ids
            edges[event_id] = auth_ids
            for auth_id in auth_ids:
                result.add(auth_id)
                if cache is not None and auth_id in cache:
                    result |= cache[auth_id]
                elif auth_id not in queued:
                    queued.add(auth_id)
                    next_frontier.append(auth_id)
            steps += 1
            if steps % _YIELD_EVERY == 0:
                await asyncio.sleep(0)
        frontier = next_frontier

    if cache is not None:
        await _memoise_chains(edges, missing, cache)
    return result


async def _memoise_chains(
    edges: Mapping[str, list[str]], missing: set[str], cache: AuthChainCache
) -> None:
    """Store the chain of every loaded event whose chain is complete.

    Iterative depth-first post-order, so each event's chain is built from its auth
    events' chains (already cached) exactly once. An event is left out when it, or
    anything in its chain, could not be fetched or lies on a cycle.
    """
    incomplete: set[str] = set(missing)
    in_progress: set[str] = set()
    done: set[str] = set()
    steps = 0

    for root in edges:
        if root in cache or root in done:
            continue
        in_progress.add(root)
        stack: list[tuple[str, Iterable[str]]] = [(root, iter(edges[root]))]
        while stack:
            node, children = stack[-1]
            descended = False
            for child in children:
                if child in cache or child in done or child not in edges:
                    continue
                if child in in_progress:
                    incomplete.add(child)  # a cycle: neither end gets a cached chain
                    continue
                in_progress.add(child)
                stack.append((child, iter(edges[child])))
                descended = True
                break
            if descended:
                continue
            stack.pop()
            in_progress.discard(node)
            done.add(node)
            if node not in incomplete:
                chain = _chain_from_children(edges[node], cache, incomplete)
                if chain is None:
                    incomplete.add(node)
                else:
                    cache[node] = chain
            steps += 1
            if steps % _YIELD_EVERY == 0:
                await asyncio.sleep(0)


def _chain_from_children(
    auth_ids: list[str], cache: AuthChainCache, incomplete: set[str]
) -> frozenset[str] | None:
    chain = set(auth_ids)
    for auth_id in auth_ids:
        parent_chain = cache.get(auth_id)
        if parent_chain is None or auth_id in incomplete:
            return None
        chain |= parent_chain
    return frozenset(chain)


class EventLoader:
    """A memoising front for a `FetchEvents` callback.

    State resolution asks for the same events from several steps; this keeps every
    event loaded (or known missing) so the callback sees each ID at most once. An
    instance is itself a `FetchEvents`, so it can be handed to `compute_auth_chain`.
    """

    __slots__ = ("_fetch", "events", "missing")

    def __init__(self, fetch_events: FetchEvents) -> None:
        self._fetch = fetch_events
        self.events: dict[str, Event] = {}
        self.missing: set[str] = set()

    async def load(self, event_ids: Iterable[str]) -> dict[str, Event]:
        """The events among `event_ids` that exist, fetching only unseen IDs."""
        ids = list(dict.fromkeys(event_ids))
        wanted = [i for i in ids if i not in self.events and i not in self.missing]
        if wanted:
            fetched = await self._fetch(wanted)
            for event_id in wanted:
                event = fetched.get(event_id)
                if event is None:
                    self.missing.add(event_id)
                else:
                    self.events[event_id] = event
        return {i: self.events[i] for i in ids if i in self.events}

    async def __call__(self, event_ids: Iterable[str]) -> Mapping[str, Event]:
        return await self.load(event_ids)

    async def get(self, event_id: str) -> Event | None:
        """One event, or None if it cannot be found."""
        if event_id in self.events:
            return self.events[event_id]
        return (await self.load([event_id])).get(event_id)


async def load_auth_closure(event_ids: Iterable[str], loader: EventLoader) -> dict[str, Event]:
    """Load `event_ids` and their whole auth chains; return them all by ID.

    Breadth-first by frontier, one `loader.load` per level. Unfetchable events are
    left out (and recorded in `loader.missing`).
    """
    closure: dict[str, Event] = {}
    seen: set[str] = set()
    frontier = [i for i in dict.fromkeys(event_ids)]
    seen.update(frontier)
    while frontier:
        loaded = await loader.load(frontier)
        next_frontier: list[str] = []
        for event_id, event in loaded.items():
            closure[event_id] = event
            for auth_id in event.auth_event_ids:
                if auth_id not in seen:
                    seen.add(auth_id)
                    next_frontier.append(auth_id)
        frontier = next_frontier
    return closure


__all__ = [
    "AuthChainCache",
    "EventLoader",
    "FetchEvents",
    "compute_auth_chain",
    "load_auth_closure",
]
