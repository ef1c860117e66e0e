"""Coalesce frequent small writes of "latest value per key" into one transaction.

Some state changes on nearly every request but is only bookkeeping: a device's last
seen time and address, a user's presence row (kept for restarts; readers use memory).
Written inline, each is a commit that every request waits for, and under a burst (1,000
clients syncing at once) they queue on the database's single write lock ahead of the
messages users are waiting for: a send took 23 s behind them. Here a write only updates
a dict; one task writes everything pending in one call per interval, or sooner when
`max_pending` keys are waiting. What a crash loses is at most one interval of such
bookkeeping, never an event.

Bounds: the pending dict holds one entry per key (device, user), at most `max_pending`
before a flush starts; a failed flush keeps its entries (merged under newer values) and
retries on the next interval.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable
from contextlib import suppress
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class WriteBehind(Generic[K, V]):
    def __init__(
        self,
        write: Callable[[dict[K, V]], Awaitable[None]],
        *,
        name: str,
        interval_s: float = 2.0,
        max_pending: int = 1_000,
    ) -> None:
        self._write = write
        self._name = name
        self._interval = interval_s
        self._max_pending = max_pending
        self._pending: dict[K, V] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._flushing = asyncio.Lock()

    def put(self, key: K, value: V) -> None:
        """Remember the latest value for `key`; written on the next flush."""
        self._pending.pop(key, None)
        self._pending[key] = value
        if len(self._pending) >= self._max_pending:
            self._wake.set()

    def pending(self, key: K) -> V | None:
        """The value waiting to be written for `key`, if any (for readers that must see
        it before the flush)."""
        return self._pending.get(key)

    async def flush(self) -> None:
        """Write everything pending now (in one call)."""
        async with self._flushing:
            if not self._pending:
                return
            batch, self._pending = self._pending, {}
            try:
                await self._write(batch)
            except BaseException:
                # Keep what was not written; values that arrived since are newer.
                self._pending = {**batch, **self._pending}
                raise

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"write-behind-{self._name}")

    async def close(self) -> None:
        """Stop the task and write what is left (app shutdown)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task
        try:
            await self.flush()
        except Exception:
            log.exception("%s: could not write %d pending entries", self._name, len(self._pending))

    async def _run(self) -> None:
        while True:
            with suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._interval)
            self._wake.clear()
            try:
                await self.flush()
            except Exception:
                log.exception("%s: flush failed; retrying in %.0f s", self._name, self._interval)
