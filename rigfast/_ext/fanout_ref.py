"""The delivery loop, plain Python: the reference for the compiled ``fanout`` module.

``deliver`` appends one event's encoded frame to the outbox of every
recipient session and queues each session once for writing; the frame is
encoded at most once per wire kind (``encode(kind, session)`` is called lazily,
with the first recipient of that kind) and the same object is shared by all
recipients of that kind. Phoenix channels (kind 3) are keyed finer: one frame
per distinct ``wire`` value (serializer and topic name), since the topic is part
of the bytes.
``flush_slice`` writes up to ``n`` queued sessions; a session whose write
fails is aborted and the others go on.

Sessions derive from :class:`Recipient` (the fields the loop touches) and
have ``flush()`` and ``abort()``. ``outbox`` is None while nothing waits (an
idle connection keeps no list), else a list; ``flush()`` writes ``outbox`` to
``transport`` (SSE, WS) or does the session's own thing (long-polling).
"""

from __future__ import annotations

import logging
from typing import Any, Callable

log = logging.getLogger("rigfast.hub")


class Recipient:
    """What the delivery loop touches of a session (sessions derive from it)."""

    __slots__ = ("kind", "outbox", "dirty", "closed", "transport", "wire")


PHOENIX = 3


def deliver(slots: list, sessions: dict, encode: Callable[[int, Any], Any], touched) -> tuple[int, int, int, int]:
    """Fan one event out to ``slots``; returns the deliveries per kind (SSE, WS, long-polling, Phoenix)."""
    frames: list = [None, None, None]
    keyed: dict = {}
    counts = [0, 0, 0, 0]
    for slot in slots:
        s = sessions[slot]
        kind = s.kind
        if kind == PHOENIX:
            frame = keyed.get(s.wire)
            if frame is None:
                frame = keyed[s.wire] = encode(kind, s)
        else:
            frame = frames[kind]
            if frame is None:
                frame = frames[kind] = encode(kind, s)
        if s.outbox is None:
            s.outbox = [frame]
        else:
            s.outbox.append(frame)
        if not s.dirty:
            s.dirty = True
            touched.append(s)
        counts[kind] += 1
    return counts[0], counts[1], counts[2], counts[3]


def flush_slice(touched, n: int) -> None:
    """Write up to ``n`` sessions from the ``touched`` deque."""
    for _ in range(min(len(touched), n)):
        session = touched.popleft()
        session.dirty = False
        try:
            session.flush()
        except Exception:  # noqa: BLE001 - one broken session never stops the others
            log.exception("flush failed; closing session")
            session.abort()
