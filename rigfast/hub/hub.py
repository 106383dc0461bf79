"""The hub: who gets which event.

How this works: every frontend session has a small integer slot. The
subscription index maps events to slots. Events from any source enter
:meth:`Hub.publish` / :meth:`Hub.publish_batch`, which only append to a
pending list and, if none is scheduled yet, schedule one :meth:`_flush` with
``call_soon``. So the fan-out runs after the current batch of I/O callbacks:
an idle gateway delivers at once, a busy one fans out many events in one go
and each touched connection gets one write however many events it received.

Per event: the field values the index wants are extracted once, the index
names the recipients, the bytes are encoded once per wire kind (SSE, WS,
long-poll JSON; Phoenix pushes once per serializer and topic name) and the
same bytes object is appended to every recipient's outbox. Sessions know
nothing of each other; a failing socket only ends its own session.
"""

from __future__ import annotations

import asyncio
import logging
import time
from bisect import bisect_left
from collections import deque
from itertools import repeat
from random import getrandbits
from time import monotonic
from typing import Any, Callable, Iterable

from rigfast import metrics
from rigfast._ext import (BUILD, RecordEvent, SubscriptionIndex, deliver, encode_sse, encode_ws_text, flush_slice,
                          scan_extract)
from rigfast.cloudevents import Event, make_event
from rigfast.hub.history import History
from rigfast.subscriptions import Extractors, Subscription, json_value_key

log = logging.getLogger("rigfast.hub")

SSE, WS, LONGPOLL, PHOENIX = 0, 1, 2, 3
KIND_NAMES = ("sse", "ws", "longpolling", "phoenix")

# Sessions written per loop iteration. Between slices the loop reads new
# requests and events; those land in the outboxes of sessions still waiting
# for their write, so under load one write carries several events per
# connection (bench: peerbench fanout_sse, server CPU us/delivery). 64 rather
# than 256 (2026-12-07): at max rate the publisher gets in 4x as often per
# pass over the subscribers, so more events share each write; at a fixed low
# rate one pass is 4x the loop iterations, a few us per event (docs/targets.md).
FLUSH_SLICE = 64

def _nothing(event: Event) -> bool:
    return False


_NO_FIELDS: dict = {}  # match() arguments for types without constrained subscriptions (never mutated)


def count(counter: metrics.Counter, n: int, labels: tuple[str, ...]) -> None:
    """``counter.inc(n, *labels)``, added in place when the counter already has these labels (the
    usual case: no call into the metrics module, which is not compiled)."""
    try:
        counter.values[labels] += n
    except KeyError:
        counter.inc(n, *labels)


def event_keys(extractors: Extractors, event: Event) -> dict:
    """The extractor field values (value keys) of ``event``'s type, found once and kept on the event:
    in the record bytes for a scanned Kafka record whose JSON nobody decoded, else in its object."""
    keys = event.keys
    if keys is None:
        if type(event) is RecordEvent:
            keys = scan_extract(event.json, extractors.paths(event.type), json_value_key)
        else:
            keys = extractors.extract(event.type, event.obj)
        event.keys = keys
    return keys


def recipients(index, extractors: Extractors, event: Event) -> list[int]:
    """The slots of ``index`` that want ``event``; field values are looked up only for types some
    subscription constrains."""
    etype = event.type
    return index.match(etype, event_keys(extractors, event) if index.wanted(etype) else _NO_FIELDS)


class _Frames:
    """The frames of the event being fanned out, asked for by the delivery loop per wire kind: one
    object per hub, its ``event`` set per event (no closure made per event)."""

    __slots__ = ("hub", "event")

    def __init__(self, hub: "Hub"):
        self.hub = hub
        self.event = None

    def __call__(self, kind: int, session) -> Any:
        if kind == PHOENIX:
            return session.push_frame(self.event)
        return self.hub.encode(kind, self.event)


class Hub:
    def __init__(
        self,
        extractors: Extractors,
        loop: asyncio.AbstractEventLoop | None = None,
        history_size: int = 10000,
        history_age_s: float = 300.0,
        history_bytes: int = 64 << 20,
        replay_max_bytes: int = 512 << 10,
    ):
        self.extractors = extractors
        self.loop = loop or asyncio.get_event_loop()
        self.index = SubscriptionIndex()
        self.sessions: dict[int, Any] = {}
        self.by_token: dict[str, Any] = {}
        self.counts = [0, 0, 0, 0]
        self._next_slot = 1
        self._pending: list[tuple[Event, str]] = []
        self._scheduled = False
        # delivery latency: when the oldest pending event came; (that time, matched events by
        # source) of fanned-out batches whose frames are not all written yet
        self._since = 0.0
        self._unwritten: list[tuple[float, dict]] = []
        self._touched: deque[Any] = deque()
        self._latency: dict[str, metrics.Series] = {}  # source -> its series of DELIVERY_LATENCY
        # Resume ids (the SSE id:). An event submitted over HTTP gets "<boot>-<n>" where
        # it enters and keeps it when relayed; one read from Kafka is "k:<topic>:<partition>:
        # <offset>". So every worker and node knows an event by the same id and a client
        # resumes on whichever worker it reconnects to. Anything else gets "<boot>~<seq>".
        self.boot = format(int(time.time() * 1000), "x") + format(getrandbits(16), "04x")
        self.rid_prefix = self.boot + "-"
        self._rids = 0
        self._seq = 0  # this worker's order of fan-out
        self.history = History(history_size, history_age_s, history_bytes)
        self.replay_max_bytes = replay_max_bytes  # per resuming connect
        # the cluster's relay (fn(events, source) -> bool), told of every published batch; True: it
        # takes the batch and delivers it here too (deliver_local), in the node's one order of events
        self.relay: Callable[[list[Event], str], bool] | None = None
        # False while the node's reader holds the history (the hub then keeps none of its own)
        self.keep_history = True
        # fn(old, new): the subscriptions of one indexed session changed (the node reader's interest)
        self.interest_listener: Callable[[Iterable[Subscription], Iterable[Subscription]], None] | None = None
        self._indexed: dict[int, list[Subscription]] = {}
        self.build = BUILD
        self._frames = _Frames(self)

    # -- sessions ---------------------------------------------------------
    def new_slot(self) -> int:
        slot = self._next_slot
        self._next_slot += 1
        return slot

    def register(self, session) -> None:
        self.sessions[session.slot] = session
        self.by_token[session.token] = session
        if session.COUNTED:  # a Phoenix channel is not a connection: its socket is
            self.counts[session.kind] += 1
            metrics.CONNECTIONS_OPENED.inc(1, KIND_NAMES[session.kind])

    def unregister(self, session) -> None:
        if self.sessions.pop(session.slot, None) is None:
            return
        self.by_token.pop(session.token, None)
        self.index.remove(session.slot)
        if session.COUNTED:
            self.counts[session.kind] -= 1
        if self.interest_listener is not None:
            self.interest_listener(self._indexed.pop(session.slot, ()), ())

    def set_subscriptions(self, session, subs: list[Subscription], announce: bool = True) -> None:
        """Replace a session's subscriptions and tell it with rig.subscriptions_set
        (Phoenix channels are told in the reply of the join or push instead; ``announce=False``:
        the caller tells it, e.g. the greeting of a connect made in one piece)."""
        session.subscriptions = subs
        if session.slot in self.sessions:
            indexed = session.indexed(subs)
            self.index.set(session.slot, [(s.event_type, s.conjunctions) for s in indexed])
            if self.interest_listener is not None:
                self.interest_listener(self._indexed.get(session.slot, ()), indexed)
                self._indexed[session.slot] = indexed
        if announce and session.kind != PHOENIX:
            self.send_gateway_event(session, make_event("rig.subscriptions_set", [s.to_json() for s in subs]))

    def hold(self, session) -> None:
        """Keep live events from ``session`` until :meth:`release` (its replay is being fetched)."""
        self.index.remove(session.slot)

    def release(self, session) -> None:
        """Let live events reach ``session`` again (after :meth:`hold`)."""
        if session.slot not in self.sessions or session.closed:
            return
        self.index.set(session.slot, [(s.event_type, s.conjunctions) for s in session.indexed(session.subscriptions)])
        self._touch(session)

    def send_gateway_event(self, session, event: Event) -> None:
        """A gateway-made event for one session (no id: it does not move Last-Event-ID)."""
        session.enqueue(session.push_frame(event) if session.kind == PHOENIX else self.encode(session.kind, event, with_id=False))
        self._touch(session)

    def kill_session(self, session_id: str) -> None:
        """End every live connection of a blacklisted session."""
        for s in [s for s in self.sessions.values() if session_id in s.session_ids]:
            if s.kind == SSE:
                s.close(self.encode(SSE, make_event("rig.session_killed", {"session_id": session_id}), with_id=False))
            elif s.kind == WS:
                s.close_with(1000, "Session killed.")
            elif s.kind == PHOENIX:  # phx_error on every joined topic, then the socket closes
                s.kill()
            else:
                s.abort()

    # -- events -----------------------------------------------------------
    def publish(self, event: Event, source: str = "http") -> None:
        count(metrics.EVENTS_RECEIVED, 1, (source,))
        self._rids += 1
        event.rid = f"{self.rid_prefix}{self._rids}"
        if self.relay is not None and self.relay([event], source):
            return
        if not self._pending:
            self._since = monotonic()
        self._pending.append((event, source))
        self._schedule()

    def publish_all(self, events: list[Event], source: str = "http") -> None:
        """A batch submitted over HTTP: resume ids like :meth:`publish`, listeners told once."""
        metrics.EVENTS_RECEIVED.inc(len(events), source)
        prefix, n = self.rid_prefix, self._rids
        for e in events:
            n += 1
            e.rid = f"{prefix}{n}"
        self._rids = n
        if self.relay is not None and self.relay(events, source):
            return
        if not self._pending:
            self._since = monotonic()
        self._pending.extend(zip(events, repeat(source)))
        self._schedule()

    def publish_batch(self, events: list[Event], source: str = "kafka") -> None:
        if not events:
            return
        metrics.EVENTS_RECEIVED.inc(len(events), source)
        if self.relay is not None and self.relay(events, source):
            return
        if not self._pending:
            self._since = monotonic()
        self._pending.extend(zip(events, repeat(source)))  # the pairs made in C
        self._schedule()

    def deliver_local(self, events: Iterable[Event], source: str) -> None:
        """Events relayed from another worker/node: fan out here, do not relay again."""
        if not self._pending:
            self._since = monotonic()
        self._pending.extend(zip(events, repeat(source)))
        self._schedule()

    def encode(self, kind: int, event: Event, with_id: bool = True) -> Any:
        if kind == SSE:
            return encode_sse(event.type, self.event_id(event) if with_id else "", event.json)
        if kind == WS:
            return encode_ws_text(event.json)
        return event  # long-polling answers are built per poll from the buffered events

    def event_id(self, event: Event) -> str:
        """The SSE id of an event: its resume id; "" for gateway events (no resume id, no seq)."""
        if event.rid:
            return event.rid
        return f"{self.boot}~{event.seq}" if event.seq else ""

    def _schedule(self) -> None:
        """One fan-out after the current batch of I/O callbacks, however many events come first."""
        if not self._scheduled:
            self._scheduled = True
            self.loop.call_soon(self._flush)

    def settle(self) -> None:
        """Fan out the events queued so far now (the drain calls it before closing sessions)."""
        if self._pending:
            self._flush()

    def _touch(self, session) -> None:
        if not session.dirty:
            session.dirty = True
            self._touched.append(session)
            self._schedule()

    def _flush(self) -> None:
        self._scheduled = False
        pending, self._pending = self._pending, []
        if pending and self.keep_history and self.history.enabled:
            # every event, matched or not: a client resuming later may want it; a flush in one call
            self.history.extend([event for event, _ in pending], time.monotonic())
        index, extractors = self.index, self.extractors
        dropped: dict[str, int] = {}
        matched: dict[str, int] = {}
        seq = self._seq
        try:
            for event, source in pending:
                seq += 1
                event.seq = seq
                try:
                    slots = recipients(index, extractors, event)
                    if not slots:  # nobody wants it: counted, nothing encoded
                        dropped[source] = dropped.get(source, 0) + 1
                        continue
                    self._fan_out(event, source, slots)
                    matched[source] = matched.get(source, 0) + 1
                except Exception:  # noqa: BLE001 - one bad event never stops the batch
                    log.exception("fan-out failed for %r; event skipped", event)
        finally:
            self._seq = seq
            for source, n in dropped.items():
                count(metrics.EVENTS_DROPPED, n, (source,))
        if matched:
            self._unwritten.append((self._since, matched))
        touched = self._touched
        flush_slice(touched, FLUSH_SLICE)
        if touched:
            self._schedule()
        # every frame queued so far is written: those events are delivered (bounded: under a load
        # that never empties the touched list, observe at the 64th batch)
        if self._unwritten and (not touched or len(self._unwritten) >= 64):
            done = monotonic()
            for since, by_source in self._unwritten:
                took = done - since
                for source, n in by_source.items():  # DELIVERY_LATENCY.observe, inline on the source's series
                    series = self._latency.get(source)
                    if series is None:
                        series = self._latency[source] = metrics.DELIVERY_LATENCY.child(source)
                    series.counts[bisect_left(series.bounds, took)] += n
                    series.total += took * n
            self._unwritten.clear()

    def _fan_out(self, event: Event, source: str, slots: list[int]) -> None:
        """Queue the event's frames on the sessions in ``slots`` (one encoding per wire kind)."""
        frames = self._frames
        frames.event = event
        try:
            delivered = deliver(slots, self.sessions, frames, self._touched)
        finally:
            frames.event = None  # not kept alive by the hub
        total = 0
        for kind in (SSE, WS, LONGPOLL, PHOENIX):
            n = delivered[kind]
            if n:
                count(metrics.EVENTS_DELIVERED, n, (source, KIND_NAMES[kind]))
                total += n
        if total:
            count(metrics.DELIVERED_BY_TYPE, total, (event.type,))

    # -- resumption -------------------------------------------------------
    def replay_since(self, last_event_id: str, subs: list[Subscription]) -> tuple[bool, list[Event]]:
        """(gap, events): the kept events after ``last_event_id`` matching ``subs``.

        ``gap`` is True when the history no longer holds that event (too old, or
        never seen by this worker) or the missed events exceed RIGFAST_REPLAY_MAX_BYTES:
        the client may have missed more. A resume is rare, so the history is
        scanned (newest first, no copy, at most the budget collected) rather than
        indexed on every event.
        """
        self._expire_history()
        if not subs:
            return self.history.replay(last_event_id, self.event_id, _nothing, self.replay_max_bytes)
        tmp = SubscriptionIndex()
        tmp.set(0, [(s.event_type, s.conjunctions) for s in subs])
        extractors = self.extractors
        return self.history.replay(
            last_event_id, self.event_id, lambda e: bool(recipients(tmp, extractors, e)), self.replay_max_bytes
        )

    def resume(self, session, last: str, subs: list[Subscription], node: Any = None,
               missed: Callable[[tuple[bool, list[Event]]], None] | None = None) -> None:
        """What ``session`` missed since ``last``, then live events: from the node's history when
        ``node`` (the cluster) can ask the node's reader, else (or when it does not answer) from ours.
        ``missed((gap, events))`` hands them to the session (default: :meth:`queue_missed`).

        While the reader's answer travels, the session is out of the index; the answer is handled in
        the order of the reader's events (see ``ReaderLink.replay``): the events queued before it are
        fanned out first (without this session: the answer holds them), those after reach it live."""
        if missed is None:
            def missed(result: tuple[bool, list[Event]]) -> None:
                self.queue_missed(session, last, result)

        def done(result: tuple[bool, list[Event]] | None) -> None:
            self.settle()
            missed(result if result is not None else self.replay_since(last, subs))
            self.release(session)

        if node is not None and node.replay(last, subs, done):
            self.hold(session)
            return
        missed(self.replay_since(last, subs))

    def queue_missed(self, session, last: str, result: tuple[bool, list[Event]]) -> None:
        """``rig.history_gap`` when the history no longer reaches back to ``last``, then the events."""
        if session.closed:
            return
        gap, events = result
        if gap:
            self.send_gateway_event(session, make_event("rig.history_gap", {"last_event_id": last}))
        for e in events:
            session.enqueue(self.encode(session.kind, e))

    def _expire_history(self) -> None:
        self.history.expire(time.monotonic())

    # -- periodic work ----------------------------------------------------
    def heartbeat(self) -> None:
        """Heartbeat comment to SSE sessions, ping to WS sessions, expiry for long-polling."""
        for s in list(self.sessions.values()):
            try:
                s.heartbeat()
            except Exception:  # noqa: BLE001
                log.exception("heartbeat failed for session %s", s.slot)
                s.abort()
        self._expire_history()

    def close_all(self) -> None:
        for s in list(self.sessions.values()):
            s.abort()
