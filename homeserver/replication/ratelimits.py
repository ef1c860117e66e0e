"""One rate-limit budget per deployment, not per process.

Requests for one user land on several processes: a user's sends go to the event
persister of each room, invites to the room's persister, uploads to any media worker.
With per-process buckets every process would grant the full `rc_*` budget, so a user
spread over N processes would get N times it. Each charge a process takes is published
on Redis (`rl`: limit name, key, cost; batched with the rest by the bus) and every
other process takes it from its own bucket too. Checks stay local and synchronous (no
Redis round trip on a send); what a burst can slip past is what two processes grant in
the same few milliseconds before hearing of each other.

Bounds: a message's key is at most MAX_KEY_CHARS and its cost at most one bucket;
unknown limit names are ignored; the buckets are RateLimiter's (MAX_BUCKETS per limit).
"""

from __future__ import annotations

from typing import Any

from homeserver.ratelimit import RateLimiters

MAX_KEY_CHARS = 512  # user IDs are at most 255, IP addresses far less
MAX_COST = 100.0


def share_charges(limiters: RateLimiters, bus: Any) -> Any:
    """Publish this process's charges; return the handler for the others' (`rl`)."""

    def publish(name: str, key: str, cost: float) -> None:
        if len(key) <= MAX_KEY_CHARS:
            bus.publish({"k": "rl", "l": name, "key": key, "c": cost})

    limiters.shared = publish

    def charged_elsewhere(message: dict[str, Any]) -> None:
        name, key, cost = message.get("l"), message.get("key"), message.get("c")
        if (
            isinstance(name, str)
            and isinstance(key, str)
            and len(key) <= MAX_KEY_CHARS
            and isinstance(cost, int | float)
            and not isinstance(cost, bool)
            and 0 < cost <= MAX_COST
        ):
            limiters.charge_elsewhere(name, key, float(cost))

    return charged_elsewhere
