"""The gateway process: listening sockets, hub, sources, periodic work, shutdown."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from typing import Any

import orjson

from rigfast import metrics
from rigfast.api.inbound import InboundApi
from rigfast.api.internal import InternalApi
from rigfast.cloudevents import make_event
from rigfast.errors import CONFIG_EXIT_CODE, BadRequest, ConfigError, Gone, NotFound, RigError
from rigfast.hub.hub import KIND_NAMES, SSE, WS, Hub
from rigfast.net.protocol import HttpProtocol, ServerState
from rigfast.preflight import Resolved, listening_plan, resolve

log = logging.getLogger("rigfast")

SWEEP_INTERVAL_S = 1.0


class Gateway:
    def __init__(self, cfg, resolved: Resolved | None = None):
        """``resolved``: what :func:`rigfast.preflight.resolve` built from ``cfg`` (built here when None)."""
        resolved = resolved or resolve(cfg)
        self.cfg = cfg
        self.tls = resolved.tls
        self.worker_id = cfg.worker_index
        self.pid = os.getpid()
        self.token_prefix = ""
        self.loop = asyncio.get_event_loop()
        self.hub = Hub(cfg.extractors, self.loop, cfg.history_size, cfg.history_age_s)
        self.auth = resolved.auth
        self.auth.blacklist.on_add(self.kill_session)
        self.kafka: Any = None
        from rigfast.proxy.gateway import Proxy

        self.proxy: Any = Proxy(self)  # reverse proxy: PROXY_CONFIG_FILE and /v3/apis
        self.inbound = InboundApi(self)
        self.internal = InternalApi(self)
        self.cluster: Any = None  # other workers / nodes (rigfast.cluster): on with several workers or Kafka
        from rigfast.cluster.naming import enabled

        if enabled(cfg):
            from rigfast.cluster.node import Cluster

            self.cluster = Cluster(self)
        self.servers: list[asyncio.AbstractServer] = []
        self.states: list[ServerState] = []
        self._tasks: list[asyncio.Task] = []
        self._register_gauges()

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
            from rigfast.sources.kafka import KafkaSource

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
        if self.kafka is not None:
            await self.kafka.stop()
        await self.proxy.stop()
        if self.cluster is not None:
            await self.cluster.stop()
        await self.auth.close()
        for server in self.servers:
            try:
                await asyncio.wait_for(server.wait_closed(), 2.0)
            except (asyncio.TimeoutError, Exception):  # noqa: BLE001
                pass

    # -- blacklist ------------------------------------------------------------
    def kill_session(self, session_id: str) -> None:
        """End every live connection of a blacklisted session."""
        for s in [s for s in self.hub.sessions.values() if session_id in s.session_ids]:
            if s.kind == SSE:
                ev = make_event("rig.session_killed", {"session_id": session_id})
                s.close(self.hub.encode(SSE, ev, with_id=False))
            elif s.kind == WS:
                s.close_with(1000, "Session killed.")
            else:
                s.abort()

    def blacklist_api(self, proto, req, sid: str) -> None:
        bl = self.auth.blacklist
        if req.method == "POST" and not sid:
            try:
                body = orjson.loads(req.body)
            except orjson.JSONDecodeError as exc:
                raise BadRequest(f"body is not valid JSON: {exc}") from None
            if not isinstance(body, dict):
                raise BadRequest('body must be an object like {"sessionId": "...", "validityInSeconds": 60}')
            session_id = body.get("sessionId")
            validity = body.get("validityInSeconds")
            if not isinstance(session_id, str) or not session_id:
                raise BadRequest("sessionId must be a non-empty string")
            if isinstance(validity, str) and validity.isdigit():
                validity = int(validity)
            if not isinstance(validity, (int, float)) or isinstance(validity, bool) or validity <= 0:
                raise BadRequest("validityInSeconds must be a positive number")
            bl.add(session_id, float(validity))
            proto.respond(req, 201, orjson.dumps({"sessionId": session_id, "validityInSeconds": validity}), b"application/json")
            return
        if req.method == "GET" and sid:
            if bl.contains(sid):
                proto.respond(req, 200, orjson.dumps({"sessionId": sid, "expiresInSeconds": bl.expires_in(sid)}), b"application/json")
                return
            raise NotFound(f"session {sid!r} is not blacklisted")
        raise RigError("method not allowed: POST /v3/session-blacklist or GET /v3/session-blacklist/{sessionId}", 405)

    # -- cluster hooks (single process: nothing elsewhere) ----------------------
    def forward_subscriptions(self, proto, req, token: str, manual) -> Any:
        if self.cluster is not None:
            return self.cluster.forward_subscriptions(proto, req, token, manual)
        raise Gone("the connection no longer exists")


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
