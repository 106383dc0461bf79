"""The gateway process, its composition root: components wired, listening sockets, periodic work, shutdown."""

from __future__ import annotations

import asyncio
import logging
import signal

from rigfast import metrics
from rigfast.api.inbound import InboundApi
from rigfast.api.internal import InternalApi
from rigfast.cluster.naming import default_node_id
from rigfast.cluster.naming import enabled as cluster_enabled
from rigfast.cluster.node import Cluster
from rigfast.cluster.wire import token_prefix
from rigfast.errors import CONFIG_EXIT_CODE, ConfigError
from rigfast.hub.hub import KIND_NAMES, Hub
from rigfast.ids import TokenIssuer
from rigfast.net.protocol import HttpProtocol, ServerState
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
        self.hub = hub = Hub(cfg.extractors, self.loop, cfg.history_size, cfg.history_age_s)
        self.auth = auth = resolved.auth
        auth.blacklist.on_add(hub.kill_session)
        self.kafka: KafkaSource | None = None  # the event source, started with the gateway
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
        self.inbound = InboundApi(cfg, hub, auth, tokens, self.proxy.handle, self.cluster)
        self.internal = InternalApi(hub, auth.blacklist, self.inbound.submit, self.proxy, self.cluster,
                                    self._kafka_health, cfg.worker_index)
        self.servers: list[asyncio.AbstractServer] = []
        self.states: list[ServerState] = []
        self._tasks: list[asyncio.Task] = []
        self._register_gauges()

    def _kafka_health(self) -> dict:
        return self.kafka.health() if self.kafka is not None else {"state": "disabled"}

    def _register_gauges(self) -> None:
        hub = self.hub
        metrics.REGISTRY.gauge(
            "rig_connections", "Open frontend connections", lambda: {KIND_NAMES[i]: hub.counts[i] for i in range(3)}, ("transport",)
        )
        metrics.REGISTRY.gauge("rig_subscriptions", "Subscriptions held", lambda: hub.index.subscription_count)
        metrics.REGISTRY.gauge("rig_blacklist_size", "Blacklisted sessions", lambda: len(self.auth.blacklist))

    # -- lifecycle ------------------------------------------------------------
    async def start(self) -> None:
        cfg = self.cfg
        tls = self.tls
        if self.cluster is not None:
            await self.cluster.start()
        await self.proxy.start()
        # the public port answers errors with the CORS header too, so browsers can read them
        inbound_errors = [(b"access-control-allow-origin", cfg.cors.encode())]
        for env, host, port, with_tls in listening_plan(cfg):
            public = env.startswith("INBOUND")
            router, error_headers = (self.inbound, inbound_errors) if public else (self.internal, ())
            state = ServerState(cfg, router, error_headers)
            self.states.append(state)
            factory = lambda state=state: HttpProtocol(state)  # noqa: E731
            try:
                server = await self.loop.create_server(
                    factory, host, port, ssl=tls if with_tls else None, backlog=4096, reuse_address=True,
                    reuse_port=cfg.worker_count > 1 or None,
                )
            except OSError as exc:
                raise ConfigError(f"{env}={port}: cannot listen on {host}:{port}: {exc.strerror or exc}") from None
            self.servers.append(server)
        if cfg.kafka_brokers:
            self.kafka = KafkaSource(cfg, self.loop, self.hub.publish_batch)
            self.kafka.start()
        self._tasks.append(self.loop.create_task(self._every(SWEEP_INTERVAL_S, self._sweep)))
        self._tasks.append(self.loop.create_task(self._every(cfg.heartbeat_interval_s, self.hub.heartbeat)))
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

    async def stop(self) -> None:
        for server in self.servers:
            server.close()
        for t in self._tasks:
            t.cancel()
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


async def serve(cfg, resolved: Resolved | None = None) -> int:
    """Run one gateway process until SIGTERM/SIGINT."""
    gw = None
    try:
        gw = Gateway(cfg, resolved)
        await gw.start()
    except ConfigError as exc:
        log.error("configuration error: %s", exc)
        if gw is not None:
            await gw.stop()
        return CONFIG_EXIT_CODE
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("rigfast worker %s stopping", gw.worker_id)
    await gw.stop()
    return 0


def run(cfg, resolved: Resolved | None = None) -> int:
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop is a dependency; asyncio still works
        log.warning("uvloop not available; using the default asyncio loop")
    return asyncio.run(serve(cfg, resolved))
