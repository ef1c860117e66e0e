"""Token-bucket rate limiting like Synapse's `rc_*` settings.

Each limiter holds one bucket per key (user ID, IP, room): `burst_count` actions at
once, refilled at `per_second`. A refused action raises 429 M_LIMIT_EXCEEDED with
`retry_after_ms`. Buckets that have refilled completely are dropped, so memory stays
bounded by recently active keys.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Awaitable, Callable

from homeserver.config import UNLIMITED, RateLimit, RateLimitConfig
from homeserver.errors import limit_exceeded
from homeserver.storage.admin_users import RateLimitOverride

MAX_BUCKETS = 100_000
# Every limit RateLimiters.get knows (RateLimitConfig's fields and the derived one).
LIMIT_NAMES = frozenset(
    {f.name for f in dataclasses.fields(RateLimitConfig) if f.type in ("RateLimit", RateLimit)}
    | {"registration_sessions"}
)


class RateLimiter:
    def __init__(
        self,
        limit: RateLimit,
        clock: Callable[[], float] = time.monotonic,
        on_record: Callable[[str, float], None] | None = None,
    ) -> None:
        self._rate = limit.per_second
        self._burst = max(1, limit.burst_count)
        self._clock = clock
        # Told of every charge taken here (the deployment's other processes take it too).
        self._on_record = on_record
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
        if self._on_record is not None:
            self._on_record(key, cost)
        return True

    def charge(self, key: str, cost: float) -> None:
        """Take `cost` after the fact, however full the bucket (at most to full): for
        what is known only once done (the bytes a download took)."""
        if self._rate is None:
            return
        self.charge_elsewhere(key, cost)
        if self._on_record is not None:
            self._on_record(key, cost)

    def charge_elsewhere(self, key: str, cost: float) -> None:
        """Another process of the deployment took `cost` from `key`'s bucket: take it
        here too, however full the bucket (at most to full: a burst that slipped past
        both processes at once is not charged twice over)."""
        if self._rate is None:
            return
        now = self._clock()
        self._buckets[key] = (min(float(self._burst), self._used(key, now) + cost), now)
        if len(self._buckets) > MAX_BUCKETS:
            self._prune(now)

    def _used(self, key: str, now: float) -> float:
        used, last = self._buckets.get(key, (0.0, now))
        return max(0.0, used - (now - last) * (self._rate or 0.0))

    def _prune(self, now: float) -> None:
        rate = self._rate or 0.0
        self._buckets = {
            k: (u, t) for k, (u, t) in self._buckets.items() if u - (now - t) * rate > 0
        }


# Limits keyed by user ID that an admin's per-user override replaces (as Synapse's
# ratelimit_override applies to a requester's actions).
USER_KEYED = frozenset({"message", "room_creation", "presence", "reports"})


class RateLimiters:
    """One limiter per `rc_*` setting, built once per app.

    `overrides` (user ID -> limit; an unlimited one means "never limited") replace the
    USER_KEYED limits for those users: the admin API's override_ratelimit.
    """

    def __init__(
        self,
        config: RateLimitConfig,
        overrides: dict[str, RateLimit] | None = None,
        exempt: Callable[[str], bool] | None = None,
    ) -> None:
        # Users never limited on USER_KEYED limits (appservice users with
        # rate_limited: false).
        self._exempt = exempt
        self._config = config
        self._limiters: dict[str, RateLimiter] = {}
        self._overrides: dict[str, RateLimit] = dict(overrides or {})
        self._override_limiters: dict[tuple[str, str], RateLimiter] = {}
        # With workers: every charge taken here, told to the deployment's other
        # processes (replication/ratelimits.py), so that a user's sends routed to
        # several event persisters share one budget.
        self.shared: Callable[[str, str, float], None] | None = None
        # With workers: an admin changed a user's override here (the others re-read it).
        self.override_changed: Callable[[str], None] | None = None
        # With workers: until the charges taken here are on their way to the others.
        self.propagated: Callable[[], Awaitable[None]] | None = None

    async def settle(self) -> None:
        """Wait until this process's charges reach the deployment's other processes:
        for a failure answered to a client who may try again at once on another
        process (a wrong password), so that the next attempt is charged for it."""
        if self.propagated is not None:
            await self.propagated()

    def get(self, name: str) -> RateLimiter:
        limiter = self._limiters.get(name)
        if limiter is None:
            limiter = RateLimiter(self._config.get(name), on_record=self._sharing(name))
            self._limiters[name] = limiter
        return limiter

    def _sharing(self, name: str) -> Callable[[str, float], None]:
        def share(key: str, cost: float) -> None:
            if self.shared is not None:
                self.shared(name, key, cost)

        return share

    def charge_elsewhere(self, name: str, key: str, cost: float) -> None:
        """Another process took `cost` from limit `name` for `key` (unknown names are
        ignored: a newer process may know limits this one does not)."""
        if name not in LIMIT_NAMES:
            return
        override = self._overrides.get(key) if name in USER_KEYED else None
        if override is None:
            self.get(name).charge_elsewhere(key, cost)
        else:
            self._override_limiter(name, key, override).charge_elsewhere(key, cost)

    def _override_limiter(self, name: str, key: str, override: RateLimit) -> RateLimiter:
        limiter = self._override_limiters.get((name, key))
        if limiter is None:
            limiter = RateLimiter(override, on_record=self._sharing(name))
            self._override_limiters[(name, key)] = limiter
        return limiter

    def check(self, name: str, key: str) -> None:
        if name in USER_KEYED and self._exempt is not None and self._exempt(key):
            return
        override = self._overrides.get(key) if name in USER_KEYED else None
        if override is None:
            self.get(name).check(key)
            return
        self._override_limiter(name, key, override).check(key)

    def set_override(self, user_id: str, limit: RateLimit | None, *, announce: bool = True) -> None:
        """Give `user_id` its own limit (None: back to the configured one); `announce`:
        tell the deployment's other processes (an admin's change, not one heard of)."""
        for name in USER_KEYED:
            self._override_limiters.pop((name, user_id), None)
        if limit is None:
            self._overrides.pop(user_id, None)
        else:
            self._overrides[user_id] = limit
        if announce and self.override_changed is not None:
            self.override_changed(user_id)

    def replace_overrides(self, overrides: dict[str, RateLimit]) -> None:
        """Every override at once (a process that may have missed changes re-read them)."""
        for user_id in set(self._overrides) - set(overrides):
            self.set_override(user_id, None, announce=False)
        for user_id, limit in overrides.items():
            if self._overrides.get(user_id) != limit:
                self.set_override(user_id, limit, announce=False)


def check_invite(
    limiters: RateLimiters, room_id: str, invitee: str, inviter: str | None = None
) -> None:
    """rc_invites, as Synapse applies it: per room, per invited user and (for our own
    users' invites) per inviter. Every bucket is checked before any is charged, so a
    refused invite costs nothing."""
    checks = [("invites_per_room", room_id), ("invites_per_user", invitee)]
    if inviter is not None:
        checks.append(("invites_per_issuer", inviter))
    for name, key in checks:
        limiters.get(name).peek(key)
    for name, key in checks:
        limiters.get(name).record(key)


def override_limit(override: RateLimitOverride) -> RateLimit:
    """An admin's per-user override as a limit; Synapse's semantics: 0 messages per
    second means "never limited"."""
    if override.messages_per_second <= 0:
        return UNLIMITED
    return RateLimit(float(override.messages_per_second), max(1, override.burst_count))
