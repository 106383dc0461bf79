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


class _Bucket:
    """A token bucket's state: its tokens and when they were last counted. The limiters below own
    the capacity and the rate; the arithmetic of refilling and taking is here, once."""

    __slots__ = ("tokens", "last")

    def __init__(self, tokens: float, last: float):
        self.tokens = tokens
        self.last = last

    def refill(self, now: float, cap: float, rate: float) -> None:
        if now > self.last:
            self.tokens = min(cap, self.tokens + (now - self.last) * rate)
            self.last = now

    def take(self, rate: float) -> float:
        """Take one token and return 0.0, or return the seconds until there is one (> 0)."""
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / rate

    def due_s(self, rate: float) -> float:
        """The seconds until there is a token (0.0: there is one now), taking nothing."""
        return 0.0 if self.tokens >= 1.0 else (1.0 - self.tokens) / rate


class ConnectionRateLimiter:
    """``allow()`` says whether one more connection may open now."""

    __slots__ = ("per_minute", "_rate", "_cap", "_bucket", "_clock", "rejected")

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic):
        self.per_minute = int(per_minute)
        self._rate = self.per_minute / 60.0
        self._cap = float(self.per_minute)
        self._clock = clock
        self._bucket = _Bucket(float(max(self.per_minute, 0)), clock())
        self.rejected = 0

    @property
    def enabled(self) -> bool:
        return self.per_minute > 0

    def wait_s(self) -> float:
        """Take one token and return 0.0; when there is none, count the refusal in ``rejected``
        and return the seconds until there will be one (> 0, for a Retry-After header)."""
        if self.per_minute <= 0:
            return 0.0
        b = self._bucket
        b.refill(self._clock(), self._cap, self._rate)
        wait = b.take(self._rate)
        if wait:
            self.rejected += 1
        return wait

    def allow(self) -> bool:
        """Take one token; False (and counted in ``rejected``) when there is none."""
        return self.wait_s() == 0.0

    def retry_after_s(self) -> float:
        """Seconds until ``allow()`` would succeed (0 when it would now); for a Retry-After header."""
        if self.per_minute <= 0:
            return 0.0
        b = self._bucket
        b.refill(self._clock(), self._cap, self._rate)
        return b.due_s(self._rate)


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

    __slots__ = ("per_minute", "_rate", "_cap", "_clock", "_buckets", "_newest", "max_clients", "rejected")

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic, max_clients: int = 65536):
        self.per_minute = int(per_minute)
        self._rate = self.per_minute / 60.0
        self._cap = float(self.per_minute)
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}  # insertion order = least recently seen first
        self._newest: str | None = None  # the key of the table's last entry
        self.max_clients = max_clients
        self.rejected = 0

    @property
    def enabled(self) -> bool:
        return self.per_minute > 0

    def __len__(self) -> int:
        return len(self._buckets)

    def _bucket(self, key: str) -> _Bucket:
        """The client's bucket, refilled to now and moved to the most recently seen end."""
        now = self._clock()
        buckets = self._buckets
        if key == self._newest:  # already the most recently seen: no need to move it
            b = buckets[key]
        else:
            b = buckets.pop(key, None)
            if b is None:
                if len(buckets) >= self.max_clients:
                    del buckets[next(iter(buckets))]
                b = _Bucket(self._cap, now)
            buckets[key] = b
            self._newest = key
        b.refill(now, self._cap, self._rate)
        return b

    def wait_s(self, key: str) -> float:
        """As :meth:`ConnectionRateLimiter.wait_s`, from the bucket of client ``key``."""
        if self.per_minute <= 0:
            return 0.0
        wait = self._bucket(key).take(self._rate)
        if wait:
            self.rejected += 1
        return wait

    def peer_wait_s(self, peer) -> float:
        """:meth:`wait_s` of the client at socket address ``peer`` (see :func:`client_key`)."""
        if self.per_minute <= 0:
            return 0.0
        return self.wait_s(client_key(peer))

    def allow(self, key: str) -> bool:
        return self.wait_s(key) == 0.0

    def retry_after_s(self, key: str) -> float:
        if self.per_minute <= 0:
            return 0.0
        return self._bucket(key).due_s(self._rate)
