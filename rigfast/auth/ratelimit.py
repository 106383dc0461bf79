"""New-connection rate limit (MAX_CONNECTIONS_PER_MINUTE), per process.

A token bucket holding up to ``per_minute`` tokens and refilled at
``per_minute / 60`` per second: a burst of a full minute's allowance is
admitted at once, after which connections are admitted at the steady rate.
Over any 60 s window at most about ``2 * per_minute`` get through (a full
bucket plus a minute of refill); over longer spans the rate converges to
``per_minute``. O(1) time and memory, no timers.
"""

from __future__ import annotations

import time
from typing import Callable


class ConnectionRateLimiter:
    """``allow()`` says whether one more connection may open now."""

    __slots__ = ("per_minute", "_rate", "_tokens", "_last", "_clock", "rejected")

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic):
        self.per_minute = int(per_minute)
        self._rate = self.per_minute / 60.0
        self._clock = clock
        self._tokens = float(max(self.per_minute, 0))
        self._last = clock()
        self.rejected = 0

    @property
    def enabled(self) -> bool:
        return self.per_minute > 0

    def _refill(self) -> float:
        now = self._clock()
        elapsed = now - self._last
        self._last = now
        if elapsed > 0:
            self._tokens = min(float(self.per_minute), self._tokens + elapsed * self._rate)
        return self._tokens

    def allow(self) -> bool:
        """Take one token; False (and counted in ``rejected``) when there is none."""
        if self.per_minute <= 0:
            return True
        if self._refill() >= 1.0:
            self._tokens -= 1.0
            return True
        self.rejected += 1
        return False

    def retry_after_s(self) -> float:
        """Seconds until ``allow()`` would succeed (0 when it would now); for a Retry-After header."""
        if self.per_minute <= 0:
            return 0.0
        tokens = self._refill()
        if tokens >= 1.0:
            return 0.0
        return (1.0 - tokens) / self._rate
