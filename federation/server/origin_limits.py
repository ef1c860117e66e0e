"""Per-origin limits on inbound federation requests (Synapse's `rc_federation`).

Another server, hostile or broken, can send requests as fast as it likes: each holds a
connection, memory for its body, and work (a /send transaction's PDUs, a /backfill's
reads). Synapse's scheme, with its defaults, per authenticated origin:
- at most `concurrent` (3) of its requests are processed at once; the rest wait;
- past `reject_limit` (50) requests processing or waiting, a new one is refused at once
  with 429 M_LIMIT_EXCEEDED;
- past `sleep_limit` (10) requests in `window_size` (1 s), each further one first
  waits `sleep_delay` (500 ms): a flood is slowed before it fills the queue.
Only authenticated requests count (the origin is the verified signer), so a stranger
cannot spend another server's allowance. Memory: an entry per origin with requests in
the last window or in flight; idle entries are swept once more than MAX_ORIGINS exist.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from homeserver.config.model import FederationRateLimit
from homeserver.errors import limit_exceeded

MAX_ORIGINS = 10_000


@dataclass
class _Origin:
    slots: asyncio.Semaphore
    in_flight: int = 0  # processing or waiting for a slot
    # The latest request times (as many as the sleep limit needs: past it they wait).
    recent: deque[float] = field(default_factory=deque)


class OriginLimiter:
    def __init__(self, limits: FederationRateLimit) -> None:
        self._limits = limits
        self._origins: dict[str, _Origin] = {}

    @asynccontextmanager
    async def hold(self, origin: str) -> AsyncIterator[None]:
        """Around one request of `origin`: wait for its turn (or be refused)."""
        limits = self._limits
        state = self._origins.get(origin)
        if state is None:
            if len(self._origins) >= MAX_ORIGINS:
                self._sweep()
            state = self._origins[origin] = _Origin(
                asyncio.Semaphore(limits.concurrent), recent=deque(maxlen=limits.sleep_limit + 1)
            )
        if state.in_flight >= limits.reject_limit:
            raise limit_exceeded(limits.sleep_delay_ms or 1000)
        state.in_flight += 1
        try:
            now = time.monotonic()
            window = limits.window_size_ms / 1000
            while state.recent and state.recent[0] <= now - window:
                state.recent.popleft()
            state.recent.append(now)
            if len(state.recent) > limits.sleep_limit:
                await asyncio.sleep(limits.sleep_delay_ms / 1000)
            async with state.slots:
                yield
        finally:
            state.in_flight -= 1

    def _sweep(self) -> None:
        """Forget origins with nothing in flight and nothing in the current window."""
        cutoff = time.monotonic() - self._limits.window_size_ms / 1000
        for origin, state in list(self._origins.items()):
            if state.in_flight == 0 and (not state.recent or state.recent[-1] <= cutoff):
                del self._origins[origin]
