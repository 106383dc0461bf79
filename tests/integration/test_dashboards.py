"""What the Grafana dashboards query is what /metrics exports, with those labels, on a node of two
workers, whichever worker answers; /health?detailed describes the whole node too.

The queries of RIG's own dashboards (RIG's repository, monitoring/metrics/dashboards/*.json) are
written down here as facts: the metric each query names, the labels it groups by or selects on,
and the label values it selects. rigfast's dashboard (deploy/grafana/rigfast.json) is read from
the file, and its facts are listed here too, so the two cannot drift apart unnoticed.
"""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import start_gateway
from tests.helpers import T, free_port, make_event, open_sse, publish_ok, uid, wait_until

ROOT = Path(__file__).resolve().parents[2]

# (dashboard, metric sample name, labels used by the query, label values selected)
RIG_DASHBOARD_FACTS = [
    ("events.json", "rig_consumed_events_total", {"topic", "source"}, {}),
    ("events.json", "rig_consumed_events_forwarded_total", {"type"}, {}),
    ("events.json", "rig_consumed_events_failed_total", {"topic", "source"}, {}),
    ("events.json", "rig_consumed_event_processing_duration_milliseconds_bucket", {"le", "source"}, {}),
    ("events.json", "rig_produced_events_total", {"topic", "target"}, {}),
    ("events.json", "rig_produced_events_failed_total", {"topic", "target"}, {}),
    ("proxy.json", "rig_proxy_requests_total", {"status", "response_from", "target"}, {"status": "ok"}),
    ("subscriptions.json", "rig_subscriptions_total", set(), {}),
    ("subscriptions.json", "rig_distributed_set_items_total", {"name"}, {"name": "Elixir.SessionBlacklist"}),
    ("subscriptions.json", "rig_distributed_set_items_current", {"name"}, {"name": "Elixir.SessionBlacklist"}),
    ("resources.json", "erlang_vm_memory_bytes_total", {"kind"}, {}),
    ("resources.json", "erlang_vm_port_count", set(), {}),
    ("resources.json", "erlang_vm_port_limit", set(), {}),
]
# resources.json's CPU panel reads container_cpu_usage_seconds_total{container="reactive-interaction-gateway"}:
# cAdvisor's (the container runtime's) metric, which no gateway exports; rigfast has process_cpu_seconds_total.
NOT_FROM_THE_GATEWAY = {"container_cpu_usage_seconds_total"}

# rigfast's own dashboard: metric sample name -> labels its queries use
RIGFAST_DASHBOARD_FACTS = {
    "rig_connections": {"transport", "worker"},
    "rig_events_received_total": {"source"},
    "rig_events_delivered_total": {"transport"},
    "rig_delivery_latency_seconds_bucket": {"le"},
    "rig_http_request_duration_seconds_bucket": {"le", "port"},
    "rig_kafka_consumer_lag": {"worker"},
    "rig_slow_consumer_disconnects_total": {"transport"},
    "rig_proxy_requests_total": {"code"},
    "rig_http_requests_rejected_total": {"status"},
    "rig_events_dropped_total": {"source"},
    "rig_events_invalid_total": {"source"},
    "rig_cluster_events_in_total": {"via"},
    "rig_subscriptions": set(),
    "rig_blacklist_size": set(),
    "process_cpu_seconds_total": {"worker"},
    "process_resident_memory_bytes": {"worker"},
    "process_open_fds": {"worker"},
    "process_max_fds": set(),
}
# series that exist only once something happened (a slow client, an invalid event, a relay, a 4xx)
RIGFAST_EVENT_DRIVEN = {"rig_slow_consumer_disconnects_total", "rig_events_invalid_total", "rig_cluster_events_in_total",
                        "rig_http_requests_rejected_total"}


def samples(text: str) -> dict[str, list]:
    out: dict[str, list] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, []).append(s)
    return out


def dashboard_metrics(path: Path) -> set[str]:
    names = set()
    for panel in json.loads(path.read_text())["panels"]:
        for t in panel.get("targets", ()):
            names.update(re.findall(r"\b((?:rig|process|erlang_vm)_[a-z_]+)\b", t["expr"]))
    return names


class _Ok(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server's naming
        self.send_response(200)
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def node():
    upstream = ThreadingHTTPServer(("127.0.0.1", 0), _Ok)
    thread = threading.Thread(target=upstream.serve_forever, daemon=True)
    thread.start()
    apis = [{"id": "dash", "name": "dash", "proxy": {"target_url": "127.0.0.1", "port": upstream.server_port,
                                                     "use_env": False},
             "version_data": {"default": {"endpoints": [
                 {"id": "e", "method": "GET", "path_regex": "/dash/.*"},
                 {"id": "k", "method": "POST", "path_regex": "/dash-kafka", "target": "kafka", "topic": "dash-topic"}]}}}]
    # Kafka configured (so the proxy's Kafka endpoint is valid) but absent: nothing here needs it
    gw = start_gateway(RIGFAST_WORKERS="2", PROXY_CONFIG_FILE=json.dumps(apis), KAFKA_BROKERS=f"127.0.0.1:{free_port()}",
                       RIGFAST_CLUSTER_TOPIC="", KAFKA_RESTART_DELAY_MS="1000")
    yield gw
    gw.stop()
    upstream.shutdown()
    upstream.server_close()
    thread.join(T)


def test_rig_and_rigfast_dashboard_queries_name_exported_metrics_with_their_labels(node):
    etype = uid("dash")
    # traffic, so that the labelled series exist: a delivery (HTTP source), a proxied request, a ban
    with open_sse(node.inbound, [{"eventType": etype}]) as s:
        s.expect_handshake()
        publish_ok(node.inbound, make_event(etype, {"x": 1}))
        s.next_event()
    assert httpx.get(node.inbound + "/dash/x", timeout=T).status_code == 200  # status="ok"
    httpx.get(node.inbound + "/nothing-here", timeout=T)  # 404, status="not_found"
    httpx.post(node.api + "/v3/session-blacklist", json={"sessionId": uid("s"), "validityInSeconds": 60}, timeout=T)
    publish_ok(node.inbound, make_event(uid("nobody"), {"x": 1}))  # matches no subscription: dropped

    def scrape() -> dict:
        return samples(httpx.get(node.api + "/metrics", timeout=T).text)

    # the latency histogram is observed once the frames are written, the drop once the unwanted event's
    # fan-out ran: wait for both on the node's scrape
    def observed() -> dict | None:
        m = scrape()
        return m if m.get("rig_delivery_latency_seconds_bucket") and m.get("rig_events_dropped_total") else None

    got = wait_until(observed, what="delivery latency and a dropped event observed")
    # RIG's dashboards
    for dash, name, labels, selected in RIG_DASHBOARD_FACTS:
        assert name in got, f"{dash}: {name} not exported"
        usable = [s for s in got[name] if labels <= set(s.labels)]
        assert usable, f"{dash}: {name} has no series with labels {labels}: {got[name][:3]}"
        for k, v in selected.items():
            assert any(s.labels.get(k) == v for s in usable), f"{dash}: no {name}{{{k}={v!r}}}"
    assert not NOT_FROM_THE_GATEWAY & set(got)
    # rigfast's dashboard: the facts are its queries, and they are exported
    assert dashboard_metrics(ROOT / "deploy" / "grafana" / "rigfast.json") == set(RIGFAST_DASHBOARD_FACTS)
    for name, labels in RIGFAST_DASHBOARD_FACTS.items():
        if name in RIGFAST_EVENT_DRIVEN and name not in got:
            continue
        assert name in got, f"rigfast.json: {name} not exported"
        assert any(labels <= set(s.labels) for s in got[name]), f"rigfast.json: {name} lacks {labels}"
    # the whole node, whichever worker answers: both workers' series (and the reader's process), every time
    for _ in range(4):
        m = scrape()
        assert {s.labels["worker"] for s in m["rig_connections"]} == {"0", "1"}
        assert {s.labels["worker"] for s in m["process_resident_memory_bytes"]} == {"0", "1", "reader"}


def test_detailed_health_describes_every_worker(node):
    for _ in range(4):  # new connections: either worker may answer
        h = httpx.get(node.api + "/health?detailed", timeout=T).json()
        assert h["workers_answering"] == 2
        assert sorted(w["worker"] for w in h["workers"]) == [0, 1]
        assert h["connections"]["sse"] == sum(w["connections"]["sse"] for w in h["workers"])
    local = httpx.get(node.api + "/health?detailed&local", timeout=T).json()
    assert "workers" not in local and local["worker"] in (0, 1)
