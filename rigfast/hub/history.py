"""The resumption history: recent events for ``Last-Event-ID``, bounded three ways.

At most ``max_events`` events, none older than ``max_age_s``, and at most
``max_bytes`` of event JSON in all (the oldest go first; one event larger than
the whole budget is not kept). The bounds live here, not in the hub, so the
history keeps them wherever it is used (a worker's hub, the node's reader).

Events are kept as they come, one batch per entry (the events handed over in
one call, with the time they were kept and the running total of their JSON
sizes, ``json_ends``, made in one compiled pass): keeping a batch, and
dropping whole batches at the old end, cost nothing per event; only the
oldest batch may be cut part-way (the bounds are exact: what is kept is the
longest run of newest events within all three), its dropped events released
at once.

A resume is rare and its work is bounded: :meth:`replay` walks the kept events
from the newest back, without copying the history, and stops at the client's
last event or once ``budget`` bytes of matching events are collected; so one
connect never encodes or queues more than ``budget`` bytes, however large the
history or however old (or unknown) the id it brings.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import deque
from itertools import chain, islice
from typing import Callable, Iterable, Iterator

from rigfast._ext import json_ends
from rigfast.cloudevents import Event


class History:
    __slots__ = ("max_events", "max_age_s", "max_bytes", "bytes", "_batches", "_head", "_count")

    def __init__(self, max_events: int = 10000, max_age_s: float = 300.0, max_bytes: int = 64 << 20):
        self.max_events = max(max_events, 0)
        self.max_age_s = max_age_s
        self.max_bytes = max(max_bytes, 0)  # 0: no byte limit
        self.bytes = 0
        # (when kept, events, json_ends of the events), oldest first; the oldest batch's events before
        # _head are dropped (None). _count: the events kept.
        self._batches: deque[tuple[float, list, Iterable[int]]] = deque()
        self._head = 0
        self._count = 0

    @property
    def enabled(self) -> bool:
        return self.max_events > 0

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[Event]:
        return chain.from_iterable(islice(events, self._head if k == 0 else 0, None)
                                   for k, (_, events, _) in enumerate(self._batches))

    def append(self, event: Event, now: float) -> None:
        """:meth:`extend` for one event (a flush of one: the usual addressed event), without its set-up."""
        if not self.max_events:
            return
        size = len(event.json)
        max_bytes = self.max_bytes
        if max_bytes and size > max_bytes:
            return  # larger than the whole history: never kept
        batches = self._batches
        batches.append((now, [event], (0, size)))
        self._count += 1
        self.bytes += size
        if self._count > self.max_events and self._head == len(batches[0][1]) - 1:
            self._drop_oldest()  # full (the usual state once running): the oldest batch's last event goes
        if self._count > self.max_events or (max_bytes and self.bytes > max_bytes):
            self._trim()

    def extend(self, events: list[Event], now: float) -> None:
        """Keep ``events`` (in order, all kept at ``now``), then drop the oldest beyond the bounds."""
        if len(events) == 1:  # a flush of one (the usual addressed event): without the batch set-up
            self.append(events[0], now)
            return
        if not events or not self.max_events:
            return
        events = list(events)  # ours: dropped events are released in it
        ends = json_ends(events)
        max_bytes = self.max_bytes
        if max_bytes and ends[-1] > max_bytes:  # some event may be larger than the whole history: never kept
            fits = [e for k, e in enumerate(events) if ends[k + 1] - ends[k] <= max_bytes]
            if len(fits) != len(events):
                if not fits:
                    return
                events, ends = fits, json_ends(fits)
        self._batches.append((now, events, ends))
        self._count += len(events)
        self.bytes += ends[-1]
        if self._count > self.max_events or (max_bytes and self.bytes > max_bytes):
            self._trim()

    def _trim(self) -> None:
        batches, max_bytes = self._batches, self.max_bytes
        while batches:
            over = self._count - self.max_events
            excess = self.bytes - max_bytes if max_bytes else 0
            if over <= 0 and excess <= 0:
                return
            _, events, ends = batches[0]
            head = self._head
            cut = head + max(over, 0)
            if excess > 0:  # the fewest oldest events whose bytes cover the excess
                cut = max(cut, bisect_left(ends, ends[head] + excess, head))
            if cut >= len(events):
                self._drop_oldest()
                continue
            events[head:cut] = [None] * (cut - head)
            self._head = cut
            self._count -= cut - head
            self.bytes -= ends[cut] - ends[head]

    def _drop_oldest(self) -> None:
        _, events, ends = self._batches.popleft()
        self._count -= len(events) - self._head
        self.bytes -= ends[-1] - ends[self._head]
        self._head = 0

    def expire(self, now: float) -> None:
        batches, cutoff = self._batches, now - self.max_age_s
        while batches and batches[0][0] < cutoff:
            self._drop_oldest()

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
        batches = self._batches
        oldest = len(batches) - 1
        # newest first, no copy; the loop is never resumed elsewhere, so no mutation can interleave
        for k, (_, events, _) in enumerate(reversed(batches)):
            for e in islice(reversed(events), len(events) - (self._head if k == oldest else 0)):
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
        self._batches.clear()
        self._head = 0
        self._count = 0
        self.bytes = 0
