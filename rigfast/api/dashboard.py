"""The live dashboard of the internal port: ``GET /dashboard`` (the page, a packaged asset: plain
SVG, no library, nothing fetched from elsewhere) and ``GET /dashboard/stream`` (Server-Sent
Events: one JSON snapshot of the whole node per second, which the page charts).

A snapshot holds, per worker: connections by transport, the running totals of events in,
deliveries out, slow-consumer disconnects and proxy requests, the Kafka lag, and the delivery
latency histogram's cumulative bucket counts; the page turns totals into rates and histogram
deltas into p50/p99. With several workers the answering worker asks the others over the bus
(as for /metrics); the snapshots are taken only while a dashboard is open.
"""

from __future__ import annotations

import asyncio
import logging
import time
from importlib import resources
from typing import Any, Callable

import orjson

from rigfast import metrics
from rigfast.hub.hub import KIND_NAMES
from rigfast.wire.http1 import encode_stream_head

log = logging.getLogger("rigfast.dashboard")

INTERVAL_S = 1.0
MAX_STREAMS = 32  # dashboards open at once per worker (each costs one node-wide snapshot a second)
PEER_TIMEOUT_S = 0.8


def page() -> bytes:
    return resources.files("rigfast.api").joinpath("dashboard.html").read_bytes()


def local_snapshot(hub: Any, worker: int, kafka_lag: Callable[[], float]) -> dict:
    lat = metrics.DELIVERY_LATENCY
    cum = [0] * (len(lat.bounds) + 1)
    for s in list(lat.series.values()):
        acc = 0
        for i, c in enumerate(s.counts):
            acc += c
            cum[i] += acc
    return {
        "worker": worker,
        "connections": {KIND_NAMES[i]: hub.counts[i] for i in range(len(KIND_NAMES))},
        "events_in": sum(metrics.EVENTS_RECEIVED.values.values()),
        "deliveries": sum(metrics.EVENTS_DELIVERED.values.values()),
        "slow_disconnects": sum(metrics.SLOW_CONSUMER_DISCONNECTS.values.values()),
        "proxy_requests": sum(metrics.PROXY_REQUESTS.values.values()),
        "kafka_lag": kafka_lag(),
        "latency_cum": cum,
    }


class _Stream:
    """What the HTTP protocol needs of a connection turned into a stream."""

    __slots__ = ("proto", "dash")

    def __init__(self, proto, dash: "Dashboard"):
        self.proto = proto
        self.dash = dash

    def data_received(self, data: bytes) -> None:
        pass

    def connection_lost(self) -> None:
        self.dash.streams.discard(self)

    def handle_slow_consumer(self) -> None:
        self.dash.streams.discard(self)
        self.proto.abort()


class Dashboard:
    def __init__(self, hub: Any, worker: int, cluster: Any, kafka_lag: Callable[[], float]):
        self.hub = hub
        self.worker = worker
        self.cluster = cluster
        self.kafka_lag = kafka_lag
        self.streams: set[_Stream] = set()
        self._task: asyncio.Task | None = None

    def snapshot(self) -> dict:
        return local_snapshot(self.hub, self.worker, self.kafka_lag)

    def serve_page(self, proto, req) -> None:
        proto.respond(req, 200, page(), b"text/html; charset=utf-8", [(b"cache-control", b"no-cache")])

    def serve_stream(self, proto, req) -> None:
        if len(self.streams) >= MAX_STREAMS:
            proto.respond(req, 503, b"too many dashboards open on this worker\n")
            return
        proto.write(encode_stream_head(200, [(b"content-type", b"text/event-stream; charset=utf-8"),
                                             (b"cache-control", b"no-cache")]))
        stream = _Stream(proto, self)
        proto.become_stream(stream)
        self.streams.add(stream)
        if self._task is None or self._task.done():
            self._task = asyncio.get_event_loop().create_task(self._run())

    async def node_snapshot(self) -> dict:
        workers = {self.worker: self.snapshot()}
        cluster = self.cluster
        if cluster is not None and cluster.bus is not None:
            peers = [j for j in range(cluster.count) if j != self.worker]
            replies = await asyncio.gather(*(cluster.ask(cluster.node, j, {"op": "dash"}, PEER_TIMEOUT_S) for j in peers))
            for j, rep in zip(peers, replies):
                if rep is not None and "snapshot" in rep:
                    workers[j] = rep["snapshot"]
        return {"t": time.time(), "bounds": list(metrics.DELIVERY_LATENCY.bounds),
                "workers": [workers[j] for j in sorted(workers)]}

    async def _run(self) -> None:
        while self.streams:
            try:
                frame = b"data: " + orjson.dumps(await self.node_snapshot()) + b"\n\n"
                for s in list(self.streams):
                    s.proto.write(frame)
            except Exception:  # noqa: BLE001 - the dashboard never takes the worker down
                log.exception("dashboard snapshot failed")
            await asyncio.sleep(INTERVAL_S)

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        for s in list(self.streams):
            s.proto.close()
        self.streams.clear()
