"""RateLimiter: take-or-refuse (`check`), look without taking (`peek`), take if it fits
(`record`), refill over time."""

from __future__ import annotations

import pytest

from homeserver.config import RateLimit
from homeserver.errors import MatrixError
from homeserver.ratelimit import RateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_check_takes_until_the_burst_then_refuses_with_retry_after() -> None:
    clock = Clock()
    limiter = RateLimiter(RateLimit(0.5, 2), clock)
    limiter.check("k")
    limiter.check("k")
    with pytest.raises(MatrixError) as info:
        limiter.check("k")
    assert info.value.status == 429 and info.value.errcode == "M_LIMIT_EXCEEDED"
    assert info.value.extra["retry_after_ms"] == 2000
    limiter.check("other")  # keys are independent
    clock.now += 2.0  # one token back at 0.5/s
    limiter.check("k")
    with pytest.raises(MatrixError):
        limiter.check("k")


def test_peek_never_takes_and_record_takes_only_what_fits() -> None:
    clock = Clock()
    limiter = RateLimiter(RateLimit(0.1, 2), clock)
    for _ in range(5):
        limiter.peek("k")  # looking costs nothing
    assert limiter.record("k") is True
    limiter.peek("k")
    assert limiter.record("k") is True
    with pytest.raises(MatrixError) as info:
        limiter.peek("k")
    assert info.value.extra["retry_after_ms"] == 10_000
    assert limiter.record("k") is False  # full: nothing taken, no exception
    clock.now += 10.0
    limiter.peek("k")
    assert limiter.record("k") is True


def test_unlimited_never_refuses() -> None:
    limiter = RateLimiter(RateLimit(None, 1), Clock())
    for _ in range(100):
        limiter.peek("k")
        limiter.check("k")
        assert limiter.record("k") is True


def test_charges_and_overrides_are_shared_between_two_processes_limiters() -> None:
    """Two processes' RateLimiters joined the way the bus joins them
    (replication/ratelimits.py): one budget for both, overrides included."""
    import asyncio

    from homeserver.config import RateLimitConfig
    from homeserver.ratelimit import RateLimiters
    from homeserver.replication.ratelimits import SharedLimits

    class Bus:
        def __init__(self) -> None:
            self.sent: list[dict] = []

        def publish(self, message: dict) -> None:
            self.sent.append(message)

        async def drained(self) -> None:
            self.sent.append({"k": "drained"})

    stored: dict[str, RateLimit] = {"@vip:x": RateLimit(0.0001, 1)}  # the database

    async def load_override(user_id: str) -> RateLimit | None:
        return stored.get(user_id)

    async def load_overrides() -> dict[str, RateLimit]:
        return dict(stored)

    config = RateLimitConfig(message=RateLimit(0.0001, 3))
    here, there = RateLimiters(config), RateLimiters(config, dict(stored))
    bus_here, bus_there = Bus(), Bus()
    shared_there = SharedLimits(there, bus_there, load_override, load_overrides)
    SharedLimits(here, bus_here, load_override, load_overrides)

    def deliver() -> None:
        handlers = shared_there.handlers()
        for message in bus_here.sent:
            result = handlers[message["k"]](message)
            if result is not None:
                asyncio.run(result)
        bus_here.sent.clear()

    here.check("message", "@a:x")
    here.check("message", "@a:x")
    here.check("message", "@vip:x")
    assert [m["key"] for m in bus_here.sent] == ["@a:x", "@a:x", "@vip:x"]
    deliver()
    there.check("message", "@a:x")  # the third of three
    with pytest.raises(MatrixError):
        there.check("message", "@a:x")
    with pytest.raises(MatrixError):  # the VIP's own limit (burst 1) was spent here
        there.check("message", "@vip:x")
    there.check("message", "@b:x")  # others untouched
    # An admin lifts @b's limit on this side: the other re-reads it from the database.
    stored["@b:x"] = RateLimit(None, 0)
    here.set_override("@b:x", stored["@b:x"])
    assert bus_here.sent == [{"k": "rlo", "u": "@b:x"}]
    deliver()
    for _ in range(5):
        there.check("message", "@b:x")
    assert bus_there.sent[-1]["key"] == "@b:x"  # charges still told, never an echo
    assert not any(m["k"] == "rlo" for m in bus_there.sent)
    # After a gap: every override re-read (@vip's was deleted meanwhile).
    del stored["@vip:x"]
    asyncio.run(shared_there.reload())
    there.check("message", "@vip:x")  # the configured limit again, a fresh bucket
    # A failure answered to a client (a wrong password) waits for its charge to be out.
    asyncio.run(there.settle())
    assert bus_there.sent[-1] == {"k": "drained"}
    # What a broken or hostile message carries is ignored, never raised.
    for bad in (
        {"k": "rl", "l": "message", "key": "@c:x", "c": 10**9},
        {"k": "rl", "l": "message", "key": "@c:x" * 200, "c": 1},
        {"k": "rl", "l": "no_such_limit", "key": "@c:x", "c": 1},
        {"k": "rl", "l": "message", "key": 5, "c": 1},
        {"k": "rl", "l": "message", "key": "@c:x", "c": True},
        {"k": "rl"},
    ):
        shared_there.charged_elsewhere(bad)
    for _ in range(3):
        there.check("message", "@c:x")


def test_a_charge_from_elsewhere_fills_the_bucket_at_most() -> None:
    clock = Clock()
    limiter = RateLimiter(RateLimit(1.0, 2), clock)
    limiter.charge_elsewhere("k", 5.0)
    with pytest.raises(MatrixError) as info:
        limiter.check("k")
    assert info.value.extra["retry_after_ms"] == 1000  # full, not five over
    clock.now += 1.0
    limiter.check("k")
