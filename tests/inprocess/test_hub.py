"""The hub in process: SSE and long-polling sessions on fake transports, fan-out, ids, resume, blacklist."""

from __future__ import annotations

import json
from urllib.parse import quote

from tests.inprocess.harness import http_request, parse_responses


def sse(g, subscriptions: list, headers: dict | None = None):
    """An SSE connection; returns (client, its connection token)."""
    c = g.client()
    c.send(http_request("GET", "/_rig/v1/connection/sse?subscriptions=" + quote(json.dumps(subscriptions)), headers=headers))
    g.settle()
    out = c.read()
    assert out.startswith(b"HTTP/1.1 200"), out[:200]
    frames = sse_frames(out.partition(b"\r\n\r\n")[2])
    assert [f["event"] for f in frames] == ["rig.connection.create", "rig.subscriptions_set"]
    return c, json.loads(frames[0]["data"])["data"]["connection_token"]


def sse_frames(data: bytes) -> list[dict]:
    out = []
    for block in data.decode().split("\n\n"):
        if not block or block.startswith(":"):
            continue
        fields = {}
        for line in block.split("\n"):
            k, _, v = line.partition(":")
            fields[k] = v.lstrip(" ")
        out.append(fields)
    return out


def publish(g, event: dict) -> None:
    c = g.client()
    c.send(http_request("POST", "/_rig/v1/events", json.dumps(event).encode(), {"content-type": "application/json"}))
    assert parse_responses(c.read())[0][0] == 202
    g.settle()


def ev(etype: str, eid: str, **data) -> dict:
    return {"specversion": "1.0", "type": etype, "source": "t", "id": eid, "data": data}


def test_event_reaches_subscribers_of_its_type_only(make_gateway):
    g = make_gateway()
    a, _ = sse(g, [{"eventType": "greeting"}])
    b, _ = sse(g, [{"eventType": "other"}])
    publish(g, ev("greeting", "1", name="x"))
    frames = sse_frames(a.read())
    assert [(f["event"], json.loads(f["data"])["id"]) for f in frames] == [("greeting", "1")]
    assert frames[0]["id"]  # published events carry an id: line (resume id)
    assert b.read() == b""


def test_broadcast_writes_each_session_once_per_flush(make_gateway):
    """Two events published before the loop runs leave in one write per session, in order."""
    g = make_gateway()
    clients = [sse(g, [{"eventType": "greeting"}])[0] for _ in range(20)]
    writes_before = [c.transport.written for c in clients]
    for i in range(2):
        c = g.client()
        c.send(http_request("POST", "/_rig/v1/events", json.dumps(ev("greeting", str(i))).encode(),
                            {"content-type": "application/json"}))
    g.settle()
    for c, before in zip(clients, writes_before):
        data = c.read()
        assert [json.loads(f["data"])["id"] for f in sse_frames(data)] == ["0", "1"]
        assert c.transport.written - before == len(data)


def test_resume_with_last_event_id(make_gateway):
    """A reconnect with Last-Event-ID gets what it missed, from the history, for its subscriptions."""
    g = make_gateway()
    a, _ = sse(g, [{"eventType": "greeting"}])
    publish(g, ev("greeting", "1"))
    first = sse_frames(a.read())[0]["id"]
    publish(g, ev("greeting", "2"))
    publish(g, ev("other", "3"))
    b = g.client()
    b.send(http_request("GET", '/_rig/v1/connection/sse?subscriptions=[{"eventType":"greeting"}]',
                        headers={"last-event-id": first}))
    g.settle()
    frames = sse_frames(b.read().partition(b"\r\n\r\n")[2])
    assert [f["event"] for f in frames] == ["rig.connection.create", "rig.subscriptions_set", "greeting"]
    assert json.loads(frames[2]["data"])["id"] == "2"


def test_unknown_last_event_id_gets_a_gap_event(make_gateway):
    g = make_gateway()
    b = g.client()
    b.send(http_request("GET", '/_rig/v1/connection/sse?subscriptions=[{"eventType":"greeting"}]',
                        headers={"last-event-id": "nope-1"}))
    g.settle()
    assert "rig.history_gap" in [f["event"] for f in sse_frames(b.read().partition(b"\r\n\r\n")[2])]


def test_put_subscriptions_replaces_them(make_gateway):
    g = make_gateway()
    a, token = sse(g, [{"eventType": "greeting"}])
    c = g.client()
    c.send(http_request("PUT", f"/_rig/v1/connection/sse/{token}/subscriptions",
                        json.dumps({"subscriptions": [{"eventType": "other"}]}).encode(), {"content-type": "application/json"}))
    g.settle()
    assert parse_responses(c.read())[0][0] == 204
    assert [f["event"] for f in sse_frames(a.read())] == ["rig.subscriptions_set"]
    publish(g, ev("greeting", "1"))
    publish(g, ev("other", "2"))
    assert [json.loads(f["data"])["id"] for f in sse_frames(a.read())] == ["2"]


def test_put_subscriptions_for_an_unknown_token_is_410(make_gateway):
    g = make_gateway()
    c = g.client()
    c.send(http_request("PUT", "/_rig/v1/connection/sse/unknown-token-123/subscriptions",
                        b'{"subscriptions": []}', {"content-type": "application/json"}))
    assert parse_responses(c.read())[0][0] == 410


def test_disconnect_unregisters(make_gateway):
    g = make_gateway()
    a, token = sse(g, [{"eventType": "greeting"}])
    assert g.gw.hub.counts[0] == 1
    a.lose()
    assert g.gw.hub.counts[0] == 0 and token not in g.gw.hub.by_token
    publish(g, ev("greeting", "1"))  # nobody left to write to: no error


def test_blacklisting_a_session_ends_its_connections(make_gateway):
    """A blacklisted session's SSE connection gets rig.session_killed and is closed; others stay."""
    import time

    import jwt as pyjwt

    g = make_gateway(JWT_SECRET_KEY="in-process-secret-0123456789abcdef")
    tok = pyjwt.encode({"exp": int(time.time()) + 60, "jti": "s1"}, "in-process-secret-0123456789abcdef", algorithm="HS256")
    a, _ = sse(g, [{"eventType": "greeting"}], headers={"authorization": f"Bearer {tok}"})
    b, _ = sse(g, [{"eventType": "greeting"}])
    c = g.client(internal=True)
    c.send(http_request("POST", "/v3/session-blacklist", b'{"sessionId": "s1", "validityInSeconds": 60}',
                        {"content-type": "application/json"}))
    assert parse_responses(c.read())[0][0] == 201
    assert [f["event"] for f in sse_frames(a.read())] == ["rig.session_killed"]
    assert a.closed and not b.closed


def test_long_polling_buffers_between_polls(make_gateway, loop):
    """A long-poll session collects events between polls; a poll gets what came after its last_event_id
    cookie (the same again with an old cookie); a waiting poll is answered when one arrives."""
    g = make_gateway()
    c = g.client()
    c.send(http_request("GET", '/_rig/v1/connection/longpolling?subscriptions=[{"eventType":"greeting"}]'))
    g.settle()
    status, headers, body = parse_responses(c.read())[0]
    assert status == 200 and body == b'"ok"'
    cookie = next(iter(g.gw.hub.by_token))  # the one session's token (the connection_token cookie)
    poll = http_request("GET", "/_rig/v1/connection/longpolling", headers={"cookie": f"connection_token={cookie}"})
    c.send(poll)
    g.settle()
    first = json.loads(parse_responses(c.read())[0][2])  # the greeting waited in the buffer
    assert [e["type"] for e in first["events"]] == ["rig.connection.create", "rig.subscriptions_set"]
    c.send(poll)  # no last_event_id cookie: "first_event", so the same events again (a read cursor)
    g.settle()
    assert json.loads(parse_responses(c.read())[0][2])["events"] == first["events"]
    cursor = quote(json.dumps(first["last_event_id"]))
    poll = http_request("GET", "/_rig/v1/connection/longpolling",
                        headers={"cookie": f"connection_token={cookie}; last_event_id={cursor}"})
    c.send(poll)
    g.settle()
    assert c.read() == b""  # parked: nothing after the cursor yet
    publish(g, ev("greeting", "7"))
    answer = json.loads(parse_responses(c.read())[0][2])
    assert [e["id"] for e in answer["events"]] == ["7"] and answer["last_event_id"]


def test_deliveries_and_drops_are_counted(make_gateway):
    """A flush's deliveries (per source and transport, per type), the events nobody wanted and the delivery
    latency observations, as /metrics reports them."""
    g = make_gateway()
    m = g.rf.hub.metrics

    def snapshot() -> list:
        lat = m.DELIVERY_LATENCY.series.get(("http",))
        return [m.EVENTS_DELIVERED.get("http", "sse"), m.DELIVERED_BY_TYPE.get("greeting"),
                m.EVENTS_DROPPED.get("http"), sum(lat.counts) if lat else 0]

    sse(g, [{"eventType": "greeting"}])
    sse(g, [{"eventType": "greeting"}])
    before = snapshot()
    publish(g, ev("greeting", "1", name="x"))
    publish(g, ev("nobody.listens", "2"))
    assert [x - y for x, y in zip(snapshot(), before)] == [2, 2, 1, 1]


def test_count_adds_in_place_and_keeps_the_label_bound(rf):
    c = rf.hub.metrics.Counter("t_total", "t", ("type",), max_labels=2)
    for label, n in (("a", 2), ("a", 3), ("b", 1), ("c", 4), ("d", 1), ("b", 1)):
        rf.hub.count(c, n, (label,))
    assert c.values == {("a",): 5, ("b",): 2, ("other",): 5}
