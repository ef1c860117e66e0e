"""Auth chain computation: correctness, one fetch per event, the per-event cache."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from homeserver.events.event import Event
from homeserver.events.room_versions import KNOWN_ROOM_VERSIONS
from homeserver.graph.auth_chain import EventLoader, compute_auth_chain, load_auth_closure

RV = KNOWN_ROOM_VERSIONS["11"]


class Graph:
    """Events with given auth edges; counts every ID the fetch callback is asked for."""

    def __init__(self, edges: dict[str, list[str]]) -> None:
        self.events = {
            name: Event(
                {
                    "type": "m.test",
                    "state_key": name,
                    "sender": "@a:x",
                    "room_id": "!r:x",
                    "content": {},
                    "auth_events": auth,
                },
                RV,
                event_id=name,
            )
            for name, auth in edges.items()
        }
        self.fetched: Counter[str] = Counter()
        self.calls: list[list[str]] = []

    async def fetch(self, event_ids: Iterable[str]) -> dict[str, Event]:
        ids = list(event_ids)
        self.calls.append(ids)
        self.fetched.update(ids)
        return {i: self.events[i] for i in ids if i in self.events}


def diamond() -> Graph:
    #      D
    #     / \
    #    B   C
    #     \ /
    #      A
    return Graph({"A": [], "B": ["A"], "C": ["A"], "D": ["B", "C"]})


async def test_diamond_chain() -> None:
    graph = diamond()
    assert await compute_auth_chain(["D"], graph.fetch) == {"A", "B", "C"}
    assert await compute_auth_chain(["B"], graph.fetch) == {"A"}
    assert await compute_auth_chain(["A"], graph.fetch) == set()
    # Several starting events: their chains' union, a start included only if another
    # start reaches it.
    assert await compute_auth_chain(["B", "C"], graph.fetch) == {"A"}
    assert await compute_auth_chain(["D", "B"], graph.fetch) == {"A", "B", "C"}


async def test_diamond_each_event_fetched_once_one_call_per_level() -> None:
    graph = diamond()
    await compute_auth_chain(["D", "D", "B"], graph.fetch)
    assert graph.fetched == Counter({"A": 1, "B": 1, "C": 1, "D": 1})
    # Breadth-first: D and B, then C and A (A is reached through B in the first level).
    assert [sorted(c) for c in graph.calls] == [["B", "D"], ["A", "C"]]


async def test_cache_is_filled_and_then_spares_fetches() -> None:
    graph = diamond()
    cache: dict[str, frozenset[str]] = {}
    assert await compute_auth_chain(["D"], graph.fetch, cache) == {"A", "B", "C"}
    assert cache == {
        "A": frozenset(),
        "B": frozenset({"A"}),
        "C": frozenset({"A"}),
        "D": frozenset({"A", "B", "C"}),
    }
    graph.calls.clear()
    assert await compute_auth_chain(["D", "C"], graph.fetch, cache) == {"A", "B", "C"}
    assert graph.calls == []


async def test_cache_hit_below_the_start_is_not_walked() -> None:
    graph = Graph({"A": [], "B": ["A"], "C": ["A"], "D": ["B", "C"], "E": ["D"]})
    cache: dict[str, frozenset[str]] = {}
    await compute_auth_chain(["B"], graph.fetch, cache)
    graph.fetched.clear()
    assert await compute_auth_chain(["E"], graph.fetch, cache) == {"A", "B", "C", "D"}
    # B's chain came from the cache, so A was not fetched again.
    assert graph.fetched == Counter({"E": 1, "D": 1, "C": 1})
    assert cache["E"] == frozenset({"A", "B", "C", "D"})


async def test_missing_events_are_referenced_but_not_cached_through() -> None:
    graph = Graph({"A": [], "B": ["A", "GONE"], "C": ["A"], "D": ["B", "C"]})
    cache: dict[str, frozenset[str]] = {}
    assert await compute_auth_chain(["D"], graph.fetch, cache) == {"A", "B", "C", "GONE"}
    # Chains depending on GONE are incomplete, so only A and C are memoised.
    assert cache == {"A": frozenset(), "C": frozenset({"A"})}
    assert graph.fetched["GONE"] == 1


async def test_cycles_terminate() -> None:
    # Only forged v1/v2 event IDs can form one; the walk must still end.
    graph = Graph({"X": ["Y"], "Y": ["X", "A"], "A": []})
    cache: dict[str, frozenset[str]] = {}
    assert await compute_auth_chain(["X"], graph.fetch, cache) == {"X", "Y", "A"}
    assert "X" not in cache and "Y" not in cache
    assert cache["A"] == frozenset()
    assert max(graph.fetched.values()) == 1


async def test_long_chain_one_fetch_per_event() -> None:
    n = 3000
    edges = {f"E{i}": ([f"E{i - 1}"] if i else []) for i in range(n)}
    graph = Graph(edges)
    cache: dict[str, frozenset[str]] = {}
    chain = await compute_auth_chain([f"E{n - 1}"], graph.fetch)
    assert len(chain) == n - 1
    assert max(graph.fetched.values()) == 1
    graph.fetched.clear()
    chain = await compute_auth_chain([f"E{n // 10}"], graph.fetch, cache)
    assert len(chain) == n // 10 and len(cache) == n // 10 + 1


async def test_event_loader_fetches_each_id_once() -> None:
    graph = diamond()
    loader = EventLoader(graph.fetch)
    assert set(await loader.load(["A", "B", "NOPE"])) == {"A", "B"}
    assert set(await loader.load(["B", "C", "NOPE"])) == {"B", "C"}
    assert await loader.get("NOPE") is None
    assert (await loader.get("A")).event_id == "A"
    assert graph.fetched == Counter({"A": 1, "B": 1, "C": 1, "NOPE": 1})


async def test_load_auth_closure() -> None:
    graph = Graph({"A": [], "B": ["A"], "C": ["A", "GONE"], "D": ["B", "C"], "Z": []})
    loader = EventLoader(graph.fetch)
    closure = await load_auth_closure(["D"], loader)
    assert set(closure) == {"A", "B", "C", "D"}
    assert loader.missing == {"GONE"}
    assert "Z" not in graph.fetched
