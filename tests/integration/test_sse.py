"""Server-Sent Events transport: GET /_rig/v1/connection/sse."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.helpers import T, make_event, open_sse, publish_ok, uid


def test_sse_response_headers(gateway):
    """The SSE response is 200 text/event-stream, no-cache, with the CORS origin header."""
    with open_sse(gateway.inbound, headers={"origin": "http://example.test"}) as s:
        assert s.status_code == 200
        h = s.response.headers
        assert h["content-type"].split(";")[0].strip() == "text/event-stream"
        assert "charset=utf-8" in h["content-type"].replace(" ", "").lower()
        assert "no-cache" in h["cache-control"].lower()
        assert h["access-control-allow-origin"] == "*"


def test_sse_first_events_are_connection_create_then_subscriptions_set(gateway):
    """The stream starts with rig.connection.create (token, no errors), then rig.subscriptions_set."""
    with open_sse(gateway.inbound) as s:
        first = s.next_event()
        assert first.event == "rig.connection.create"
        ev = first.data
        assert ev["type"] == "rig.connection.create"
        assert ev["source"] == "rig"
        assert isinstance(ev["id"], str) and ev["id"]
        assert isinstance(ev["time"], str) and "T" in ev["time"]
        token = ev["data"]["connection_token"]
        assert isinstance(token, str) and token
        assert ev["data"]["errors"] == []
        second = s.next_event()
        assert second.event == "rig.subscriptions_set"
        assert second.data["type"] == "rig.subscriptions_set"
        assert second.data["source"] == "rig"
        assert second.data["data"] == []
        assert second.data["id"] != ev["id"]


def test_sse_frames_carry_id_line(gateway):
    """Every SSE event frame has an id: line."""
    etype = uid("sse-id")
    with open_sse(gateway.inbound, [{"eventType": etype}]) as s:
        s.expect_handshake()
        publish_ok(gateway.inbound, make_event(etype, {"n": 1}))
        ev = s.next_event()
        assert ev.event == etype
        assert "id" in ev.fields and ev.id


def test_sse_tokens_are_unique(gateway):
    """Two connections get different connection tokens."""
    with open_sse(gateway.inbound) as a, open_sse(gateway.inbound) as b:
        ta, _ = a.expect_handshake()
        tb, _ = b.expect_handshake()
        assert ta != tb


def test_sse_subscriptions_param_echoed(gateway):
    """The subscriptions query parameter shows up in rig.subscriptions_set."""
    subs = [{"eventType": "greeting", "oneOf": [{"name": "alice"}]}, {"eventType": uid("other"), "oneOf": []}]
    with open_sse(gateway.inbound, subs) as s:
        _, got = s.expect_handshake()
        assert sorted(got, key=lambda x: x["eventType"]) == sorted(subs, key=lambda x: x["eventType"])


def test_sse_delivers_published_event_as_published(gateway):
    """A published event arrives with event: <type> and the event JSON as data, unchanged."""
    etype = uid("sse-deliver")
    with open_sse(gateway.inbound, [{"eventType": etype}]) as s:
        s.expect_handshake()
        ev = make_event(etype, {"hello": "wörld", "n": [1, 2.5, None, True]}, myext="x-value", subject="subj")
        publish_ok(gateway.inbound, ev)
        got = s.next_event()
        assert got.event == etype
        assert got.data == ev


def test_sse_each_subscriber_gets_event_once(gateway):
    """Two subscribers of a type each receive one published event exactly once."""
    etype = uid("sse-twice")
    with open_sse(gateway.inbound, [{"eventType": etype}]) as a, open_sse(gateway.inbound, [{"eventType": etype}]) as b:
        a.expect_handshake()
        b.expect_handshake()
        e1 = make_event(etype, {"n": 1})
        e2 = make_event(etype, {"n": 2})
        publish_ok(gateway.inbound, e1)
        publish_ok(gateway.inbound, e2)
        for s in (a, b):
            assert s.next_event().data["id"] == e1["id"]
            assert s.next_event().data["id"] == e2["id"]


def test_sse_unsubscribed_type_not_delivered(gateway):
    """Events of a type the connection did not subscribe to are not delivered."""
    etype, other = uid("sse-yes"), uid("sse-no")
    with open_sse(gateway.inbound, [{"eventType": etype}]) as s:
        s.expect_handshake()
        publish_ok(gateway.inbound, make_event(other, {"n": 0}))
        sentinel = make_event(etype, {"n": 1})
        publish_ok(gateway.inbound, sentinel)
        assert s.next_event().data["id"] == sentinel["id"]


def test_sse_heartbeat_comment(gateway_factory):
    """With a short heartbeat interval, ': heartbeat' comments arrive on an idle stream."""
    gw = gateway_factory(RIGFAST_HEARTBEAT_INTERVAL_S="0.3")
    with open_sse(gw.inbound) as s:
        s.expect_handshake()
        comments = []
        for _ in range(2):
            item = s.next_item(timeout=T)
            assert item.kind == "comment", item
            comments.append(item.comment)
        assert all(c == "heartbeat" for c in comments), comments


@pytest.mark.parametrize("raw", ["not json", '{"eventType": "x"}', '[{"oneOf": []}]', "[1]"])
def test_sse_bad_subscriptions_400(gateway, raw):
    """Malformed subscriptions JSON answers 400 with a text body saying why."""
    r = httpx.get(gateway.inbound + "/_rig/v1/connection/sse", params={"subscriptions": raw}, timeout=T)
    assert r.status_code == 400, r.text
    assert r.text.strip()
    assert any(w in r.text.lower() for w in ("subscription", "json", "eventtype", "object", "list")), r.text


def test_sse_undefined_constraint_field_accepted_echoed_ignored(gateway):
    """RIG: a constraint on a field no extractor defines is accepted, echoed in rig.subscriptions_set and
    ignored when matching (here it sits next to the known field "name", which still filters)."""
    name, other = uid("name"), uid("other")
    subs = [{"eventType": "greeting", "oneOf": [{"name": name, "nosuchfield": "x"}]}]
    with open_sse(gateway.inbound, subs) as s:
        _, shown = s.expect_handshake()
        assert shown == subs
        publish_ok(gateway.inbound, make_event("greeting", {"name": other}))
        hit = make_event("greeting", {"name": name})  # no "nosuchfield" anywhere: still delivered
        publish_ok(gateway.inbound, hit)
        assert s.next_event().data["id"] == hit["id"]


def test_sse_resume_with_last_event_id(gateway):
    """Reconnecting with Last-Event-ID replays the events missed in between."""
    etype = uid("sse-resume")
    subs = [{"eventType": etype}]
    with open_sse(gateway.inbound, subs) as s:
        s.expect_handshake()
        e1 = make_event(etype, {"n": 1})
        publish_ok(gateway.inbound, e1)
        got1 = s.next_event()
        assert got1.data["id"] == e1["id"]
        last_id = got1.id
    e2 = make_event(etype, {"n": 2})
    publish_ok(gateway.inbound, e2)
    with open_sse(gateway.inbound, subs, headers={"last-event-id": last_id}) as s2:
        assert s2.status_code == 200
        seen = s2.events_until(lambda e: e.data and e.data.get("id") == e2["id"], timeout=T, limit=10)
        assert e1["id"] not in [e.data.get("id") for e in seen if e.data]


def test_sse_connection_rate_limit_429(gateway_factory):
    """Past MAX_CONNECTIONS_PER_MINUTE new connections, a connect answers 429 with a text body."""
    gw = gateway_factory(MAX_CONNECTIONS_PER_MINUTE="3")
    streams = []
    try:
        for _ in range(3):
            s = open_sse(gw.inbound)
            streams.append(s)
            s.expect_handshake()
        r = httpx.get(gw.inbound + "/_rig/v1/connection/sse", timeout=T)
        assert r.status_code == 429, (r.status_code, r.text)
        assert r.text.strip()
    finally:
        for s in streams:
            s.close()
