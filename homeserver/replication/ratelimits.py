"""One rate-limit budget per deployment, not per process.

Requests for one user land on several processes: a user's sends go to the event
persister of each room, invites to the room's persister, uploads to any media worker.
With per-process buckets every process would grant the full `rc_*` budget, so a user
spread over N processes would get N times it. Each charge a process takes is published
on Redis (`rl`: limit name, key, cost; batched with the rest by the bus) and every
other process takes it from its own bucket too. Checks stay local and synchronous (no
Redis round trip on a send); what a burst can slip past is what two processes grant in
the same few milliseconds before hearing of each other.

An admin's per-user override (admin API, on the main) reaches the others the same way
(`rlo`), and a process that missed messages re-reads every override.

Bounds: a message's key is at most MAX_KEY_CHARS and its cost at most MAX_COST;
unknown limit names are ignored; the buckets are RateLimiter's (MAX_BUCKETS per limit).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from homeserver.config import RateLimit
from homeserver.ratelimit import RateLimiters

MAX_KEY_CHARS = 512  # user IDs are at most 255, IP addresses far less
MAX_COST = 100.0


class SharedLimits:
    """This process's RateLimiters joined to the deployment's: charges (`rl`) and an
    admin's per-user overrides (`rlo`: which user; each process re-reads the override
    from the database, where the admin API stored it before the message went out)."""

    def __init__(
        self,
        limiters: RateLimiters,
        bus: Any,
        load_override: Callable[[str], Awaitable[RateLimit | None]],
        load_overrides: Callable[[], Awaitable[dict[str, RateLimit]]],
    ) -> None:
        self._limiters = limiters
        self._bus = bus
        self._load_override = load_override
        self._load_overrides = load_overrides
        limiters.shared = self._publish_charge
        limiters.override_changed = lambda user_id: bus.publish({"k": "rlo", "u": user_id})
        limiters.propagated = bus.drained

    def handlers(self) -> dict[str, Callable[[dict[str, Any]], Awaitable[None] | None]]:
        return {"rl": self.charged_elsewhere, "rlo": self.override_changed_elsewhere}

    def _publish_charge(self, name: str, key: str, cost: float) -> None:
        if len(key) <= MAX_KEY_CHARS:
            self._bus.publish({"k": "rl", "l": name, "key": key, "c": cost})

    def charged_elsewhere(self, message: dict[str, Any]) -> None:
        name, key, cost = message.get("l"), message.get("key"), message.get("c")
        if (
            isinstance(name, str)
            and isinstance(key, str)
            and len(key) <= MAX_KEY_CHARS
            and isinstance(cost, int | float)
            and not isinstance(cost, bool)
            and 0 < cost <= MAX_COST
        ):
            self._limiters.charge_elsewhere(name, key, float(cost))

    async def override_changed_elsewhere(self, message: dict[str, Any]) -> None:
        user_id = message.get("u")
        if isinstance(user_id, str) and len(user_id) <= MAX_KEY_CHARS:
            limit = await self._load_override(user_id)
            self._limiters.set_override(user_id, limit, announce=False)

    async def reload(self) -> None:
        """After a gap in the bus: every override, from the database."""
        self._limiters.replace_overrides(await self._load_overrides())
