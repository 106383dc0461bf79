"""The gateway process, its composition root: components wired, listening sockets, periodic work, shutdown."""

from __future__ import annotations

import asyncio
import gc
import logging
import random
import signal
import weakref
from typing import Any

import orjson

from rigfast import metrics
from rigfast.api.dashboard import Dashboard
from rigfast.api.inbound import InboundApi
from rigfast.api.internal import InternalApi
from rigfast.cluster.naming import default_node_id
from rigfast.cluster.naming import enabled as cluster_enabled
from rigfast.cluster.naming import reader_in_use, reader_reads_sources
from rigfast.cluster.node import Cluster
from rigfast.cluster.wire import token_prefix
from rigfast.errors import CONFIG_EXIT_CODE, ConfigError
from rigfast.fdlimit import max_connections
from rigfast.hub.hub import KIND_NAMES, Hub
from rigfast.ids import TokenIssuer
from rigfast.net.protocol import ConnectionLimit, ServerState
from rigfast.preflight import Resolved, listening_plan, resolve
from rigfast.proxy.gateway import Proxy
from rigfast.sources.kafka import KafkaSource

log = logging.getLogger("rigfast")

SWEEP_INTERVAL_S = 1.0


class Gateway:
    """The composition root of one worker: builds the components and hands each what it uses."""

    def __init__(self, cfg, resolved: Resolved | None = None):
        """``resolved``: what :func:`rigfast.preflight.resolve` built from ``cfg`` (built here when None)."""
        resolved = resolved or resolve(cfg)
        self.cfg = cfg
        self.tls = resolved.tls
        self.worker_id = cfg.worker_index
        self.loop = asyncio.get_event_loop()
        self.hub = hub = Hub(cfg.extractors, self.loop, cfg.history_size, cfg.history_age_s, cfg.history_bytes, cfg.replay_max_bytes)
        self.auth = auth = resolved.auth
        auth.blacklist.on_add(hub.kill_session)
        self.kafka: Any = None  # the event source (KafkaSource), or the node reader's as seen over its link
        # other workers / nodes: on with several workers or Kafka; tokens then route to their issuer
        self.cluster: Cluster | None = None
        tokens = TokenIssuer()
        if cluster_enabled(cfg):
            node = cfg.node_id or default_node_id()
            self.cluster = Cluster(cfg, self.loop, hub, auth.blacklist, node)
            tokens = TokenIssuer(token_prefix(node, cfg.worker_index))
        self.proxy = Proxy(cfg, self.loop, auth, tokens, self.cluster)  # PROXY_CONFIG_FILE and /v3/apis
        if self.cluster is not None:
            self.cluster.proxy = self.proxy
        self.inbound = InboundApi(cfg, hub, auth, tokens, self.proxy.handle, self.cluster, ready=self.ready_api)
        self.internal = InternalApi(hub, auth.blacklist, self.inbound.submit, self.proxy, self.cluster,
                                    self._kafka_health, cfg.worker_index, ready=self.ready_api, api_token=cfg.api_token)
        self.dashboard = Dashboard(hub, cfg.worker_index, self.cluster, self._kafka_lag)
        self.internal.dashboard = self.dashboard
        if self.cluster is not None:
            self.cluster.local_health = self.internal.detailed_health
            self.cluster.local_dash = self.dashboard.snapshot
        self.servers: list[asyncio.AbstractServer] = []
        self.states: list[ServerState] = []
        self._tasks: list[asyncio.Task] = []
        self.started = False  # every port listens
        self.draining = False  # SIGTERM came: not ready, connections being closed
        self._register_gauges()
        if cfg.access_log:  # its lines are info: shown even when LOG_LEVEL is higher
            logging.getLogger("rigfast.access").setLevel(logging.INFO)

    def _kafka_lag(self) -> float:
        return float(self.kafka.health().get("lag", 0) or 0) if self.kafka is not None else 0.0

    def _kafka_health(self) -> dict:
        return self.kafka.health() if self.kafka is not None else {"state": "disabled"}

    def _register_gauges(self) -> None:
        hub = self.hub
        metrics.REGISTRY.gauge(
            "rig_connections", "Open frontend connections", lambda: {KIND_NAMES[i]: hub.counts[i] for i in range(len(KIND_NAMES))}, ("transport",)
        )
        metrics.REGISTRY.gauge("rig_subscriptions", "Subscriptions held", lambda: hub.index.subscription_count)
        metrics.REGISTRY.gauge("rig_blacklist_size", "Blacklisted sessions", lambda: len(self.auth.blacklist))
        metrics.RIG_CONTEXT.update({
            "kafka_topics": ",".join(self.cfg.kafka_source_topics) or "N/A",
            "subscriptions": lambda: hub.index.subscription_count,
            "blacklist": lambda: len(self.auth.blacklist),
        })

    # -- lifecycle ------------------------------------------------------------
    async def start(self) -> None:
        cfg = self.cfg
        tls = self.tls
        if self.cluster is not None:
            await self.cluster.start()
        await self.proxy.start()
        # the public port answers errors with credentialed CORS headers too, so a browser's page
        # (fetch with credentials, EventSource, long-polling) sees the status, not a CORS error
        inbound_errors = self.inbound.error_cors
        public_limit = ConnectionLimit(max_connections(cfg))  # HTTP and TLS public ports together
        for env, host, port, with_tls in listening_plan(cfg):
            public = env.startswith("INBOUND")
            router, error_headers = (self.inbound, inbound_errors) if public else (self.internal, ())
            state = ServerState(cfg, router, error_headers, public_limit if public else None,
                                "inbound" if public else "internal")
            if public:
                state.early_body = self.proxy.stream_upload  # large proxied request bodies stream
            self.states.append(state)
            try:
                server = await self.loop.create_server(
                    state.new_protocol, host, port, ssl=tls if with_tls else None, backlog=4096, reuse_address=True,
                    reuse_port=cfg.worker_count > 1 or None,
                )
            except OSError as exc:
                raise ConfigError(f"{env}={port}: cannot listen on {host}:{port}: {exc.strerror or exc}") from None
            self.servers.append(server)
        if cfg.kafka_brokers and not reader_in_use(cfg):  # else the node's reader consumes for every worker
            self.kafka = KafkaSource(cfg, self.loop, self.hub.publish_batch)
            self.kafka.start()
        elif self.cluster is not None and self.cluster.reader is not None and reader_reads_sources(cfg):
            # the node's reader holds the consumer; its state comes over the reader link
            from rigfast.cluster.reader import ReaderKafka

            self.kafka = ReaderKafka(self.cluster.reader)
        self._tasks.append(self.loop.create_task(self._every(SWEEP_INTERVAL_S, self._sweep)))
        self._tasks.append(self.loop.create_task(self._every(cfg.heartbeat_interval_s, self.hub.heartbeat)))
        self.started = True
        log.info(
            "rigfast worker %s listening: inbound %s:%s, internal %s:%s%s (engine: %s)",
            self.worker_id, cfg.host, cfg.inbound_port, cfg.api_host, cfg.api_http_port,
            f", TLS {cfg.inbound_https_port}/{cfg.api_https_port}" if tls else "", self.hub.build,
        )

    async def _every(self, interval: float, fn) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                fn()
            except Exception:  # noqa: BLE001 - periodic work must keep running
                log.exception("periodic task %s failed", getattr(fn, "__name__", fn))

    def _sweep(self) -> None:
        now = self.loop.time()
        for state in self.states:
            state.sweep(now)
        self.auth.blacklist.purge()

    # -- readiness and drain ------------------------------------------------------
    def readiness(self) -> dict[str, bool]:
        """What /health/ready checks, each True when met."""
        checks = {"listening": self.started, "not_draining": not self.draining}
        if self.kafka is not None:
            checks["kafka_reached"] = kafka_reached(self.kafka)
        if self.cluster is not None:
            checks["cluster_linked"] = bool(self.cluster.ready)  # peer workers linked, blacklist topic read
        return checks

    def ready_api(self, proto, req) -> None:
        """GET /health/ready, /_rig/health/ready: 200 when every check holds, else 503; JSON either way."""
        checks = self.readiness()
        ok = all(checks.values())
        body = orjson.dumps({"ready": ok, "worker": self.worker_id, "checks": checks})
        proto.respond(req, 200 if ok else 503, b"" if req.method == "HEAD" else body, b"application/json")

    async def drain(self, window_s: float) -> None:
        """SIGTERM: stop accepting, report not-ready, then end every frontend connection.

        Order: the public ports stop listening (the internal port keeps answering: /health/ready
        says 503, /metrics still works) and every answer from now on closes its connection;
        waiting long-polls are answered at once; requests still being answered (proxy, checks)
        get up to a third of the window; the streams (SSE, WebSocket, ...) are closed one by
        one, in random order, spread evenly over what is left of ``window_s``. Events queued
        before a close are written before it (the hub is settled first).
        """
        loop = self.loop
        t0 = loop.time()
        self.draining = True
        for server, state in zip(self.servers, self.states):
            state.draining = True
            if state.router is self.inbound:
                server.close()
        hub = self.hub
        hub.settle()
        sessions = list(hub.sessions.values())
        first = [s for s in sessions if s.DRAIN_FIRST]
        streams = [s for s in sessions if not s.DRAIN_FIRST]
        log.info("draining over %.1fs: %d streams, %d waiting sessions", window_s, len(streams), len(first),
                 extra={"streams": len(streams), "waiting": len(first), "drain_s": window_s})
        for s in first:
            self._drain_one(s)
        public = [st for st in self.states if st.router is self.inbound]
        busy_until = t0 + window_s / 3
        while any(st.busy_requests() for st in public) and loop.time() < busy_until:
            await asyncio.sleep(0.02)
        random.shuffle(streams)
        start = loop.time()
        span = max(0.0, t0 + window_s - start)
        n = len(streams)
        i = 0
        while i < n:
            now = loop.time()
            hub.settle()
            while i < n and start + span * (i + 0.5) / n <= now:
                self._drain_one(streams[i])
                i += 1
            if i < n:
                await asyncio.sleep(min(0.02, max(0.0, start + span * (i + 0.5) / n - loop.time())))
        # what the closes wrote is flushed by the transports; give them one loop turn
        await asyncio.sleep(0)
        log.info("drained in %.1fs", loop.time() - t0)

    def _drain_one(self, session) -> None:
        if session.closed:
            return
        try:
            session.drain()
        except Exception:  # noqa: BLE001 - one broken session never stops the drain
            log.exception("drain of a %s session failed", type(session).__name__)
            session.abort()

    async def stop(self) -> None:
        for server in self.servers:
            server.close()
        for t in self._tasks:
            t.cancel()
        self.dashboard.close()
        self.hub.close_all()
        for state in self.states:
            for proto in list(state.all_conns):
                proto.close()
        # Kafka client threads may sit in a blocking librdkafka call (bounded, ~2 s): stop them together
        await asyncio.gather(*(c.stop() for c in (self.kafka, self.proxy, self.cluster) if c is not None))
        await self.auth.close()
        for server in self.servers:
            try:
                await asyncio.wait_for(server.wait_closed(), 2.0)
            except (asyncio.TimeoutError, Exception):  # noqa: BLE001
                pass


def kafka_reached(kafka: Any) -> bool:
    """The Kafka source has reached its brokers at least once (a later outage keeps the node ready:
    HTTP-submitted events and connections still work, and every node would be pulled at once)."""
    reached = getattr(kafka, "reached", None)
    if reached is not None:
        return bool(reached)
    return kafka.health().get("state") == "connected"


def settle_gc() -> None:
    """Once listening: what start-up allocated (modules, settings, the gateway) moves out of the
    cyclic collector's reach (gc.freeze), so its collections scan only what requests and
    connections made. The collection thresholds stay CPython's: a higher one held cyclic garbage
    of refused requests longer (+25 MB RSS over 500 refused 15 KB connects)."""
    gc.collect()
    gc.freeze()


class _NoTransportMap(weakref.WeakValueDictionary):
    """What uvloop's transport map becomes under :func:`untrack_transports`: it keeps nothing."""

    def __setitem__(self, fd, transport) -> None:
        pass


def untrack_transports(loop: asyncio.AbstractEventLoop) -> bool:
    """Stop uvloop from recording every transport by its file descriptor (docs/targets.md T3).

    uvloop's loop keeps each transport in a private ``WeakValueDictionary`` (fd -> transport)
    for one purpose: ``add_reader``/``add_writer``/``remove_*`` refuse a descriptor that a live
    transport owns. The entry costs ~150 bytes per connection (a weak reference with its key, an
    int, a dict slot), about a tenth of an idle connection. The gateway never watches a
    connection's descriptor itself, so that map is made to keep nothing (its class swapped for
    one whose ``__setitem__`` drops the entry); the check then finds no owner, as for any
    descriptor. True when a map was found; asyncio's own loop is left as it is (False).
    """
    found = False
    if not type(loop).__module__.startswith("uvloop"):
        return found
    for obj in gc.get_referents(loop):
        if type(obj) is weakref.WeakValueDictionary:
            obj.__class__ = _NoTransportMap
            found = True
    return found


async def serve(cfg, resolved: Resolved | None = None) -> int:
    """Run one gateway process until SIGTERM (drain, then stop) or SIGINT (stop at once)."""
    gw = None
    untrack_transports(asyncio.get_running_loop())
    try:
        gw = Gateway(cfg, resolved)
        await gw.start()
    except ConfigError as exc:
        log.error("configuration error: %s", exc)
        if gw is not None:
            await gw.stop()
        return CONFIG_EXIT_CODE
    settle_gc()
    got: list[int] = []
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal(sig: int) -> None:
        got.append(sig)
        stop.set()
        if len(got) > 1 and drain_task is not None:
            drain_task.cancel()  # a second signal cuts the drain short

    drain_task: asyncio.Task | None = None
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    await stop.wait()
    if got[0] == signal.SIGTERM and cfg.drain_s > 0:
        log.info("rigfast worker %s: SIGTERM, draining", gw.worker_id)
        drain_task = loop.create_task(gw.drain(cfg.drain_s))
        try:
            await drain_task
        except asyncio.CancelledError:
            log.warning("rigfast worker %s: drain cut short by a second signal", gw.worker_id)
    log.info("rigfast worker %s stopping", gw.worker_id)
    gw.draining = True
    await gw.stop()
    return 0


def run(cfg, resolved: Resolved | None = None) -> int:
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop is a dependency; asyncio still works
        log.warning("uvloop not available; using the default asyncio loop")
    return asyncio.run(serve(cfg, resolved))
