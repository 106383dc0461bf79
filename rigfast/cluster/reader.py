"""One event reader per node: the Kafka source topics read and matched once, forwarded only to the workers that want them.

How this works (see docs/cluster.md, "The event reader")
--------------------------------------------------------
With several workers and ``KAFKA_SOURCE_TOPICS``, the supervisor starts one
more child, the reader (``RIGFAST_ROLE=reader``), and no worker opens a
Kafka consumer for events. The reader

- consumes the source topics with the event source (:class:`KafkaSource`:
  assignment, truncation checks, poison records, bounded hand-off);
- listens on ``<cluster dir>/reader.sock``. Each worker keeps one connection
  to it and says which subscriptions its sessions hold: ``INTEREST`` frames
  with the subscriptions that appeared on the worker (first session with it)
  and those that disappeared (last session gone), never one per session;
- keeps a node-level index of those subscriptions (the compiled matcher,
  one slot per (worker, subscription)), matches each event once, and sends
  it, batched per loop iteration, only to the workers with a matching slot:
  a worker with no interest in an event never sees it;
- keeps the node's history of source-topic events (``RIGFAST_HISTORY_SIZE``,
  ``RIGFAST_HISTORY_AGE_S``, ``RIGFAST_HISTORY_BYTES``; replays within
  ``RIGFAST_REPLAY_MAX_BYTES``) and answers a worker's ``replay`` request (a
  client resuming with a ``k:`` Last-Event-ID) with the events after that
  id matching the client's subscriptions;
- holds Kafka back for a worker that falls behind: past
  ``RIGFAST_READER_LINK_BYTES`` unsent to one worker it routes no more source
  batches (the source keeps the few it has and its thread stops reading) and
  stops polling the cluster topic, until that worker has read all but a
  quarter; records wait in Kafka, nothing is dropped. A worker that reads
  nothing for ``RIGFAST_READER_STALL_S`` meanwhile, or falls 8 times that
  far behind (at least ``LINK_BUFFER_LIMIT``), is cut off;
- writes the positions it has forwarded up to (``reader.offsets``, atomically,
  at most every ``OFFSETS_SAVE_S``): a restarted reader (SIGKILL, crash)
  resumes there instead of at the end, so records produced while it was down
  are delivered (at least once: a batch forwarded after the last save is sent
  again).

A worker's connection that closes drops its interest at once; its
replacement says its interest again when it connects.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import logging
import os
import time
from typing import Any, Callable

import orjson

from rigfast import metrics
from rigfast._ext import SubscriptionIndex, event_types
from rigfast.cluster import wire
from rigfast.cluster.bus import FramedConnection, KeepsConnected
from rigfast.cluster.kafka_link import CONTROL_KINDS, KafkaLink
from rigfast.hub.history import History
from rigfast.hub.hub import _NO_FIELDS, recipients
from rigfast.subscriptions import Subscription, parse_subscriptions

log = logging.getLogger("rigfast.reader")

SOCKET_NAME = "reader.sock"
OFFSETS_NAME = "reader.offsets"
OFFSETS_SAVE_S = 0.05
OFFSETS_MAX_AGE_S = 600.0  # positions older than this are not resumed from (a node down that long starts at the end)
REPLAY_TIMEOUT_S = 2.0
START_GRACE_S = 3.0  # a (re)started reader waits this long at most for every worker's interest
LINK_BUFFER_LIMIT = 64 << 20  # the least a worker's link may hold before it is cut (past RIGFAST_READER_LINK_BYTES the reader holds back)
UNACKED_MAX = 65536  # submitted batches in flight to the reader (past it, or LINK_BUFFER_LIMIT bytes: it does not read)
ACK_DELAY_S = 0.005  # a submitter's ACK waits this long for one to ride with (cumulative: the last batch routed)
STATE_INTERVAL_S = 1.0  # the reader's Kafka state goes to the workers when it changed, checked this often
# The cyclic collector's first threshold in the reader (CPython's: 700). confluent-kafka's Message objects are
# GC-tracked, and a consumed batch holds up to 2,000 of them: at 700 the collector ran several times per batch and
# took a large share of the reader's CPU (py-spy); the reader makes few cycles, so it may look less often.
GC_GEN0 = 10000

FORWARDED = metrics.REGISTRY.counter(
    "rig_reader_forwarded_total", "Events the node's reader sent to workers (one per event and worker)", ("to", "source"))
SUBMITTED_IN = metrics.REGISTRY.counter(
    "rig_reader_submitted_total", "Submitted events the node's reader routed, from this node's workers (node) or "
    "from other nodes through the cluster topic (cluster)", ("from",))
HELD_BACK = metrics.REGISTRY.counter(
    "rig_reader_held_back_total", "Times the node's reader stopped taking Kafka records because worker `to` was "
    "behind (RIGFAST_READER_LINK_BYTES unsent)", ("to",))
HELD_BACK_SECONDS = metrics.REGISTRY.counter(
    "rig_reader_held_back_seconds_total", "Seconds the node's reader took no Kafka records because some worker was behind", ())


# what the reader adds to the node's /metrics: its own families, the events it read, found invalid or no worker
# wanted, and its process (the workers already show its Kafka state; the rest of the registry is the gateway's)
READER_FAMILIES = ("rig_reader_", "rig_events_received_total", "rig_events_invalid_total", "rig_events_dropped_total",
                   "process_")


def reader_series(text: str) -> str:
    """The families of READER_FAMILIES in a Prometheus exposition ``text``."""
    out, keep = [], False
    for line in text.splitlines():
        if line.startswith("# "):
            parts = line.split(" ", 3)
            keep = len(parts) > 2 and parts[2].startswith(READER_FAMILIES)
        if keep:
            out.append(line)
    return "\n".join(out) + "\n"



def socket_path(directory: str) -> str:
    return os.path.join(directory, SOCKET_NAME)


def _rid(event) -> str:
    return event.rid


# --- the reader process ---------------------------------------------------------------------

class _WorkerConn(FramedConnection):
    """One worker's connection to the reader (frames both ways)."""

    LOG = log
    BAD_FRAMING = "reader: dropping a worker connection: %s"
    FRAME_FAILED = "reader: a %s frame failed"

    def __init__(self, reader: "Reader"):
        super().__init__()
        self.reader = reader
        self.worker: int | None = None
        self.label = "?"  # the worker index, as a metrics label
        self.origin = ""  # the worker's name for the batches it submits (its hub's boot id)
        self.slots: dict[Subscription, int] = {}
        self.out: list = []
        self.ready = False
        self.ack_upto = ""  # the last batch of this worker routed and not yet acknowledged
        self.ack_due = False
        self.queued = 0  # bytes ever given to the transport (minus what it holds: what the worker has read)

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        high = self.reader.link_bytes
        transport.set_write_buffer_limits(high=high, low=high // 4)

    def pause_writing(self) -> None:
        self.reader.behind(self, True)

    def resume_writing(self) -> None:
        self.reader.behind(self, False)

    def on_frame(self, kind: int, payload: bytes) -> None:
        self.reader.on_frame(self, kind, payload)

    def connection_lost(self, exc) -> None:
        self.reader.drop(self)

    def written(self) -> int:
        """Bytes the worker has taken from this link so far."""
        return self.queued - self.transport.get_write_buffer_size()

    def send(self, frame: bytes) -> None:
        t = self.transport
        if t is None or t.is_closing():
            return
        t.write(frame)
        self.queued += len(frame)
        if t.get_write_buffer_size() > self.reader.link_cap:
            log.error("reader: worker %s is %d bytes behind; dropping its connection", self.worker,
                      t.get_write_buffer_size())
            t.abort()


class Reader:
    def __init__(self, cfg: Any, loop: asyncio.AbstractEventLoop, directory: str, source_factory: Callable | None = None,
                 node: str = ""):
        from rigfast.cluster.naming import reader_reads_cluster_topic
        from rigfast.sources.kafka import KafkaSource

        self.cfg = cfg
        self.loop = loop
        self.directory = directory
        self.extractors = cfg.extractors
        self.index = SubscriptionIndex()
        self.slot_conn: dict[int, _WorkerConn] = {}
        self.conns: set[_WorkerConn] = set()
        self.by_worker: dict[int, _WorkerConn] = {}
        self._linked: list[int] = []  # the workers last announced in LINKED
        self._slots = itertools.count(1)
        self.history = History(cfg.history_size, cfg.history_age_s, cfg.history_bytes)
        self.replay_max_bytes = cfg.replay_max_bytes
        # back-pressure: the workers behind on their link -> (when they last took bytes, bytes taken then)
        self.link_bytes = cfg.reader_link_bytes
        self.link_cap = max(LINK_BUFFER_LIMIT, 8 * self.link_bytes)
        self.stall_s = cfg.reader_stall_s
        self.lagging: dict[_WorkerConn, tuple[float, int]] = {}
        self._held_since = 0.0
        self._stall_timer: asyncio.TimerHandle | None = None
        self.positions: dict[str, int] = {}
        self._positions_dirty = False
        self._save_scheduled = False
        self.server: asyncio.AbstractServer | None = None
        self._start_timer: asyncio.TimerHandle | None = None
        self._source_started = False
        self.expected_workers = max(cfg.worker_count, 1)
        start = self._load_offsets()
        self.cluster = None  # the cluster topic, read for the node (control records for other nodes dropped unread)
        if reader_reads_cluster_topic(cfg):
            topic = cfg.cluster_topic
            self.cluster = KafkaLink(cfg, loop, self.on_cluster_records, read_cluster=True, read_blacklist=False,
                                     node=node, produce=False,
                                     start={p: off for (t, p), off in start.items() if t == topic})
            self.cluster.on_ready = self._cluster_ready
            start = {k: v for k, v in start.items() if k[0] != topic}
        self.source = None  # the event source, when the node reads KAFKA_SOURCE_TOPICS
        if source_factory is not None or (cfg.kafka_brokers and cfg.kafka_source_topics):
            self.source = (source_factory or KafkaSource)(cfg, loop, self.on_events)
            if start:
                self.source.resume_at(start)
            self.source.on_positions = self.on_positions
        metrics.REGISTRY.gauge("rig_reader_history_events", "Events in the node's history (the reader's)",
                               lambda: len(self.history))
        metrics.REGISTRY.gauge("rig_reader_history_bytes", "Event JSON bytes in the node's history",
                               lambda: self.history.bytes)
        metrics.REGISTRY.gauge("rig_reader_workers", "Workers linked to the reader with their whole interest",
                               lambda: len(self._linked))
        self._state_sent: bytes = b""
        self._state_task: asyncio.Task | None = None

    # -- lifecycle --
    async def start(self) -> None:
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        path = socket_path(self.directory)
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        self.server = await self.loop.create_unix_server(lambda: _WorkerConn(self), path, backlog=64)
        os.chmod(path, 0o600)
        # read only once the workers have said what they want (a restarted reader would otherwise
        # drop what it reads before they reconnect); a worker that does not come is not waited for long
        self._start_timer = self.loop.call_later(START_GRACE_S, self._start_source)
        self._state_task = self.loop.create_task(self._push_state())
        log.info("reader: node event reader on %s, source topics %s", path,
                 ",".join(self.cfg.kafka_source_topics) if self.source is not None else "none")

    def _start_source(self) -> None:
        if self._start_timer is not None:
            self._start_timer.cancel()
            self._start_timer = None
        if not self._source_started:
            self._source_started = True
            if self.source is not None:
                self.source.start()
            if self.cluster is not None:
                self.cluster.start()

    async def stop(self) -> None:
        if self._start_timer is not None:
            self._start_timer.cancel()
        if self._stall_timer is not None:
            self._stall_timer.cancel()
        if self._state_task is not None:
            self._state_task.cancel()
        if self.source is not None:
            await self.source.stop()
        if self.cluster is not None:
            await self.cluster.stop()
        self._save_offsets()
        if self.server is not None:
            self.server.close()
        for c in list(self.conns):
            if c.transport is not None:
                c.transport.close()

    # -- Kafka state for the workers (their /health, /metrics, readiness) --
    def kafka_state(self) -> bytes:
        if self.source is None:
            st = {"state": "disabled"}
        else:
            st = dict(self.source.health())
            st["reached"] = bool(getattr(self.source, "reached", False))
            st["consumed"] = metrics.EVENTS_RECEIVED.get("kafka")
            st["invalid"] = metrics.EVENTS_INVALID.get("kafka")
        if self.cluster is not None:  # the cluster topic, as this node reads it ("ready": assigned)
            st["cluster"] = self.cluster.health()
        return orjson.dumps(st)

    def _state_frame(self) -> bytes:
        return wire.encode_frame(wire.KAFKA_STATE, self._state_sent)

    async def _push_state(self) -> None:
        """Every STATE_INTERVAL_S: the state to every linked worker if it changed (new links get it at HELLO)."""
        while True:
            await asyncio.sleep(STATE_INTERVAL_S)
            try:
                self._send_state()
            except Exception:  # noqa: BLE001 - keeps running
                log.exception("reader: sending the Kafka state failed")

    def _send_state(self) -> None:
        st = self.kafka_state()
        if st != self._state_sent:
            self._state_sent = st
            frame = self._state_frame()
            for c in list(self.conns):
                c.send(frame)

    # -- workers --
    def on_frame(self, conn: _WorkerConn, kind: int, payload: bytes) -> None:
        if kind == wire.SUBMIT:
            self.on_submit(conn, payload)
        elif kind == wire.HELLO:
            hello = orjson.loads(payload)
            conn.worker = int(hello["worker"])
            conn.label = str(conn.worker)
            conn.origin = str(hello.get("origin", ""))
            self.conns.add(conn)
            self.by_worker[conn.worker] = conn
            log.info("reader: worker %d connected", conn.worker)
            self._state_sent = self.kafka_state()  # the current state at once on link-up
            conn.send(self._state_frame())
        elif kind == wire.READY:  # the worker's interest is all sent
            conn.ready = True
            self._announce_linked(conn)
            if not self._source_started and sum(c.ready for c in self.conns) >= self.expected_workers:
                self._start_source()
        elif kind == wire.INTEREST:
            msg = orjson.loads(payload)
            for raw in msg.get("del", ()):
                for s in parse_subscriptions([raw], self.extractors):
                    slot = conn.slots.pop(s, None)
                    if slot is not None:
                        self.index.remove(slot)
                        self.slot_conn.pop(slot, None)
            for s in parse_subscriptions(msg.get("add", []), self.extractors):
                if s in conn.slots:
                    continue
                slot = next(self._slots)
                conn.slots[s] = slot
                self.slot_conn[slot] = conn
                self.index.set(slot, [(s.event_type, s.conjunctions)])
        elif kind == wire.REQUEST:
            msg = orjson.loads(payload)
            op = msg.get("op")
            if op == "replay":
                gap, events = self.replay_since(msg.get("last", ""), parse_subscriptions(msg.get("subs"), self.extractors))
                head = orjson.dumps({"request_id": msg.get("request_id"), "gap": gap})
                conn.send(wire.encode_frame(wire.REPLAY, head + b"\n" + wire.encode_events(events, "kafka")))
            elif op == "metrics":  # the reader's series, for the node's /metrics
                conn.send(wire.encode_json_frame(wire.REPLY, {"request_id": msg.get("request_id"), "status": 200,
                                                              "text": reader_series(metrics.REGISTRY.render().decode())}))

    # -- back-pressure: a worker behind holds Kafka back, not our memory --
    def behind(self, conn: _WorkerConn, now_behind: bool) -> None:
        """``conn``'s link went over RIGFAST_READER_LINK_BYTES unsent (True) or back under a quarter of it
        (False): while any worker is behind, no Kafka record is taken (its transport's flow control)."""
        if now_behind:
            if conn in self.lagging:
                return
            self.lagging[conn] = (time.monotonic(), conn.written())
            HELD_BACK.inc(1, conn.label)
            if len(self.lagging) == 1:
                self._held_since = time.monotonic()
                self._flow(False)
                self._stall_timer = self.loop.call_later(min(1.0, self.stall_s / 4), self._check_stalled)
            log.debug("reader: worker %s is behind; Kafka held back", conn.worker)
        elif self.lagging.pop(conn, None) is not None and not self.lagging:
            HELD_BACK_SECONDS.inc(time.monotonic() - self._held_since)
            if self._stall_timer is not None:
                self._stall_timer.cancel()
                self._stall_timer = None
            self.loop.call_soon(self._flow_on)  # not inside the transport's resume_writing: the kept batches go out

    def _flow_on(self) -> None:
        if not self.lagging:
            self._flow(True)

    def _flow(self, on: bool) -> None:
        for consumer in (self.source, self.cluster):
            if consumer is None:
                continue
            if on:
                consumer.resume()
            else:
                consumer.pause()

    def _check_stalled(self) -> None:
        """A worker behind that took nothing for RIGFAST_READER_STALL_S is cut (its interest goes with it)."""
        self._stall_timer = None
        now = time.monotonic()
        for conn, (since, taken) in list(self.lagging.items()):
            t = conn.transport
            if t is None or t.is_closing():
                continue
            written = conn.written()
            if written > taken:
                self.lagging[conn] = (now, written)
            elif now - since >= self.stall_s:
                log.error("reader: worker %s read nothing for %.1fs with %d bytes waiting; dropping its connection",
                          conn.worker, now - since, t.get_write_buffer_size())
                t.abort()  # connection_lost -> drop(): no longer behind, reading resumes
        if self.lagging:
            self._stall_timer = self.loop.call_later(min(1.0, self.stall_s / 4), self._check_stalled)

    def drop(self, conn: _WorkerConn) -> None:
        self.behind(conn, False)
        self.conns.discard(conn)
        if conn.worker is not None and self.by_worker.get(conn.worker) is conn:
            del self.by_worker[conn.worker]
        for slot in conn.slots.values():
            self.index.remove(slot)
            self.slot_conn.pop(slot, None)
        if conn.worker is not None:
            log.info("reader: worker %d disconnected; its %d subscriptions dropped", conn.worker, len(conn.slots))
        conn.slots = {}
        if conn.ready:
            conn.ready = False
            self._announce_linked(None)

    def _announce_linked(self, new: _WorkerConn | None) -> None:
        """LINKED to every worker when the set of workers whose whole interest we hold changed (and to
        ``new``, which just became one, whatever the set): a worker submitting events serves the
        others itself (bus), and the reader serves these."""
        linked = sorted({c.worker for c in self.conns if c.ready})
        if linked == self._linked and new is None:
            return
        self._linked = linked
        frame = wire.encode_json_frame(wire.LINKED, linked)
        for c in list(self.conns):
            c.send(frame)

    # -- submitted events (HTTP on some worker of some node) --
    def on_submit(self, conn: _WorkerConn, payload: bytes) -> None:
        """A batch submitted on ``conn``'s worker: routed like every submitted batch, then acknowledged."""
        head, rest = wire.untag(payload)
        batch, _, direct = head.partition(" ")
        skip = {int(x) for x in direct.split(",") if x}
        source, events = wire.decode_events(rest)
        SUBMITTED_IN.inc(len(events), "node")
        self.route_submitted(conn.origin, batch, source, events, rest, skip, conn)

    def route_submitted(self, origin: str, batch: str, source: str, events: list, payload: bytes,
                        skip: set[int], submitter: _WorkerConn | None) -> None:
        """One SUBMITTED frame per worker that wants some of the batch and does not serve itself
        (``skip``: the submitter served those directly); the submitter's frame and its ACK go last,
        in one write. A worker that gets the whole batch gets its bytes as they came."""
        head = f"{origin} {batch}"
        mine = b""
        for conn in self._route(events, source, skip):
            evs, conn.out = conn.out, []
            frame = wire.tagged(wire.SUBMITTED, head, payload if len(evs) == len(events)
                                else wire.encode_events(evs, source, with_keys=True))
            FORWARDED.inc(len(evs), conn.label, source)
            if conn is submitter:
                mine = frame
            else:
                conn.send(frame)
        if submitter is not None:
            submitter.ack_upto = batch
            if mine:
                self._ack(submitter, mine)
            elif not submitter.ack_due:
                submitter.ack_due = True
                self.loop.call_later(ACK_DELAY_S, self._ack, submitter)

    @staticmethod
    def _ack(conn: _WorkerConn, frame: bytes = b"") -> None:
        """``frame`` (may be empty) and, in the same write, the ACK of every batch routed so far."""
        conn.ack_due = False
        if conn.ack_upto:
            frame += wire.encode_frame(wire.ACK, conn.ack_upto.encode())
            conn.ack_upto = ""
        if frame:
            conn.send(frame)

    # -- events --
    def on_events(self, events: list) -> None:
        """A batch from the source (loop thread): one frame per worker that wants some of it."""
        metrics.EVENTS_RECEIVED.inc(len(events), "kafka")
        for conn in self._route(events, "kafka"):
            out, conn.out = conn.out, []
            FORWARDED.inc(len(out), conn.label, "kafka")
            conn.send(wire.encode_frame(wire.EVENTS, wire.encode_events(out, "kafka", with_keys=True)))

    def _route(self, events: list, source: str, skip: set[int] | None = None) -> list[_WorkerConn]:
        """Node history, one match per event: the workers that want some of ``events``, each with
        those in ``out``. With ``skip`` (submitted events) only workers whose whole interest we
        hold and that are not in ``skip``."""
        index, extractors, slot_conn = self.index, self.extractors, self.slot_conn
        if self.history.enabled:
            self.history.extend(events, time.monotonic())
        touched: list[_WorkerConn] = []
        dropped = 0
        # the slots of a type no subscription constrains by a field are the same for all its events: matched
        # once per batch (None: a type matched per event, on its field values)
        by_type = {t: None if index.wanted(t) else index.match(t, _NO_FIELDS) for t in event_types(events)}
        if not any(slots is None or slots for slots in by_type.values()):  # no worker wants any of them
            if events:
                metrics.EVENTS_DROPPED.inc(len(events), source)
            return touched
        for ev in events:
            try:
                slots = by_type[ev.type]
                if slots is None:
                    slots = recipients(index, extractors, ev)
            except Exception:  # noqa: BLE001 - one bad event never stops the batch
                log.exception("reader: matching failed for %r; event skipped", ev)
                continue
            if not slots:
                dropped += 1
                continue
            if len(slots) == 1 and skip is None:
                conn = slot_conn[slots[0]]
                if not conn.out:
                    touched.append(conn)
                conn.out.append(ev)
                continue
            for slot in slots:
                conn = slot_conn[slot]
                out = conn.out
                if (out and out[-1] is ev) or (skip is not None and (not conn.ready or conn.worker in skip)):
                    continue
                if not out:
                    touched.append(conn)
                out.append(ev)
        if dropped:
            metrics.EVENTS_DROPPED.inc(dropped, source)
        return touched

    def _cluster_ready(self) -> None:
        """The cluster topic is assigned: its start positions are saved (a reader killed before any
        record came resumes there) and the workers learn it (their readiness waits for it)."""
        topic = self.cfg.cluster_topic
        self.on_positions({(topic, p): off for p, off in self.cluster.positions.items()})
        self._send_state()

    def on_cluster_records(self, records: list) -> None:
        """Cluster-topic records for this node (the consumer thread dropped the others unread): other
        nodes' submitted batches routed like ours (named by their place in the topic, so one read
        again after a restart is not delivered twice), control messages passed to the worker
        addressed, ``/v3/apis`` changes to every worker."""
        positions: dict[tuple[str, int], int] = {}
        for topic, _key, value, headers, _ts, part, offset in records:
            positions[(topic, part)] = offset + 1
            kind = headers.get("rf-kind")
            try:
                if kind == b"ev":
                    source, events = wire.decode_events(value)
                    SUBMITTED_IN.inc(len(events), "cluster")
                    self.route_submitted(f"k:{topic}:{part}", str(offset), source, events, value, set(), None)
                elif kind == b"apis":
                    frame = wire.encode_frame(wire.APIS, value)
                    for c in list(self.conns):
                        c.send(frame)
                elif kind in CONTROL_KINDS:
                    to = (headers.get("rf-to") or b"").rpartition(b".w")[2]
                    conn = self.by_worker.get(int(to)) if to.isdigit() else None
                    if conn is not None:
                        conn.send(wire.encode_frame(wire.REQUEST if kind == b"req" else wire.REPLY, value))
            except Exception:  # noqa: BLE001 - one bad record never stops the others
                log.exception("reader: bad record on %s[%d]@%d skipped", topic, part, offset)
        if positions:
            self.cluster.positions.update({p: off for (_, p), off in positions.items()})  # a reconnecting consumer resumes here
            self.on_positions(positions)

    def replay_since(self, last_event_id: str, subs: list[Subscription]) -> tuple[bool, list]:
        """As the hub's: the node history after ``last_event_id`` matching ``subs``, within RIGFAST_REPLAY_MAX_BYTES."""
        self.history.expire(time.monotonic())
        if not subs:
            return self.history.replay(last_event_id, _rid, lambda e: False, self.replay_max_bytes)
        tmp = SubscriptionIndex()
        tmp.set(0, [(s.event_type, s.conjunctions) for s in subs])
        extractors = self.extractors
        return self.history.replay(last_event_id, _rid, lambda e: bool(recipients(tmp, extractors, e)),
                                   self.replay_max_bytes)

    # -- positions --
    def on_positions(self, positions: dict[tuple[str, int], int]) -> None:
        """Next offsets after a batch was forwarded (loop thread)."""
        for (topic, part), off in positions.items():
            self.positions[f"{topic}:{part}"] = off
        if not self._save_scheduled:
            self._save_scheduled = True
            self.loop.call_later(OFFSETS_SAVE_S, self._save_offsets)

    def _save_offsets(self) -> None:
        self._save_scheduled = False
        if not self.positions:
            return
        path = os.path.join(self.directory, OFFSETS_NAME)
        tmp = path + ".tmp"
        try:
            with open(tmp, "wb") as f:
                f.write(orjson.dumps({"time": time.time(), "topics": list(self.cfg.kafka_source_topics),
                                      "positions": self.positions}))
            os.replace(tmp, path)
        except OSError as exc:
            log.warning("reader: cannot save positions to %s: %s", path, exc)

    def _load_offsets(self) -> dict[tuple[str, int], int]:
        path = os.path.join(self.directory, OFFSETS_NAME)
        try:
            with open(path, "rb") as f:
                saved = orjson.loads(f.read())
        except (OSError, ValueError):
            return {}
        if time.time() - float(saved.get("time", 0)) > OFFSETS_MAX_AGE_S:
            return {}
        out = {}
        for key, off in saved.get("positions", {}).items():
            topic, _, part = key.rpartition(":")
            if topic in self.cfg.kafka_source_topics or topic == self.cfg.cluster_topic:
                out[(topic, int(part))] = int(off)
        self.positions = {f"{t}:{p}": o for (t, p), o in out.items()}
        if out:
            log.info("reader: resuming where the previous reader stopped: %s",
                     ", ".join(f"{t}[{p}]@{o}" for (t, p), o in sorted(out.items())))
        return out


async def serve_reader(cfg: Any) -> int:
    import signal

    from rigfast.cluster.naming import default_node_id, runtime_dir

    loop = asyncio.get_running_loop()
    node = cfg.node_id or default_node_id()
    reader = Reader(cfg, loop, runtime_dir(cfg, node), node=node)
    await reader.start()
    gc.collect()
    gc.freeze()  # what start-up made stays out of the collector's walks (as in the workers: app.settle_gc)
    gc.set_threshold(GC_GEN0, *gc.get_threshold()[1:])
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("reader: stopping")
    await reader.stop()
    return 0


def run_reader(cfg: Any) -> int:
    import uvloop

    uvloop.install()
    return asyncio.run(serve_reader(cfg))


# --- the worker's end -----------------------------------------------------------------------

class _ToReader(FramedConnection):
    LOG = log
    BAD_FRAMING = "reader link: bad frame: %s"
    FRAME_FAILED = "reader link: a %s frame failed"

    def __init__(self, link: "ReaderLink"):
        super().__init__()
        self.link = link

    def on_frame(self, kind: int, payload: bytes) -> None:
        self.link.on_frame(kind, payload)

    def connection_lost(self, exc) -> None:
        self.link.lost(self)


class ReaderLink(KeepsConnected):
    """A worker's connection to its node's reader: interest and submitted events out; matching
    events, replays and (through ``on_other``) submitted batches and cluster-topic control frames in.

    ``origin`` names this worker's submitted batches; ``on_state(connected, unacked)`` follows every
    link-up (``unacked`` empty) and loss (``(batch, (direct, payload, keep))`` of the SUBMITs the reader had
    not acknowledged, oldest first: the worker serves them itself)."""

    def __init__(self, directory: str, worker: int, loop: asyncio.AbstractEventLoop,
                 on_events: Callable[[list, str], None], origin: str = "",
                 on_other: Callable[[int, bytes], None] | None = None,
                 on_state: Callable[[bool, list], None] | None = None):
        self.path = socket_path(directory)
        self.worker = worker
        self.loop = loop
        self.on_events = on_events
        self.origin = origin
        self.on_other = on_other
        self.on_state = on_state
        # the workers the reader serves submitted events to (LINKED); empty while not linked
        self.linked_workers: frozenset[int] = frozenset()
        # batch -> (workers served directly, payload, what the worker keeps of it), until ACK
        self.unacked: dict[int, tuple] = {}
        self.unacked_bytes = 0
        self.interest: dict[Subscription, int] = {}
        self._add: dict[Subscription, None] = {}
        self._del: dict[Subscription, None] = {}
        self._flush_scheduled = False
        self.proto: _ToReader | None = None
        self.closing = False
        self.task: asyncio.Task | None = None
        self.wake = asyncio.Event()
        self._request_ids = itertools.count(1)
        self._waiting: dict[int, tuple[Callable, asyncio.TimerHandle]] = {}
        self.events_in = 0  # events the reader forwarded to this worker
        # the reader's Kafka state (last known: kept while the link is down); reached is sticky
        self.kafka_state: dict | None = None
        self.kafka_reached = False
        self.cluster_reached = False  # the reader has read the cluster topic for the node (sticky, like kafka_reached)
        self.linked_once = False

    @property
    def connected(self) -> bool:
        return self.proto is not None

    def health(self) -> dict:
        return {"connected": self.connected, "interest": len(self.interest), "events_in": self.events_in,
                "linked_workers": sorted(self.linked_workers), "unacked": len(self.unacked)}

    def start(self) -> None:
        self.task = self.loop.create_task(self._keep_connected())

    async def stop(self) -> None:
        self.closing = True
        if self.task is not None:
            self.task.cancel()
        if self.proto is not None and self.proto.transport is not None:
            self.proto.transport.close()

    def stopping(self) -> bool:
        return self.closing

    def new_protocol(self) -> _ToReader:
        return _ToReader(self)

    def linked(self, proto: _ToReader) -> None:
        """Connected: say who we are, the whole interest, then ready."""
        self.linked_once = True
        t = proto.transport
        t.write(wire.encode_json_frame(wire.HELLO, {"worker": self.worker, "origin": self.origin}))
        if self.interest:
            t.write(wire.encode_json_frame(wire.INTEREST, {"add": [s.to_json() for s in self.interest]}))
        t.write(wire.encode_frame(wire.READY, b""))
        self._add.clear()
        self._del.clear()
        log.info("reader link: worker %d connected to the node's reader", self.worker)
        if self.on_state is not None:
            self.on_state(True, [])

    def lost(self, proto: _ToReader) -> None:
        if self.proto is proto:
            self.proto = None
            self.wake.set()
            self.linked_workers = frozenset()
            for done, timer in list(self._waiting.values()):
                timer.cancel()
                done(None)
            self._waiting.clear()
            unacked = list(self.unacked.items())
            self.unacked.clear()
            self.unacked_bytes = 0
            if not self.closing:
                log.warning("reader link: lost the node's reader (%d batches not acknowledged); reconnecting",
                            len(unacked))
            if self.on_state is not None:
                self.on_state(False, unacked)

    # -- submitted events --
    def submit(self, batch: int, direct: list[int], payload: bytes, keep: Any) -> None:
        """A batch submitted here, for the reader to route to the workers not in ``direct`` (served by
        the caller); kept with ``keep`` until the reader acknowledges it."""
        t = self.proto.transport
        t.write(wire.tagged(wire.SUBMIT, f"{batch} {','.join(map(str, direct))}", payload))
        self.unacked[batch] = (direct, payload, keep)
        self.unacked_bytes += len(payload)
        if len(self.unacked) > UNACKED_MAX or self.unacked_bytes > LINK_BUFFER_LIMIT:
            log.error("reader link: the reader does not acknowledge (%d batches); dropping the link", len(self.unacked))
            t.abort()

    # -- interest: counted here, only changes go to the reader --
    def change(self, old: list[Subscription], new: list[Subscription]) -> None:
        interest = self.interest
        for s in new:
            n = interest.get(s, 0)
            interest[s] = n + 1
            if n == 0:
                if s in self._del:
                    del self._del[s]
                else:
                    self._add[s] = None
        for s in old:
            n = interest.get(s, 0) - 1
            if n > 0:
                interest[s] = n
                continue
            interest.pop(s, None)
            if s in self._add:
                del self._add[s]
            else:
                self._del[s] = None
        if (self._add or self._del) and not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self.flush_interest)

    def flush_interest(self) -> None:
        self._flush_scheduled = False
        if not (self._add or self._del):
            return
        msg = {"add": [s.to_json() for s in self._add], "del": [s.to_json() for s in self._del]}
        self._add.clear()
        self._del.clear()
        if self.proto is not None and self.proto.transport is not None:
            self.proto.transport.write(wire.encode_json_frame(wire.INTEREST, msg))
        # not connected: the whole interest is sent on (re)connect

    # -- replay --
    def replay(self, last: str, subs: list[Subscription], done: Callable[[tuple[bool, list] | None], None]) -> bool:
        """Ask for the node history after ``last`` matching ``subs``; False when the reader is not linked.

        ``done((gap, events))`` runs in the link's frame order: after every event the reader sent
        before its answer was handled, before any it sent after. ``done(None)``: the reader went
        away or did not answer within REPLAY_TIMEOUT_S."""
        self.flush_interest()  # the reader learns the new session's interest before it cuts the history
        if self.proto is None or self.proto.transport is None:
            return False
        rid = next(self._request_ids)
        self._waiting[rid] = (done, self.loop.call_later(REPLAY_TIMEOUT_S, self._replay_timed_out, rid))
        self.proto.transport.write(wire.encode_json_frame(
            wire.REQUEST, {"op": "replay", "request_id": rid, "last": last, "subs": [s.to_json() for s in subs]}))
        return True

    def _replay_timed_out(self, rid: int) -> None:
        waiting = self._waiting.pop(rid, None)
        if waiting is not None:
            log.warning("reader link: no replay from the reader within %.1fs", REPLAY_TIMEOUT_S)
            waiting[0](None)

    def request(self, msg: dict) -> bool:
        """A REQUEST to the reader (its answer is a REPLY, handled like any); False when not linked."""
        if self.proto is None or self.proto.transport is None:
            return False
        self.proto.transport.write(wire.encode_json_frame(wire.REQUEST, msg))
        return True

    def on_frame(self, kind: int, payload: bytes) -> None:
        if kind == wire.SUBMITTED:
            self.on_other(kind, payload)
        elif kind == wire.ACK:  # cumulative: every batch up to this one was routed
            upto, unacked = int(payload), self.unacked
            while unacked:
                batch = next(iter(unacked))
                if batch > upto:
                    break
                self.unacked_bytes -= len(unacked.pop(batch)[1])
        elif kind == wire.LINKED:
            self.linked_workers = frozenset(orjson.loads(payload))
        elif kind == wire.EVENTS:
            source, events = wire.decode_events(payload)
            if events:
                self.events_in += len(events)
                self.on_events(events, source)
        elif kind == wire.KAFKA_STATE:
            st = orjson.loads(payload)
            self.kafka_state = st
            if st.get("reached"):
                self.kafka_reached = True
            if (st.get("cluster") or {}).get("ready"):
                self.cluster_reached = True
        elif kind == wire.REPLAY:
            head, _, rest = payload.partition(b"\n")
            meta = orjson.loads(head)
            waiting = self._waiting.pop(meta.get("request_id"), None)
            if waiting is not None:
                waiting[1].cancel()
                _, events = wire.decode_events(rest)
                waiting[0]((bool(meta.get("gap")), events))
        elif self.on_other is not None:  # REQUEST, REPLY, APIS: the cluster's
            self.on_other(kind, payload)


class ReaderKafka:
    """The node reader's Kafka source as a worker sees it (what the worker's own KafkaSource gave):
    ``health()`` for /health?detailed, ``reached`` for readiness, the ``rig_kafka_*`` gauges.

    The last state the reader sent is kept while the link is down. ``reached`` is sticky for the
    worker's life: a restarted reader, whose new consumer has not reached the brokers yet, does not
    make a node that had reached Kafka not-ready again."""

    def __init__(self, link: ReaderLink):
        self.link = link
        metrics.REGISTRY.gauge("rig_kafka_connected", "1 when the Kafka consumer is connected to the brokers",
                               self._gauge_connected)
        metrics.REGISTRY.gauge("rig_kafka_consumer_lag", "Records behind the high watermark, summed over partitions",
                               lambda: float((self.link.kafka_state or {}).get("lag", 0) or 0))

    @property
    def reached(self) -> bool:
        return self.link.kafka_reached

    def _gauge_connected(self) -> int:
        return 1 if (self.link.kafka_state or {}).get("state") == "connected" else 0

    async def stop(self) -> None:  # the gateway stops its Kafka clients; the reader owns this one
        return None

    def health(self) -> dict:
        st = dict(self.link.kafka_state or {"state": "unknown"})
        st["reached"] = self.link.kafka_reached
        st["via"] = "reader"
        st["reader_connected"] = self.link.connected
        return st
