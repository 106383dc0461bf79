"""Operations: /health (plain and detailed), /metrics scraped with prometheus_client's parser, /openapi.json."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import T, LongPoll, make_event, open_sse, publish, uid

# Every metric family docs/protocol.md asks for (names as prometheus_client reports them: counters without _total).
REQUIRED_FAMILIES = {
    "rig_connections": ("gauge", {"transport"}),
    "rig_subscriptions": ("gauge", set()),
    "rig_events_received": ("counter", {"source"}),
    "rig_events_delivered": ("counter", {"source", "transport"}),
    "rig_events_dropped": ("counter", {"source"}),
    "rig_kafka_consumer_lag": ("gauge", set()),
    "rig_proxy_requests": ("counter", {"status"}),
    "rig_blacklist_size": ("gauge", set()),
}

# Every route the internal API answers (method, path as the OpenAPI document spells it).
INTERNAL_ROUTES = [
    ("get", "/health"),
    ("get", "/health/ready"),
    ("get", "/metrics"),
    ("get", "/openapi.json"),
    ("post", "/v3/messages"),
    ("post", "/v3/session-blacklist"),
    ("get", "/v3/session-blacklist/{sessionId}"),
    ("post", "/v2/session-blacklist"),
    ("get", "/v2/session-blacklist/{sessionId}"),
    ("get", "/v3/apis"),
    ("post", "/v3/apis"),
    ("get", "/v3/apis/{id}"),
    ("put", "/v3/apis/{id}"),
    ("delete", "/v3/apis/{id}"),
    ("post", "/v3/responses"),
    # /v2, as RIG's v2 controllers
    ("post", "/v2/messages"),
    ("get", "/v2/apis"),
    ("post", "/v2/apis"),
    ("get", "/v2/apis/{id}"),
    ("put", "/v2/apis/{id}"),
    ("delete", "/v2/apis/{id}"),
    ("post", "/v2/responses"),
]


@pytest.fixture(scope="module")
def gw():
    from tests.conftest import start_gateway

    g = start_gateway()
    yield g
    g.stop()


def scrape(gw) -> dict:
    r = httpx.get(gw.api + "/metrics", timeout=T)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    return {f.name: f for f in text_string_to_metric_families(r.text)}


def sample(fams: dict, family: str, name: str | None = None, **labels) -> float:
    """The value of one sample (0 when the labelled series does not exist yet)."""
    for s in fams[family].samples:
        if (name is None or s.name == name) and all(s.labels.get(k) == v for k, v in labels.items()):
            return s.value
    return 0.0


def test_health_plain(gw):
    """GET /health on the internal port and /_rig/health on the inbound port answer 200 OK."""
    for url in (gw.api + "/health", gw.inbound + "/_rig/health"):
        r = httpx.get(url, timeout=T)
        assert r.status_code == 200 and r.text.strip() == "OK"


def test_health_detailed(gw):
    """/health?detailed is JSON with uptime, connections by transport and the Kafka state."""
    with open_sse(gw.inbound) as s:
        s.expect_handshake()
        h = httpx.get(gw.api + "/health?detailed", timeout=T).json()
        assert h["status"] == "ok"
        assert h["uptime_s"] > 0
        assert h["connections"]["sse"] >= 1
        assert set(h["connections"]) == {"sse", "ws", "longpolling", "phoenix"}
        assert h["kafka"] == {"state": "disabled"}


def test_metrics_has_every_required_family(gw):
    """The scrape parses with prometheus_client and holds every family docs/protocol.md lists, with its labels."""
    fams = scrape(gw)
    for name, (kind, labels) in REQUIRED_FAMILIES.items():
        assert name in fams, f"missing metric family {name}; have {sorted(fams)}"
        assert fams[name].type == kind, (name, fams[name].type)
        for s in fams[name].samples:
            if labels is not None:
                assert set(s.labels) == labels, (name, s)
    assert sample(fams, "rig_kafka_consumer_lag") == 0
    assert {s.labels["transport"] for s in fams["rig_connections"].samples} == {"sse", "ws", "longpolling", "phoenix"}


def test_metrics_follow_traffic(gw):
    """Connections, subscriptions and received/delivered/dropped events (by source) move with the traffic."""
    etype = uid("metrics")
    before = scrape(gw)
    lp = LongPoll(gw.inbound)
    try:
        with open_sse(gw.inbound, [{"eventType": etype}]) as s:
            s.expect_handshake()
            assert lp.poll().status_code == 200
            during = scrape(gw)
            assert sample(during, "rig_connections", transport="sse") == sample(before, "rig_connections", transport="sse") + 1
            assert sample(during, "rig_connections", transport="longpolling") >= 1
            assert sample(during, "rig_subscriptions") >= sample(before, "rig_subscriptions") + 1
            assert publish(gw.inbound, make_event(etype, {"n": 1})).status_code == 202
            assert publish(gw.api, make_event(etype, {"n": 2}), path="/v3/messages").status_code == 202
            assert publish(gw.inbound, make_event(uid("nobody"))).status_code == 202
            s.next_event()
            s.next_event()
            after = scrape(gw)
    finally:
        lp.close()
    rcv = "rig_events_received_total"
    assert sample(after, "rig_events_received", rcv, source="http") == sample(before, "rig_events_received", rcv, source="http") + 2
    assert sample(after, "rig_events_received", rcv, source="api") == sample(before, "rig_events_received", rcv, source="api") + 1
    drop = "rig_events_dropped_total"
    assert sample(after, "rig_events_dropped", drop, source="http") == sample(before, "rig_events_dropped", drop, source="http") + 1
    dl = "rig_events_delivered_total"
    for source in ("http", "api"):
        assert sample(after, "rig_events_delivered", dl, source=source, transport="sse") == sample(
            before, "rig_events_delivered", dl, source=source, transport="sse") + 1


def test_rejections_counted_by_status(gw):
    """Refused requests are counted by status (e.g. a 404 on the internal port)."""
    name = "rig_http_requests_rejected_total"
    before = sample(scrape(gw), "rig_http_requests_rejected", name, status="404")
    assert httpx.get(gw.api + "/no-such-route", timeout=T).status_code == 404
    assert sample(scrape(gw), "rig_http_requests_rejected", name, status="404") == before + 1


# ------------------------------------------------------------------ OpenAPI


def test_openapi_document_valid_and_complete(gw):
    """GET /openapi.json is a valid OpenAPI 3 document describing every internal route."""
    r = httpx.get(gw.api + "/openapi.json", timeout=T)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    doc = r.json()
    assert doc["openapi"].startswith("3.")
    described = {(m, p) for p, ops in doc["paths"].items() for m in ops if m in ("get", "post", "put", "delete")}
    assert described == set(INTERNAL_ROUTES), (described ^ set(INTERNAL_ROUTES))
    try:
        from openapi_spec_validator import validate
    except ImportError:  # pragma: no cover - optional test dependency
        pytest.skip("openapi-spec-validator not installed")
    validate(doc)


@pytest.mark.parametrize("method, path", INTERNAL_ROUTES)
def test_every_described_route_is_answered(gw, method, path):
    """Each route of the document is routed by the internal port (never 'no route')."""
    url = gw.api + path.replace("{sessionId}", uid("sid")).replace("{id}", uid("api"))
    body = {"sessionId": uid("sid"), "validityInSeconds": 5} if "blacklist" in path else make_event(uid("oa"))
    if "/apis" in path:
        body = {"id": uid("api"), "version_data": {"default": {"endpoints": []}}}
    r = httpx.request(method.upper(), url, json=body if method in ("post", "put") else None, timeout=T)
    assert "no route" not in r.text
    # /v3 and /v2 responses for an unknown correlation id: 400 (none given) is still an answer of that route
    assert r.status_code in (200, 201, 202, 404) or (path.endswith("/responses") and r.status_code == 400), (r.status_code, r.text)
