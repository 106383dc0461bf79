"""One gateway across worker processes and nodes: see docs/cluster.md.

How this works: a :class:`Cluster` is attached to each worker's Gateway
when there is more than one worker on the node or Kafka is configured. It

- prefixes every connection token with its route, ``<node>.w<worker>.``;
- routes every event submitted over HTTP (sources ``http`` and ``api``),
  one batch per loop iteration however many events that holds: to the
  node's reader, which sends it to the workers that want it (this one
  included) and keeps it in the node's history, and to the other nodes over
  the cluster topic. While the reader is not linked (killed, restarting)
  the worker serves the node itself: its own sessions and, over the bus,
  the other workers. Every batch is named (origin, batch number), and a
  worker delivers a name once, so a batch that comes both ways around a
  reader's death reaches each connection once. Receivers call
  ``hub.deliver_local``, which fans out without relaying again;
- forwards what must be done where a connection lives (``PUT
  .../subscriptions``, a long-poll) to the worker named by the token: over
  the bus on the same node, over the cluster topic to another node; the
  owner answers with a reply addressed back to the asking worker;
- replicates blacklist entries: to the node's workers over the bus, to
  other nodes (and to future restarts) through the compacted blacklist topic;
- answers ``/metrics`` with every worker's series, labelled ``worker``;
- replicates reverse-proxy APIs changed at runtime (``/v3/apis``; versioned,
  last writer wins) like blacklist entries, and forwards a ``/v3/responses``
  answer to the worker whose correlation id it carries.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import deque
from typing import Any, Callable, Protocol

import orjson

from rigfast import metrics
from rigfast.cloudevents import Event
from rigfast.cluster import wire
from rigfast.auth.blacklist import Blacklist
from rigfast.cluster.naming import reader_in_use, reader_reads_cluster_topic, runtime_dir
from rigfast.errors import RigError
from rigfast.hub.hub import LONGPOLL, Hub
from rigfast.net.sessions import apply_subscriptions
from rigfast.subscriptions import parse_subscriptions

log = logging.getLogger("rigfast.cluster")

RELAYED_SOURCES = ("http", "api")
METRICS_TIMEOUT_S = 1.0
# a replicated ban this close to the one we hold is the same ban: no re-add, no session scan
BLACKLIST_SAME_S = 1.0

FORWARDED = metrics.REGISTRY.counter(
    "rig_cluster_forwarded_total", "Requests forwarded to the worker or node owning the connection", ("kind", "via")
)
RELAYED_IN = metrics.REGISTRY.counter(
    "rig_cluster_events_in_total", "Submitted events received from the node's reader (reader), other workers (bus) "
    "or other nodes (kafka)", ("via",)
)
RELAYED_OUT = metrics.REGISTRY.counter(
    "rig_cluster_events_out_total", "Submitted events sent to the node's reader (reader), other workers (bus) "
    "or other nodes (kafka)", ("via",)
)
SEEN_BATCHES = 4096  # batch names remembered per origin
SEEN_ORIGINS = 256  # origins remembered (the oldest is forgotten first)


class Seen:
    """The submitted batches delivered here, by (origin, batch), bounded: the second arrival of a
    batch (from the reader, and from its submitter over the bus after the reader died) is dropped."""

    __slots__ = ("_by",)

    def __init__(self) -> None:
        self._by: dict[str, tuple[set, deque]] = {}

    def first(self, origin: str, batch: int) -> bool:
        got = self._by.get(origin)
        if got is None:
            if len(self._by) >= SEEN_ORIGINS:
                del self._by[next(iter(self._by))]
            got = self._by[origin] = (set(), deque())
        names, order = got
        if batch in names:
            return False
        names.add(batch)
        order.append(batch)
        if len(order) > SEEN_BATCHES:
            names.discard(order.popleft())
        return True


class RemoteWaiter:
    """Stands in for the HTTP connection of a long-poll that arrived on another worker or node."""

    __slots__ = ("cluster", "to", "request_id", "loop", "closing")

    def __init__(self, cluster: "Cluster", to: str, request_id: int):
        self.cluster = cluster
        self.to = to
        self.request_id = request_id
        self.loop = cluster.loop
        self.closing = False

    def park(self) -> None:
        pass

    def unpark(self) -> None:
        pass

    def respond(self, req, status: int, body: bytes = b"", content_type: bytes | None = None, headers=()) -> None:
        if self.closing:
            return
        self.closing = True
        self.cluster.reply(self.to, {
            "request_id": self.request_id, "status": status, "body": body.decode(),
            "ctype": content_type.decode() if content_type else None,
            "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in headers],
        })

    def close(self) -> None:
        if not self.closing:
            self.closing = True
            self.cluster.reply(self.to, {"request_id": self.request_id, "status": 0, "close": True})

    abort = close


class ProxyReplica(Protocol):
    """What the cluster calls in the reverse proxy (``rigfast.proxy.gateway.Proxy``)."""

    def snapshot(self) -> list: ...

    def apply_remote(self, entries: list) -> None: ...

    def deliver(self, corr: str, code: int, ctype: bytes | None, body: bytes) -> bool: ...


class Cluster:
    """This worker's links to the other workers of its node (bus) and to other nodes (Kafka).

    ``node``: this node's id; ``proxy``: set by the composition root once the proxy exists
    (the proxy calls back into the cluster too)."""

    def __init__(self, cfg: Any, loop: asyncio.AbstractEventLoop, hub: Hub, blacklist: Blacklist, node: str):
        self.cfg = cfg
        self.hub = hub
        self.loop = loop
        self.proxy: ProxyReplica | None = None
        self.node = node
        self.worker = cfg.worker_index
        self.count = max(cfg.worker_count, 1)
        self.me = f"{self.node}.w{self.worker}"
        self.timeout = cfg.cluster_timeout_s
        self.directory = runtime_dir(cfg, self.node)
        self.bus = None
        self.local_health: Callable[[], dict] | None = None  # this worker's /health?detailed (set by the gateway)
        self.local_dash: Callable[[], dict] | None = None  # this worker's dashboard snapshot (set by the gateway)
        if self.count > 1:
            from rigfast.cluster.bus import Bus

            self.bus = Bus(self.directory, self.worker, self.count, self._on_frame, self._on_link_up)
        self.kafka = None
        if cfg.kafka_brokers and cfg.cluster_topic:
            from rigfast.cluster.kafka_link import KafkaLink

            # on a node with a reader, the reader reads the cluster topic for every worker
            self.kafka = KafkaLink(cfg, self.loop, self._on_records, read_cluster=not reader_reads_cluster_topic(cfg))
        self.origin = hub.boot  # names this worker's submitted batches (unique per worker start)
        self._batches = itertools.count(1)
        self.seen = Seen()
        self.reader = None  # the node's event reader: routes events between the workers, reads Kafka
        if reader_in_use(cfg):
            from rigfast.cluster.reader import ReaderLink

            self.reader = ReaderLink(self.directory, self.worker, loop, hub.deliver_local, self.origin,
                                     self._on_reader_frame, self._on_reader_state)
            hub.interest_listener = self.reader.change
        self._request_ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future] = {}
        self._out: list[tuple[list[Event], str]] = []
        self._relay_scheduled = False
        self._applying = False
        self.blacklist = blacklist
        hub.relay = self._on_publish
        self.blacklist.on_add(self._on_blacklist_add)

    # -- lifecycle ------------------------------------------------------------------
    async def start(self) -> None:
        if self.bus is not None:
            await self.bus.start()
        if self.kafka is not None:
            self.kafka.start()
        if self.reader is not None:
            self.reader.start()
        log.info("cluster: node %s worker %d of %d%s%s", self.node, self.worker, self.count,
                 f", bus in {self.directory}" if self.bus else "",
                 f", Kafka topics {self.cfg.cluster_topic} / {self.cfg.blacklist_topic}" if self.kafka else "")

    async def stop(self) -> None:
        for fut in self._waiting.values():
            if not fut.done():
                fut.cancel()
        if self.bus is not None:
            await self.bus.stop()
        if self.reader is not None:
            await self.reader.stop()
        if self.kafka is not None:
            await self.kafka.stop()

    @property
    def ready(self) -> bool:
        bus_ok = self.bus is None or len(self.bus.connected()) == self.count - 1
        reader_ok = self.reader is None or (self.reader.linked_once and (
            self.kafka is None or self.kafka.read_cluster or self.reader.cluster_reached))
        return bus_ok and (self.kafka is None or self.kafka.ready) and reader_ok

    def replay(self, last: str, subs: list, done: Callable[[tuple[bool, list] | None], None]) -> bool:
        """Ask the node's reader for its history after ``last`` matching ``subs``: ``done((gap, events))``
        follows, in the order of the events the reader sends (None: no answer; use your own history).
        False (``done`` never runs) without a linked reader."""
        return self.reader is not None and self.reader.replay(last, subs, done)

    def health(self) -> dict:
        return {
            "node": self.node,
            "worker": self.worker,
            "workers": self.count,
            "ready": self.ready,
            "peers_linked": self.bus.connected() if self.bus else [],
            "kafka": self.kafka.health() if self.kafka else {"state": "disabled"},
            "reader": self.reader.health() if self.reader else {"state": "disabled"},
            "history_events": len(self.hub.history),  # this worker's own: kept only while no reader is linked
        }

    # -- events ---------------------------------------------------------------------
    def _on_publish(self, events: list[Event], source: str) -> bool:
        """The hub's relay: submitted events go out once per loop iteration. True (the hub does not
        fan them out now) when the node has a reader: they reach this worker's sessions in the
        node's order, from the reader or, while it is away, from :meth:`_serve`."""
        if source not in RELAYED_SOURCES:
            return False
        self._out.append((events, source))
        if not self._relay_scheduled:
            self._relay_scheduled = True
            self.loop.call_soon(self._relay)
        return self.reader is not None

    def _relay(self) -> None:
        self._relay_scheduled = False
        out, self._out = self._out, []
        by_source: dict[str, list[Event]] = {}
        for events, source in out:
            by_source.setdefault(source, []).extend(events)
        reader = self.reader
        for source, events in by_source.items():
            payload = wire.encode_events(events, source)
            if reader is not None:
                batch = next(self._batches)
                if reader.connected:
                    # the reader serves the workers whose whole interest it holds; the others we serve
                    linked = reader.linked_workers
                    direct = [j for j in range(self.count) if j not in linked]
                    reader.submit(batch, direct, payload, (events, source))
                    RELAYED_OUT.inc(len(events), "reader")
                else:
                    direct = list(range(self.count))
                self._serve(batch, events, source, payload, direct)
            if self.kafka is not None:
                self.kafka.produce(self.cfg.cluster_topic, payload, key=self.node.encode(),
                                   headers=[("rf-kind", b"ev"), ("rf-from", self.me.encode())])
                RELAYED_OUT.inc(len(events), "kafka")

    def _serve(self, batch: int, events: list[Event], source: str, payload: bytes, workers: list[int]) -> None:
        """Our batch to ``workers`` ourselves: this worker's sessions, the others over the bus."""
        frame = None
        for j in workers:
            if j == self.worker:
                if self.seen.first(self.origin, batch):
                    self.hub.deliver_local(events, source)
            elif self.bus is not None:
                if frame is None:
                    frame = wire.tagged(wire.SUBMITTED, f"{self.origin} {batch}", payload)
                if self.bus.send(j, frame):
                    RELAYED_OUT.inc(len(events), "bus")

    def _on_submitted(self, payload: bytes, via: str) -> None:
        """A named batch, from the reader or a worker of the node: delivered here once."""
        head, rest = wire.untag(payload)
        origin, _, batch = head.partition(" ")
        n = int(batch)
        if not self.seen.first(origin, n):
            return
        mine = self.reader.unacked.get(n) if origin == self.origin and self.reader is not None else None
        if mine is not None and len(mine[1]) == len(rest):  # our own whole batch back: the events we made
            events, source = mine[2]
        else:
            source, events = wire.decode_events(rest)
            RELAYED_IN.inc(len(events), via)
        if events:
            self.hub.deliver_local(events, source)

    def _on_reader_frame(self, kind: int, payload: bytes) -> None:
        if kind == wire.SUBMITTED:
            self._on_submitted(payload, "reader")
        else:
            self._on_frame(kind, payload)

    def _on_reader_state(self, linked: bool, unacked: list) -> None:
        """The reader link came up (it holds the node's history: we keep none) or went down (we keep
        our own, and serve the batches it had not routed to the workers it would have served)."""
        self.hub.keep_history = not linked
        if linked:  # what we kept meanwhile is not the node's: a resume asks the reader
            self.hub.history.clear()
            return
        for batch, (direct, payload, (events, source)) in unacked:
            self._serve(batch, events, source, payload, [j for j in range(self.count) if j not in direct])

    def _deliver(self, payload: bytes, via: str) -> None:
        source, events = wire.decode_events(payload)
        if events:
            RELAYED_IN.inc(len(events), via)
            self.hub.deliver_local(events, source)

    # -- incoming -------------------------------------------------------------------
    def _on_frame(self, kind: int, payload: bytes) -> None:
        if kind == wire.SUBMITTED:
            self._on_submitted(payload, "bus")
        elif kind == wire.REQUEST:
            self._handle_request(orjson.loads(payload))
        elif kind == wire.REPLY:
            self._handle_reply(orjson.loads(payload))
        elif kind == wire.BLACKLIST:
            self._apply_blacklist(orjson.loads(payload))
        elif kind == wire.APIS:
            self.proxy.apply_remote(orjson.loads(payload))

    def _on_records(self, records: list) -> None:
        bl_topic = self.cfg.blacklist_topic
        entries = []
        for topic, key, value, headers, *_ in records:
            try:
                if topic == bl_topic:
                    if key and value:
                        entries.append([key.decode(), orjson.loads(value)["expires_at"]])
                    continue
                kind = headers.get("rf-kind")
                sender = (headers.get("rf-from") or b"").decode()
                if kind == b"ev":
                    if sender.partition(".")[0] != self.node:
                        self._deliver(value, "kafka")
                elif kind == b"apis":
                    if sender.partition(".")[0] != self.node:
                        self.proxy.apply_remote(orjson.loads(value))
                elif headers.get("rf-to") == self.me.encode():
                    if kind == b"req":
                        self._handle_request(orjson.loads(value))
                    elif kind == b"rep":
                        self._handle_reply(orjson.loads(value))
            except Exception:  # noqa: BLE001 - one bad record never stops the link
                log.exception("cluster: bad record on %s skipped", topic)
        if entries:
            self._apply_blacklist(entries)

    def _on_link_up(self, link) -> None:
        now = time.time()
        entries = [[sid, now + left] for sid, left in self.blacklist.entries()]
        if entries:
            link.send(wire.encode_json_frame(wire.BLACKLIST, entries))
        apis = self.proxy.snapshot()
        if apis:
            link.send(wire.encode_json_frame(wire.APIS, apis))

    # -- requests to the owner of a connection ------------------------------------------
    def _send(self, node: str, worker: int, frame_kind: int, record_kind: bytes, msg: dict) -> str | None:
        """``msg`` to one worker: over the bus on this node, the cluster topic to another; the way, or None."""
        if node == self.node:
            if self.bus is None or not self.bus.send(worker, wire.encode_json_frame(frame_kind, msg)):
                return None
            return "bus"
        if self.kafka is None:
            return None
        self.kafka.produce(self.cfg.cluster_topic, orjson.dumps(msg), key=node.encode(), headers=[
            ("rf-kind", record_kind), ("rf-from", self.me.encode()), ("rf-to", f"{node}.w{worker}".encode())])
        return "kafka"

    def _send_request(self, node: str, worker: int, msg: dict) -> asyncio.Future | None:
        request_id = next(self._request_ids)
        msg["request_id"] = request_id
        msg["from"] = self.me
        via = self._send(node, worker, wire.REQUEST, b"req", msg)
        if via is None:
            return None
        FORWARDED.inc(1, msg["op"], via)
        fut = self.loop.create_future()
        self._waiting[request_id] = fut
        return fut

    async def ask(self, node: str, worker: int, msg: dict, timeout: float) -> dict | None:
        """Send a request to worker ``worker`` of ``node``; its reply, or None (unreachable, no answer in time)."""
        fut = self._send_request(node, worker, msg)
        if fut is None:
            return None
        try:
            return await asyncio.wait_for(fut, timeout)
        except asyncio.TimeoutError:
            log.warning("cluster: no answer from %s.w%d to %s within %.1fs", node, worker, msg["op"], timeout)
            return None
        finally:
            self._waiting.pop(msg["request_id"], None)

    def reply(self, to: str, msg: dict) -> None:
        node, _, w = to.partition(".")
        self._send(node, int(w[1:]), wire.REPLY, b"rep", msg)

    def _handle_reply(self, msg: dict) -> None:
        fut = self._waiting.get(msg.get("request_id"))
        if fut is not None and not fut.done():
            fut.set_result(msg)

    def _handle_request(self, msg: dict) -> None:
        op, request_id, sender = msg.get("op"), msg.get("request_id"), msg.get("from")
        if not isinstance(sender, str) or request_id is None:
            return
        if op == "subs":
            self.reply(sender, {"request_id": request_id, **self._apply_subscriptions(msg)})
        elif op == "poll":
            session = self.hub.by_token.get(msg.get("token"))
            if session is None or session.closed or session.kind != LONGPOLL:
                self.reply(sender, {"request_id": request_id, "status": 410})
                return
            last = msg.get("last")
            session.poll(RemoteWaiter(self, sender, request_id), None, [], last if isinstance(last, str) and last else "first_event")
        elif op == "phx":  # a Phoenix long-poll request (GET poll or POST messages) for a socket held here
            sock = self.hub.by_token.get(msg.get("token"))
            if sock is None or sock.closed or not hasattr(sock, "lp_request"):
                self.reply(sender, {"request_id": request_id, "status": 410})
                return
            body = (msg.get("body") or "").encode("latin-1")
            sock.lp_request(RemoteWaiter(self, sender, request_id), None, msg.get("method"), body, [])
        elif op == "metrics":
            self.reply(sender, {"request_id": request_id, "status": 200, "text": metrics.REGISTRY.render().decode()})
        elif op == "dash":
            snap = self.local_dash() if self.local_dash is not None else {}
            self.reply(sender, {"request_id": request_id, "status": 200, "snapshot": snap})
        elif op == "health":
            local = self.local_health() if self.local_health is not None else {}
            self.reply(sender, {"request_id": request_id, "status": 200, "health": local})
        elif op == "proxy_response":
            ctype = msg.get("ctype")
            ok = self.proxy.deliver(msg.get("corr"), int(msg.get("code", 200)), ctype.encode("latin-1") if ctype else None,
                                    (msg.get("body") or "").encode("latin-1"))
            self.reply(sender, {"request_id": request_id, "status": 202 if ok else 404})
        else:
            self.reply(sender, {"request_id": request_id, "status": 400, "message": f"unknown cluster request {op!r}"})

    def _apply_subscriptions(self, msg: dict) -> dict:
        session = self.hub.by_token.get(msg.get("token"))
        if session is None or session.closed:
            return {"status": 410}
        try:
            subs = parse_subscriptions(msg.get("subs"), self.cfg.extractors)
        except RigError as exc:
            return {"status": exc.status, "message": exc.message}
        sids = msg.get("sids") or ()
        apply_subscriptions(self.hub, session, subs, tuple(x for x in sids if isinstance(x, str)))
        return {"status": 204}

    def route(self, token: str) -> tuple[str, int] | None:
        """(node, worker) holding what ``token`` names, when that is another worker reachable from here."""
        route = wire.route_of(token)
        if route is None or route == (self.node, self.worker):
            return None  # no route, or it names us and we do not have it: gone
        if route[0] == self.node and not 0 <= route[1] < self.count:
            return None
        if route[0] != self.node and self.kafka is None:
            return None
        return route

    # -- hooks called by the gateway ----------------------------------------------------
    async def apply_subscriptions_at(self, route: tuple[str, int], token: str, manual: list, subs: list,
                                     session_ids: tuple[str, ...] = ()) -> dict | None:
        """PUT .../subscriptions for a connection held at ``route`` (checked by the caller): the owner's reply.
        The connection also joins ``session_ids``, the sessions of the PUT's tokens."""
        msg = {"op": "subs", "token": token, "manual": [s.to_json() for s in manual], "subs": [s.to_json() for s in subs],
               "sids": list(session_ids)}
        return await self.ask(route[0], route[1], msg, self.timeout)

    def forward_poll(self, proto, req, token: str, cors: list, fallback: Callable[[], Any], last_event_id: str = "first_event") -> Any:
        """A long-poll whose session lives elsewhere: the owner answers, we pass the answer on.

        None when the token routes nowhere (the caller opens a new session)."""
        route = self.route(token)
        if route is None:
            return None
        wait = self.cfg.longpoll_timeout_s + self.timeout

        async def run() -> None:
            rep = await self.ask(route[0], route[1], {"op": "poll", "token": token, "last": last_event_id}, wait)
            if rep is None or rep.get("status") == 410:
                result = fallback()  # the session is gone: a new one, as for an unknown cookie
                if asyncio.iscoroutine(result):
                    await result
                return
            if rep.get("close"):
                proto.close()
                return
            headers = cors + [(k.encode("latin-1"), v.encode("latin-1")) for k, v in rep.get("headers", ())]
            ctype = rep.get("ctype")
            proto.respond(req, rep["status"], rep.get("body", "").encode(), ctype.encode() if ctype else None, headers)

        return run()

    def forward_phoenix(self, proto, req, token: str, method: str, body: bytes, cors: list) -> Any:
        """A Phoenix long-poll request whose socket lives elsewhere: the owner answers, we pass it on.

        None when the token routes nowhere (the caller answers 410)."""
        route = self.route(token)
        if route is None:
            return None
        wait = self.cfg.phoenix_poll_timeout_s + self.timeout
        msg = {"op": "phx", "token": token, "method": method, "body": body.decode("latin-1")}

        async def run() -> None:
            rep = await self.ask(route[0], route[1], msg, wait)
            if rep is None or rep.get("status") == 410 or rep.get("close"):
                proto.respond(req, 200, b'{"status":410}', b"application/json; charset=utf-8", cors)
                return
            headers = cors + [(k.encode("latin-1"), v.encode("latin-1")) for k, v in rep.get("headers", ())]
            ctype = rep.get("ctype")
            proto.respond(req, rep["status"], rep.get("body", "").encode(), ctype.encode() if ctype else None, headers)

        return run()

    def forward_proxy_response(self, corr: str, code: int, ctype: bytes | None, body: bytes) -> Any:
        """A /v3/responses answer whose correlation id names another worker: an awaitable of
        whether it was delivered there, or None when the id routes nowhere."""
        route = self.route(corr)
        if route is None:
            return None
        msg = {"op": "proxy_response", "corr": corr, "code": code, "body": body.decode("latin-1"),
               "ctype": ctype.decode("latin-1") if ctype else None}

        async def run() -> bool:
            rep = await self.ask(route[0], route[1], msg, self.timeout)
            return bool(rep) and rep.get("status") == 202

        return run()

    def publish_apis(self, entries: list) -> None:
        """Reverse-proxy API changes made here: to the node's workers and to the other nodes."""
        if self.bus is not None:
            self.bus.broadcast(wire.encode_json_frame(wire.APIS, entries))
        if self.kafka is not None:
            self.kafka.produce(self.cfg.cluster_topic, orjson.dumps(entries), key=self.node.encode(),
                               headers=[("rf-kind", b"apis"), ("rf-from", self.me.encode())])

    async def node_health(self, local: dict) -> dict:
        """``local`` (this worker's /health?detailed) for the whole node: every worker's own document
        under ``workers``, connections, subscriptions summed; a worker that does not answer in
        time is listed as ``{"worker": i, "status": "no answer"}``."""
        per = {self.worker: local}
        if self.bus is not None:
            peers = [j for j in range(self.count) if j != self.worker]
            replies = await asyncio.gather(*(self.ask(self.node, j, {"op": "health"}, METRICS_TIMEOUT_S) for j in peers))
            for j, rep in zip(peers, replies):
                per[j] = rep["health"] if rep is not None and "health" in rep else {"worker": j, "status": "no answer"}
        workers = [per[j] for j in sorted(per)]
        answering = [w for w in workers if "connections" in w]
        out = dict(local)
        out["node"] = self.node
        out["workers"] = workers
        out["workers_answering"] = len(answering)
        out["connections"] = {k: sum(w["connections"].get(k, 0) for w in answering) for k in local["connections"]}
        out["subscriptions"] = sum(w.get("subscriptions", 0) for w in answering)
        if any(w.get("status") != "ok" for w in workers):
            out["status"] = "degraded"
        return out

    async def metrics_text(self) -> bytes:
        """Every worker's series of this node, each labelled with its worker index, and the
        reader's, labelled ``worker="reader"``."""
        texts = {self.worker: metrics.REGISTRY.render().decode()}
        if self.bus is not None:
            peers = [j for j in range(self.count) if j != self.worker]
            asks = [self.ask(self.node, j, {"op": "metrics"}, METRICS_TIMEOUT_S) for j in peers]
            asks.append(self.ask_reader({"op": "metrics"}, METRICS_TIMEOUT_S))
            replies = await asyncio.gather(*asks)
            for j, rep in zip(peers + ["reader"], replies):
                if rep is not None and "text" in rep:
                    texts[j] = rep["text"]
        return merge_metrics(texts).encode()

    async def ask_reader(self, msg: dict, timeout: float) -> dict | None:
        """A request to the node's reader; its reply, or None (no reader linked, no answer in time)."""
        if self.reader is None:
            return None
        request_id = msg["request_id"] = next(self._request_ids)
        if not self.reader.request(msg):
            return None
        fut = self._waiting[request_id] = self.loop.create_future()
        try:
            return await asyncio.wait_for(fut, timeout)
        except asyncio.TimeoutError:
            return None
        finally:
            self._waiting.pop(request_id, None)

    # -- blacklist ------------------------------------------------------------------
    def _on_blacklist_add(self, session_id: str) -> None:
        if self._applying:
            return
        left = self.blacklist.expires_in(session_id)
        if left is None:
            return
        expires_at = time.time() + left
        if self.bus is not None:
            self.bus.broadcast(wire.encode_json_frame(wire.BLACKLIST, [[session_id, expires_at]]))
        if self.kafka is not None:
            self.kafka.produce(self.cfg.blacklist_topic, orjson.dumps({"expires_at": expires_at, "node": self.me}),
                               key=session_id.encode())

    def _apply_blacklist(self, entries: list) -> None:
        now = time.time()
        self._applying = True
        try:
            for sid, expires_at in entries:
                left = float(expires_at) - now
                if left <= 0:
                    continue
                held = self.blacklist.expires_in(sid)
                if held is not None and held >= left - BLACKLIST_SAME_S:
                    continue
                self.blacklist.add(sid, left)
        finally:
            self._applying = False


def merge_metrics(texts: dict[int | str, str]) -> str:
    """Prometheus text of several processes as one exposition, each sample labelled ``worker``
    (workers by index, then the others, e.g. the reader)."""
    families: dict[str, list[str]] = {}
    meta: dict[str, list[str]] = {}
    for worker, text in sorted(texts.items(), key=lambda kv: (isinstance(kv[0], str), str(kv[0]).zfill(6))):
        family = ""
        for line in text.splitlines():
            if not line:
                continue
            if line.startswith("#"):
                parts = line.split(" ", 3)
                if len(parts) >= 3 and parts[1] in ("HELP", "TYPE"):
                    family = parts[2]
                    m = meta.setdefault(family, [])
                    if len(m) < 2 and not any(x.split(" ", 2)[1] == parts[1] for x in m):
                        m.append(line)
                    families.setdefault(family, [])
                continue
            brace = line.find("{")
            space = line.find(" ")
            if 0 <= brace < space:
                labelled = f'{line[:brace]}{{worker="{worker}",{line[brace + 1:]}'
            else:
                labelled = f'{line[:space]}{{worker="{worker}"}}{line[space:]}'
            families.setdefault(family or line[:space], []).append(labelled)
    out = []
    for family, samples in families.items():
        out.extend(meta.get(family, ()))
        out.extend(samples)
    return "\n".join(out) + "\n"
