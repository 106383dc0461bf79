"""Readiness: GET /health/ready (internal) and /_rig/health/ready (public) answer 503 until the node
can serve (Kafka reached where configured, cluster links up, blacklist read), 200 after; /health
stays liveness (200 while the process runs). The drain's 503 is in test_drain.py."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import start_gateway
from tests.helpers import T, free_port, wait_until
from tests.tansu import TansuBroker


def ready(base: str, path: str = "/health/ready") -> httpx.Response:
    return httpx.get(base + path, timeout=T)


def test_ready_without_kafka_on_both_ports(gateway):
    for base, path in ((gateway.api, "/health/ready"), (gateway.inbound, "/_rig/health/ready")):
        r = ready(base, path)
        assert r.status_code == 200
        assert r.json() == {"ready": True, "worker": 0, "checks": {"listening": True, "not_draining": True}}
        head = httpx.head(base + path, timeout=T)
        assert head.status_code == 200 and head.content == b""


@pytest.mark.kafka
def test_not_ready_until_kafka_is_reached_then_ready():
    port = free_port()
    gw = start_gateway(KAFKA_BROKERS=f"127.0.0.1:{port}", KAFKA_RESTART_DELAY_MS="200")
    broker = None
    try:
        r = ready(gw.api)
        assert r.status_code == 503
        checks = r.json()["checks"]
        assert checks["kafka_reached"] is False and checks["cluster_linked"] is False
        assert ready(gw.inbound, "/_rig/health/ready").status_code == 503
        assert httpx.get(gw.api + "/health", timeout=T).status_code == 200  # alive all the same
        broker = TansuBroker(port=port).start()
        wait_until(lambda: ready(gw.api).status_code == 200, timeout=6 * T, what="ready once Kafka is up")
        assert ready(gw.api).json()["checks"] == {"listening": True, "not_draining": True, "kafka_reached": True,
                                                  "cluster_linked": True}
    finally:
        gw.stop()
        if broker is not None:
            broker.stop()


def test_several_workers_ready_once_linked():
    gw = start_gateway(RIGFAST_WORKERS="2")
    seen: set = set()

    def both_ready() -> bool:
        r = ready(gw.api)  # a new connection each time: SO_REUSEPORT spreads them over the workers
        if r.status_code == 200:
            seen.add(r.json()["worker"])
        return seen == {0, 1}

    try:
        wait_until(both_ready, timeout=3 * T, what="both workers ready")
        # once both are linked, whichever worker answers stays ready
        for _ in range(6):
            r = ready(gw.api)
            assert r.status_code == 200 and r.json()["checks"]["cluster_linked"] is True
    finally:
        gw.stop()


def _by_worker(get, workers: int = 2) -> dict[int, dict]:
    """One answer of each worker (fresh connections spread over them by SO_REUSEPORT); bounded."""
    seen: dict[int, dict] = {}

    def all_seen() -> bool:
        body = get()
        seen.setdefault(body["worker"], body)
        return len(seen) == workers

    wait_until(all_seen, timeout=3 * T, what="an answer from every worker")
    return seen


def _kafka_connected(api: str) -> dict[str, float]:
    """rig_kafka_connected per worker label, from the node's merged /metrics."""
    text = httpx.get(api + "/metrics", timeout=T).text
    out = {}
    for line in text.splitlines():
        if line.startswith("rig_kafka_connected{"):
            labels, _, value = line.rpartition(" ")
            out[labels[labels.index('worker="') + 8:].split('"', 1)[0]] = float(value)
    return out


@pytest.mark.kafka
def test_two_workers_follow_the_node_readers_kafka_state():
    """With 2 workers the node's reader holds the only consumer; its Kafka state reaches every worker:
    not ready (kafka_reached false) and rig_kafka_connected 0 while nothing listens on the brokers' port,
    then ready, connected 1 on both workers and /health?detailed showing connected once Tansu is there."""
    port = free_port()
    gw = start_gateway(RIGFAST_WORKERS="2", KAFKA_BROKERS=f"127.0.0.1:{port}", KAFKA_RESTART_DELAY_MS="200")
    broker = None
    try:
        # both workers linked to the reader and told its state: not reached
        def told(h: dict) -> bool:
            return h["kafka"].get("via") == "reader" and h["kafka"]["state"] != "unknown"

        wait_until(lambda: all(told(h) for h in _by_worker(
            lambda: httpx.get(gw.api + "/health?detailed", timeout=T).json()).values()),
            timeout=6 * T, what="both workers told the reader's Kafka state")
        for w, body in _by_worker(lambda: ready(gw.api).json()).items():
            assert body["ready"] is False and body["checks"]["kafka_reached"] is False, (w, body)
        assert ready(gw.api).status_code == 503
        assert _kafka_connected(gw.api) == {"0": 0.0, "1": 0.0}

        broker = TansuBroker(port=port).start()
        broker.create_topics(["rig"], partitions=1)

        def all_ready() -> bool:
            return all(b["ready"] for b in _by_worker(lambda: ready(gw.api).json()).values())

        wait_until(all_ready, timeout=8 * T, what="both workers ready once the reader reached Kafka")
        assert ready(gw.api).status_code == 200
        wait_until(lambda: _kafka_connected(gw.api) == {"0": 1.0, "1": 1.0}, timeout=4 * T,
                   what="rig_kafka_connected 1 on both workers")
        for w, h in _by_worker(lambda: httpx.get(gw.api + "/health?detailed", timeout=T).json()).items():
            k = h["kafka"]
            assert k["via"] == "reader" and k["state"] == "connected" and k["reached"] is True, (w, k)
            assert k["reader_connected"] is True
    finally:
        gw.stop()
        if broker is not None:
            broker.stop()
