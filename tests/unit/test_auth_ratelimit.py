"""New-connection rate limiter (rigfast.auth.ratelimit)."""

from __future__ import annotations

import pytest

from rigfast.auth.ratelimit import ConnectionRateLimiter


class Clock:
    def __init__(self, t: float = 500.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_burst_then_refused():
    """A full minute's allowance is admitted at once, the next connection is refused."""
    rl = ConnectionRateLimiter(60, clock=Clock())
    assert all(rl.allow() for _ in range(60))
    assert not rl.allow()
    assert rl.rejected == 1


def test_refills_at_steady_rate():
    """After the burst, one connection per 60/per_minute seconds is admitted."""
    clock = Clock()
    rl = ConnectionRateLimiter(60, clock=clock)
    for _ in range(60):
        rl.allow()
    clock.t += 0.5
    assert not rl.allow()
    assert rl.retry_after_s() == pytest.approx(0.5)
    clock.t += 0.5
    assert rl.allow()
    assert not rl.allow()


def test_bucket_caps_at_per_minute():
    """A long idle period does not bank more than one minute's allowance."""
    clock = Clock()
    rl = ConnectionRateLimiter(10, clock=clock)
    clock.t += 3600
    assert sum(rl.allow() for _ in range(20)) == 10


def test_long_run_rate():
    """Over ten minutes of constant demand, about per_minute per minute get through (plus the first burst)."""
    clock = Clock()
    rl = ConnectionRateLimiter(120, clock=clock)
    admitted = 0
    for _ in range(600 * 10):
        clock.t += 0.1
        admitted += rl.allow()
    assert 120 * 10 <= admitted <= 120 * 10 + 120


@pytest.mark.parametrize("per_minute", [0, -5])
def test_disabled(per_minute):
    """Zero or a negative limit disables limiting."""
    rl = ConnectionRateLimiter(per_minute, clock=Clock())
    assert not rl.enabled
    assert all(rl.allow() for _ in range(10000))
    assert rl.retry_after_s() == 0
