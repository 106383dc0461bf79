"""The session blacklist: session ids refused until their ban runs out.

Entries expire lazily (a lookup of an expired id removes it) and in bulk
through ``purge()``, which pops a heap ordered by expiry, so its cost is in
the number of entries that expired, not the size of the list. Times come
from a monotonic clock; ``entries()`` reports remaining validity in seconds
so that another process or node can replay them against its own clock.

Listeners registered with ``on_add`` run synchronously on every ``add`` (a
re-add too), so the hub can end live connections of that session.
"""

from __future__ import annotations

import heapq
import logging
import math
import time
from typing import Callable

from rigfast import metrics

log = logging.getLogger(__name__)

Listener = Callable[[str], None]


class Blacklist:
    """Session ids, each with an expiry on a monotonic clock."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._expiry: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []
        self._listeners: list[Listener] = []

    def add(self, session_id: str, validity_s: float) -> None:
        """Blacklist ``session_id`` for ``validity_s`` seconds from now.

        Re-adding extends the ban when the new expiry is later; it never
        shortens one. Listeners are called either way.
        """
        if not isinstance(session_id, str) or not session_id:
            raise ValueError("session id must be a non-empty string")
        if isinstance(validity_s, bool) or not isinstance(validity_s, (int, float)):
            raise ValueError("validity must be a number of seconds")
        if not math.isfinite(validity_s) or validity_s <= 0:
            raise ValueError("validity must be a positive, finite number of seconds")
        expiry = self._clock() + validity_s
        old = self._expiry.get(session_id)
        if old is None:
            metrics.BLACKLIST_ADDED.inc()
        if old is None or expiry > old:
            self._expiry[session_id] = expiry
            heapq.heappush(self._heap, (expiry, session_id))
        self._compact_heap()
        for fn in tuple(self._listeners):
            try:
                fn(session_id)
            except Exception:
                log.exception("blacklist listener %r failed for session %r", fn, session_id)

    def contains(self, session_id: str) -> bool:
        """True while ``session_id`` is blacklisted."""
        expiry = self._expiry.get(session_id)
        if expiry is None:
            return False
        if self._clock() >= expiry:
            del self._expiry[session_id]
            return False
        return True

    __contains__ = contains

    def expires_in(self, session_id: str) -> float | None:
        """Seconds left on the ban of ``session_id``, None when not blacklisted."""
        if not self.contains(session_id):
            return None
        return self._expiry[session_id] - self._clock()

    def remove(self, session_id: str) -> bool:
        """Lift a ban early; True if there was one."""
        return self._expiry.pop(session_id, None) is not None

    def purge(self) -> int:
        """Drop expired entries; returns how many went. Cheap enough for a periodic timer."""
        now = self._clock()
        heap = self._heap
        expiry_of = self._expiry
        dropped = 0
        while heap and heap[0][0] <= now:
            expiry, sid = heapq.heappop(heap)
            # The heap may hold stale pairs (a ban since extended, or already
            # removed lazily); only the pair matching the live expiry counts.
            if expiry_of.get(sid) == expiry:
                del expiry_of[sid]
                dropped += 1
        return dropped

    def _compact_heap(self) -> None:
        # Re-adds and lazy removals leave stale heap pairs; rebuild when they dominate.
        if len(self._heap) > 64 and len(self._heap) > 2 * len(self._expiry):
            self._heap = [(e, s) for s, e in self._expiry.items()]
            heapq.heapify(self._heap)

    def __len__(self) -> int:
        self.purge()
        return len(self._expiry)

    def entries(self) -> list[tuple[str, float]]:
        """Live entries as ``(session_id, seconds_left)``, for replication to other processes."""
        now = self._clock()
        self.purge()
        return [(sid, exp - now) for sid, exp in self._expiry.items() if exp > now]

    def on_add(self, fn: Listener) -> Listener:
        """Call ``fn(session_id)`` on every add; returns ``fn`` (usable as a decorator)."""
        self._listeners.append(fn)
        return fn

    def remove_listener(self, fn: Listener) -> None:
        try:
            self._listeners.remove(fn)
        except ValueError:
            pass
