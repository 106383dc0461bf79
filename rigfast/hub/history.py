"""The resumption history: recent events for ``Last-Event-ID``, bounded three ways.

At most ``max_events`` events, none older than ``max_age_s``, and at most
``max_bytes`` of event JSON in all (the oldest go first; one event larger than
the whole budget is not kept). The bounds live here, not in the hub, so the
history keeps them wherever it is used (per worker today, per node later).

A resume is rare and its work is bounded: :meth:`replay` walks the kept events
from the newest back, without copying the history, and stops at the client's
last event or once ``budget`` bytes of matching events are collected; so one
connect never encodes or queues more than ``budget`` bytes, however large the
history or however old (or unknown) the id it brings.
"""

from __future__ import annotations

from collections import deque
from itertools import repeat
from operator import attrgetter
from typing import Callable

from rigfast.cloudevents import Event


_json = attrgetter("json")


class History:
    __slots__ = ("max_events", "max_age_s", "max_bytes", "bytes", "_items")

    def __init__(self, max_events: int = 10000, max_age_s: float = 300.0, max_bytes: int = 64 << 20):
        self.max_events = max(max_events, 0)
        self.max_age_s = max_age_s
        self.max_bytes = max(max_bytes, 0)  # 0: no byte limit
        self.bytes = 0
        self._items: deque[tuple[float, Event, int]] = deque()  # (when kept, event, its JSON size)

    @property
    def enabled(self) -> bool:
        return self.max_events > 0

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self):
        return (e for _, e, _ in self._items)

    def append(self, event: Event, now: float) -> None:
        size = len(event.json)
        max_bytes = self.max_bytes
        if max_bytes and size > max_bytes:
            return  # larger than the whole history: never resumable
        items = self._items
        items.append((now, event, size))
        self.bytes += size
        if len(items) > self.max_events:  # full (the usual state once running): the oldest goes, no _trim call
            self.bytes -= items.popleft()[2]
        if max_bytes and self.bytes > max_bytes:
            self._trim()

    def extend(self, events: list[Event], now: float) -> None:
        """:meth:`append` for a batch, the per-event work done in C (the node reader keeps every event)."""
        sizes = list(map(len, map(_json, events)))
        max_bytes = self.max_bytes
        if max_bytes and max(sizes, default=0) > max_bytes:
            for e in events:
                self.append(e, now)
            return
        items = self._items
        items.extend(zip(repeat(now), events, sizes))
        self.bytes += sum(sizes)
        excess = len(items) - self.max_events
        if excess > 0:
            popleft = items.popleft
            self.bytes -= sum([popleft()[2] for _ in range(excess)])
        if max_bytes and self.bytes > max_bytes:
            self._trim()

    def _trim(self) -> None:
        items, max_bytes = self._items, self.max_bytes
        while items and (len(items) > self.max_events or (max_bytes and self.bytes > max_bytes)):
            self.bytes -= items.popleft()[2]

    def expire(self, now: float) -> None:
        items, cutoff = self._items, now - self.max_age_s
        while items and items[0][0] < cutoff:
            self.bytes -= items.popleft()[2]

    def replay(
        self,
        last_event_id: str,
        event_id: Callable[[Event], str],
        wanted: Callable[[Event], bool],
        budget: int = 0,
    ) -> tuple[bool, list[Event]]:
        """(gap, events in order): the kept events after ``last_event_id`` for which ``wanted`` is true.

        ``gap`` is True when the history does not reach back to that event, or
        when the events missed since it come to more than ``budget`` bytes (0: no
        limit): then the newest that fit are returned and the client knows it
        missed some.
        """
        out: list[Event] = []
        used = 0
        for _, e, _ in reversed(self._items):  # no copy; the loop is never resumed elsewhere, so no mutation can interleave
            if event_id(e) == last_event_id:
                out.reverse()
                return False, out
            if wanted(e):
                used += len(e.json)
                if budget and used > budget:
                    out.reverse()
                    return True, out
                out.append(e)
        out.reverse()
        return True, out

    def clear(self) -> None:
        self._items.clear()
        self.bytes = 0
