"""Per-key asyncio locks: writes to one room are serialised, rooms run in parallel.

With event persisters (several processes writing rooms) each key's lock is also held
across the deployment (`shared`, PostgreSQL advisory locks, homeserver.replication.
writers), and `acquired` then makes sure what this process cached about the room is
not older than another process's write.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager


class KeyedLock:
    """A lock per key, dropped when nobody holds or waits for it."""

    def __init__(
        self,
        shared: Callable[[str], AbstractAsyncContextManager[None]] | None = None,
        acquired: Callable[[str], Awaitable[None]] | None = None,
    ) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}
        self._shared = shared
        self._acquired = acquired

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (None, 0))
        if lock is None:
            lock = asyncio.Lock()
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                if self._shared is None:
                    yield
                else:
                    async with self._shared(key):
                        if self._acquired is not None:
                            await self._acquired(key)
                        yield
        finally:
            lock, users = self._locks[key]
            if users <= 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)
