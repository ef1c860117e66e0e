"""Token-bucket rate limiting like Synapse's `rc_*` settings.

Each limiter holds one bucket per key (user ID, IP, room): `burst_count` actions at
once, refilled at `per_second`. A refused action raises 429 M_LIMIT_EXCEEDED with
`retry_after_ms`. Buckets that have refilled completely are dropped, so memory stays
bounded by recently active keys.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from homeserver.config import RateLimit, RateLimitConfig
from homeserver.errors import limit_exceeded

MAX_BUCKETS = 100_000


class RateLimiter:
    def __init__(self, limit: RateLimit, clock: Callable[[], float] = time.monotonic) -> None:
        self._rate = limit.per_second
        self._burst = max(1, limit.burst_count)
        self._clock = clock
        # key -> (tokens used, time of last update)
        self._buckets: dict[str, tuple[float, float]] = {}

    @property
    def unlimited(self) -> bool:
        return self._rate is None

    def check(self, key: str, cost: float = 1.0) -> None:
        """Take `cost` from `key`'s bucket or raise M_LIMIT_EXCEEDED (taking nothing)."""
        self.peek(key, cost)
        self.record(key, cost)

    def peek(self, key: str, cost: float = 1.0) -> None:
        """Raise M_LIMIT_EXCEEDED if `cost` more would not fit in `key`'s bucket; take
        nothing either way. For limits charged only when something goes wrong (failed
        logins): the check comes first, the charge after the failure (`record`)."""
        if self._rate is None:
            return
        now = self._clock()
        used = self._used(key, now)
        if used + cost > self._burst:
            wait_s = (used + cost - self._burst) / self._rate if self._rate > 0 else 3600
            raise limit_exceeded(max(1, math.ceil(wait_s * 1000)))

    def record(self, key: str, cost: float = 1.0) -> bool:
        """Take `cost` from `key`'s bucket if it fits; return whether it did."""
        if self._rate is None:
            return True
        now = self._clock()
        used = self._used(key, now)
        if used + cost > self._burst:
            return False
        self._buckets[key] = (used + cost, now)
        if len(self._buckets) > MAX_BUCKETS:
            self._prune(now)
        return True

    def _used(self, key: str, now: float) -> float:
        used, last = self._buckets.get(key, (0.0, now))
        return max(0.0, used - (now - last) * (self._rate or 0.0))

    def _prune(self, now: float) -> None:
        rate = self._rate or 0.0
        self._buckets = {
            k: (u, t) for k, (u, t) in self._buckets.items() if u - (now - t) * rate > 0
        }


class RateLimiters:
    """One limiter per `rc_*` setting, built once per app."""

    def __init__(self, config: RateLimitConfig) -> None:
        self._config = config
        self._limiters: dict[str, RateLimiter] = {}

    def get(self, name: str) -> RateLimiter:
        limiter = self._limiters.get(name)
        if limiter is None:
            limiter = RateLimiter(self._config.get(name))
            self._limiters[name] = limiter
        return limiter

    def check(self, name: str, key: str) -> None:
        self.get(name).check(key)
