"""A small LRU cache that cannot be re-filled with stale data.

Reads run on other connections than writes, so a reader may fetch a row, lose the race
to a writer that changes the row and invalidates the key, and then store the old value.
`generation()` is taken before the read; `set_if_current` drops the value if any
invalidation happened in between.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Iterable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class LruCache(Generic[K, V]):
    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self._data: OrderedDict[K, V] = OrderedDict()
        self._generation = 0

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def get(self, key: K) -> V | None:
        try:
            value = self._data[key]
        except KeyError:
            return None
        self._data.move_to_end(key)
        return value

    def set(self, key: K, value: V) -> None:
        """Store a value known to be current (e.g. just written and committed)."""
        self._data[key] = value
        self._data.move_to_end(key)
        while len(self._data) > self.max_size:
            self._data.popitem(last=False)

    def generation(self) -> int:
        return self._generation

    def set_if_current(self, key: K, value: V, generation: int) -> None:
        """Store a value read from the database, unless something was invalidated since."""
        if generation == self._generation:
            self.set(key, value)

    def invalidate(self, key: K) -> None:
        self._generation += 1
        self._data.pop(key, None)

    def invalidate_many(self, keys: Iterable[K]) -> None:
        self._generation += 1
        for key in keys:
            self._data.pop(key, None)

    def clear(self) -> None:
        self._generation += 1
        self._data.clear()
