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
