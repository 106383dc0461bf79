"""New-connection rate limit (MAX_CONNECTIONS_PER_MINUTE), per process, and the share of it
one client address may spend (RIGFAST_CLIENT_CONNECTION_SHARE).

A token bucket holding up to ``per_minute`` tokens and refilled at
``per_minute / 60`` per second: a burst of a full minute's allowance is
admitted at once, after which connections are admitted at the steady rate.
Over any 60 s window at most about ``2 * per_minute`` get through (a full
bucket plus a minute of refill); over longer spans the rate converges to
``per_minute``. O(1) time and memory, no timers.
"""

from __future__ import annotations

import ipaddress
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


def client_key(peer) -> str:
    """The address a client is limited by: its IPv4 address, or the /64 of an IPv6 one
    (one host commonly holds a whole /64). Unknown (e.g. a Unix socket): ""."""
    if not peer or not isinstance(peer, tuple):
        return ""
    host = peer[0]
    if ":" not in host:
        return host
    if host.startswith("::ffff:") and "." in host:
        return host[7:]
    try:
        return ipaddress.IPv6Address(host.split("%", 1)[0]).packed[:8].hex()
    except ValueError:
        return host


class ClientRateLimiter:
    """The same token bucket per client address, for the share of the connection rate one
    client may spend. Remembers at most ``max_clients`` addresses (least recently seen
    forgotten first: a forgotten client starts again with a full allowance), so the table
    is bounded however many addresses an attacker has."""

    __slots__ = ("per_minute", "_rate", "_clock", "_buckets", "max_clients", "rejected")

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic, max_clients: int = 65536):
        self.per_minute = int(per_minute)
        self._rate = self.per_minute / 60.0
        self._clock = clock
        self._buckets: dict[str, list[float]] = {}  # insertion order = least recently seen first
        self.max_clients = max_clients
        self.rejected = 0

    @property
    def enabled(self) -> bool:
        return self.per_minute > 0

    def __len__(self) -> int:
        return len(self._buckets)

    def _tokens(self, key: str, now: float) -> list[float]:
        b = self._buckets.pop(key, None)
        if b is None:
            if len(self._buckets) >= self.max_clients:
                del self._buckets[next(iter(self._buckets))]
            b = [float(self.per_minute), now]
        elif now > b[1]:
            b[0] = min(float(self.per_minute), b[0] + (now - b[1]) * self._rate)
            b[1] = now
        self._buckets[key] = b
        return b

    def allow(self, key: str) -> bool:
        if self.per_minute <= 0:
            return True
        b = self._tokens(key, self._clock())
        if b[0] >= 1.0:
            b[0] -= 1.0
            return True
        self.rejected += 1
        return False

    def retry_after_s(self, key: str) -> float:
        if self.per_minute <= 0:
            return 0.0
        b = self._tokens(key, self._clock())
        return 0.0 if b[0] >= 1.0 else (1.0 - b[0]) / self._rate
