"""A small LRU cache that cannot be re-filled with stale data.

Reads run on other connections than writes, so a reader may fetch a row, lose the race
to a writer that changes the row and invalidates the key, and then store the old value.
`generation()` is taken before the read; `set_if_current` drops the value if any
invalidation happened in between.
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


_MISSING: Any = object()

# The operator's cache sizing (Synapse's caches.global_factor, per_cache_factors and
# event_cache_size: config.model.CacheSettings.size_for), applied to every cache built
# while a server's composition runs: (name, default size) -> size. A context variable,
# so two servers in one process (tests) each get their own.
_sizing: ContextVar[Callable[[str | None, int], int] | None] = ContextVar(
    "cache_sizing", default=None
)


@contextmanager
def cache_sizing(size_for: Callable[[str | None, int], int]) -> Iterator[None]:
    token = _sizing.set(size_for)
    try:
        yield
    finally:
        _sizing.reset(token)


# Every named cache alive in the process, for the metrics (synapse_util_caches_*).
_NAMED: weakref.WeakSet[LruCache] = weakref.WeakSet()


def named_caches() -> Iterator[LruCache]:
    return iter(list(_NAMED))


# Told of every invalidation of a named cache (name, keys; None = everything) in the
# process that writes: homeserver.replication sends them to the other processes.
invalidation_hook: Callable[[str, list[Any] | None], None] | None = None


def set_invalidation_hook(hook: Callable[[str, list[Any] | None], None] | None) -> None:
    global invalidation_hook
    invalidation_hook = hook


def apply_invalidation(name: str, keys: list[Any] | None) -> None:
    """Apply another process's invalidation to this process's caches of that name.
    JSON turned tuple keys into lists; they are tuples again here."""
    for cache in named_caches():
        if cache.name != name:
            continue
        if keys is None:
            cache.clear(replicate=False)
        else:
            cache.invalidate_many(
                (tuple(k) if isinstance(k, list) else k for k in keys), replicate=False
            )


def clear_named_caches() -> None:
    """Forget everything cached (a worker that may have missed invalidations)."""
    for cache in named_caches():
        cache.clear(replicate=False)


class LruCache(Generic[K, V]):
    """`name` (optional) makes the cache visible to the metrics; its counters (hits,
    misses, evictions by size or invalidation) are plain integers, cheap to keep.

    With `weigh`, `max_size` bounds the sum of the values' weights, not their number
    (a state map weighs its entries: a count of maps would let the memory grow with
    the size of rooms). The newest value is kept even if it alone weighs more."""

    def __init__(
        self, max_size: int, name: str | None = None, weigh: Callable[[V], int] | None = None
    ) -> None:
        sizing = _sizing.get()
        self.max_size = max_size if sizing is None else sizing(name, max_size)
        self.name = name
        self._weigh = weigh
        self._weights: dict[K, int] = {}
        self._total_weight = 0
        self._data: OrderedDict[K, V] = OrderedDict()
        self._generation = 0
        self.hits = 0
        self.misses = 0
        self.evicted_size = 0
        self.evicted_invalidation = 0
        if name is not None:
            _NAMED.add(self)

    def __len__(self) -> int:
        return len(self._data)

    @property
    def size(self) -> int:
        """What `max_size` bounds: the number of values, or with `weigh` their weight."""
        return self._total_weight if self._weigh is not None else len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def get(self, key: K) -> V | None:
        try:
            value = self._data[key]
        except KeyError:
            self.misses += 1
            return None
        self.hits += 1
        self._data.move_to_end(key)
        return value

    def peek(self, key: K) -> V | None:
        """The value, without counting a hit or miss or refreshing its recency."""
        return self._data.get(key)

    def key_list(self) -> list[K]:
        return list(self._data)

    def set(self, key: K, value: V) -> None:
        """Store a value known to be current (e.g. just written and committed)."""
        self._data[key] = value
        self._data.move_to_end(key)
        if self._weigh is None:
            while len(self._data) > self.max_size:
                self._data.popitem(last=False)
                self.evicted_size += 1
            return
        weight = self._weigh(value)
        self._total_weight += weight - self._weights.get(key, 0)
        self._weights[key] = weight
        while self._total_weight > self.max_size and len(self._data) > 1:
            oldest, _ = self._data.popitem(last=False)
            self._total_weight -= self._weights.pop(oldest)
            self.evicted_size += 1

    def _drop(self, key: K) -> bool:
        if self._data.pop(key, _MISSING) is _MISSING:
            return False
        if self._weigh is not None:
            self._total_weight -= self._weights.pop(key)
        return True

    def generation(self) -> int:
        return self._generation

    def set_if_current(self, key: K, value: V, generation: int) -> None:
        """Store a value read from the database, unless something was invalidated since."""
        if generation == self._generation:
            self.set(key, value)

    def invalidate(self, key: K) -> None:
        self._generation += 1
        if self._drop(key):
            self.evicted_invalidation += 1
        if invalidation_hook is not None and self.name is not None:
            invalidation_hook(self.name, [key])

    def invalidate_many(self, keys: Iterable[K], *, replicate: bool = True) -> None:
        self._generation += 1
        keys = list(keys)
        for key in keys:
            if self._drop(key):
                self.evicted_invalidation += 1
        if replicate and invalidation_hook is not None and self.name is not None and keys:
            invalidation_hook(self.name, keys)

    def clear(self, *, replicate: bool = True) -> None:
        self._generation += 1
        self._data.clear()
        self._weights.clear()
        self._total_weight = 0
        if replicate and invalidation_hook is not None and self.name is not None:
            invalidation_hook(self.name, None)
