"""Event submission: POST /_rig/v1/events (inbound) and POST /v3/messages (internal API)."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.helpers import T, make_event, open_sse, publish, publish_ok, uid

PATHS = {"inbound": "/_rig/v1/events", "api": "/v3/messages"}


def base_for(gw, where):
    return gw.inbound if where == "inbound" else gw.api


def post_raw(gw, where, body: bytes, content_type="application/cloudevents+json", headers=None):
    hdrs = {"content-type": content_type, **(headers or {})}
    return httpx.post(base_for(gw, where) + PATHS[where], content=body, headers=hdrs, timeout=T)


def v01_event(etype, data):
    return {
        "cloudEventsVersion": "0.1",
        "eventType": etype,
        "eventID": uid("ev01"),
        "source": "/rigfast/tests",
        "contentType": "application/json",
        "data": data,
    }


def v02_event(etype, data):
    return {"specversion": "0.2", "type": etype, "id": uid("ev02"), "source": "/rigfast/tests", "data": data}


def v10_event(etype, data):
    return make_event(etype, data, datacontenttype="application/json", time="2024-05-01T12:00:00Z")


def ev_id(ev):
    return ev.get("id", ev.get("eventID"))


@pytest.mark.parametrize("where", ["inbound", "api"])
@pytest.mark.parametrize("make", [v01_event, v02_event, v10_event], ids=["0.1", "0.2", "1.0"])
def test_structured_mode_accepted_and_delivered(gateway, make, where):
    """Structured mode with specversion 0.1/0.2/1.0: 202 with the event, delivered unchanged."""
    etype = uid("struct")
    with open_sse(gateway.inbound, [{"eventType": etype}]) as s:
        s.expect_handshake()
        ev = make(etype, {"k": "v", "n": 1})
        r = publish(base_for(gateway, where), ev, path=PATHS[where])
        assert r.status_code == 202, (r.status_code, r.text)
        assert r.json() == ev
        got = s.next_event()
        assert got.event == etype
        assert got.data == ev


def test_structured_mode_plain_application_json(gateway):
    """Structured mode is also accepted with content-type application/json (no ce- headers)."""
    etype = uid("json")
    with open_sse(gateway.inbound, [{"eventType": etype}]) as s:
        s.expect_handshake()
        ev = make_event(etype, {"a": 1})
        r = publish(gateway.inbound, ev, content_type="application/json")
        assert r.status_code == 202, r.text
        assert r.json() == ev
        assert s.next_event().data == ev


def test_extensions_and_optional_attributes_preserved(gateway):
    """An event is forwarded as published: extensions, subject, dataschema and data_base64 kept."""
    etype = uid("ext")
    with open_sse(gateway.inbound, [{"eventType": etype}]) as s:
        s.expect_handshake()
        ev = {
            "specversion": "1.0",
            "type": etype,
            "source": "urn:test",
            "id": uid("id"),
            "subject": "s-1",
            "dataschema": "https://example.test/schema",
            "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "myextension": "some value",
            "data_base64": "aGVsbG8=",
        }
        r = publish(gateway.inbound, ev)
        assert r.status_code == 202, r.text
        assert s.next_event().data == ev


@pytest.mark.parametrize("where", ["inbound", "api"])
def test_binary_mode_with_extension(gateway, where):
    """Binary mode: attributes and an extension from ce- headers, body as data; 202 and delivered."""
    etype = uid("bin")
    with open_sse(gateway.inbound, [{"eventType": etype}]) as s:
        s.expect_handshake()
        eid = uid("bin-id")
        data = {"name": "binary", "n": [1, 2]}
        r = httpx.post(
            base_for(gateway, where) + PATHS[where],
            content=json.dumps(data).encode(),
            headers={
                "content-type": "application/json",
                "ce-specversion": "1.0",
                "ce-type": etype,
                "ce-id": eid,
                "ce-source": "/rigfast/tests/binary",
                "ce-myextension": "ext-value",
            },
            timeout=T,
        )
        assert r.status_code == 202, (r.status_code, r.text)
        accepted = r.json()
        for k, v in {"specversion": "1.0", "type": etype, "id": eid, "source": "/rigfast/tests/binary",
                     "myextension": "ext-value", "data": data}.items():
            assert accepted.get(k) == v, (k, accepted)
        got = s.next_event().data
        assert got == accepted


def test_binary_mode_via_publish_helper(gateway):
    """Binary mode built from an event object reaches a subscriber with the same attributes."""
    etype = uid("bin2")
    with open_sse(gateway.inbound, [{"eventType": etype}]) as s:
        s.expect_handshake()
        ev = make_event(etype, {"x": 1}, myext="v")
        accepted = publish_ok(gateway.inbound, ev, mode="binary")
        got = s.next_event().data
        assert got == accepted
        for k in ("specversion", "type", "id", "source", "myext", "data"):
            assert got[k] == ev[k], k


@pytest.mark.parametrize("missing", ["type", "id", "source", "specversion"])
@pytest.mark.parametrize("where", ["inbound", "api"])
def test_missing_required_attribute_400(gateway, missing, where):
    """A structured event missing a required attribute answers 400 naming the attribute."""
    ev = make_event(uid("miss"), {"x": 1})
    del ev[missing]
    r = post_raw(gateway, where, json.dumps(ev).encode())
    assert r.status_code == 400, (r.status_code, r.text)
    assert missing in r.text.lower(), r.text


@pytest.mark.parametrize("missing", ["type", "id", "source"])
def test_binary_missing_attribute_400(gateway, missing):
    """Binary mode without a required ce- header answers 400 naming the attribute."""
    hdrs = {"ce-specversion": "1.0", "ce-type": uid("b"), "ce-id": uid("i"), "ce-source": "/t"}
    del hdrs[f"ce-{missing}"]
    r = httpx.post(gateway.inbound + PATHS["inbound"], content=b'{"a": 1}',
                   headers={"content-type": "application/json", **hdrs}, timeout=T)
    assert r.status_code == 400, (r.status_code, r.text)
    assert missing in r.text.lower(), r.text


@pytest.mark.parametrize("where", ["inbound", "api"])
@pytest.mark.parametrize("body", [b"{not json", b"", b'{"specversion": "1.0", "type": "x",'],
                         ids=["garbage", "empty", "truncated"])
def test_malformed_json_400(gateway, where, body):
    """A body that is not JSON answers 400 saying so."""
    r = post_raw(gateway, where, body)
    assert r.status_code == 400, (r.status_code, r.text)
    assert "json" in r.text.lower() or "body" in r.text.lower(), r.text


@pytest.mark.parametrize(
    "attr,value",
    [("id", 123), ("type", 5), ("source", None), ("type", ["a"]), ("id", "")],
    ids=["id-int", "type-int", "source-null", "type-list", "id-empty"],
)
def test_wrong_attribute_types_400(gateway, attr, value):
    """Required attributes of the wrong JSON type (or empty) answer 400 naming the attribute."""
    ev = make_event(uid("wt"), {"x": 1})
    ev[attr] = value
    r = post_raw(gateway, "inbound", json.dumps(ev).encode())
    assert r.status_code == 400, (r.status_code, r.text)
    assert attr in r.text.lower(), r.text


def test_unsupported_specversion_400(gateway):
    """An unknown specversion answers 400 naming specversion."""
    ev = make_event(uid("sv"), {}, specversion="9.9")
    r = post_raw(gateway, "inbound", json.dumps(ev).encode())
    assert r.status_code == 400, (r.status_code, r.text)
    assert "specversion" in r.text.lower(), r.text


@pytest.mark.parametrize("body", [b"[]", b'"a string"', b"42", b"null", b'[{"specversion": "1.0"}]'],
                         ids=["list", "string", "number", "null", "list-of-event"])
def test_non_object_400(gateway, body):
    """A JSON value that is not an object answers 400."""
    r = post_raw(gateway, "inbound", body)
    assert r.status_code == 400, (r.status_code, r.text)
    assert r.text.strip()


def test_rejected_event_reaches_nobody(gateway):
    """An event answered with 400 is not delivered to any subscriber."""
    etype = uid("rej")
    with open_sse(gateway.inbound, [{"eventType": etype}]) as s:
        s.expect_handshake()
        bad = make_event(etype, {"bad": True})
        del bad["source"]
        assert post_raw(gateway, "inbound", json.dumps(bad).encode()).status_code == 400
        bad2 = make_event(etype, {"bad": True}, time=12)
        assert post_raw(gateway, "inbound", json.dumps(bad2).encode()).status_code == 400
        bin_bad = httpx.post(gateway.inbound + PATHS["inbound"], content=b"{oops",
                             headers={"content-type": "application/json", "ce-specversion": "1.0",
                                      "ce-type": etype, "ce-id": uid("x"), "ce-source": "/t"}, timeout=T)
        assert bin_bad.status_code == 400, bin_bad.text
        good = make_event(etype, {"good": True})
        publish_ok(gateway.inbound, good)
        assert s.next_event().data["id"] == good["id"]


def test_published_event_fans_out_to_every_transport_subscriber(gateway):
    """One event published on the API port reaches several SSE subscribers, each once."""
    etype = uid("fan")
    streams = [open_sse(gateway.inbound, [{"eventType": etype}]) for _ in range(5)]
    try:
        for s in streams:
            s.expect_handshake()
        ev = make_event(etype, {"fan": 1})
        publish_ok(gateway.api, ev, path="/v3/messages")
        sentinel = make_event(etype, {"fan": 2})
        publish_ok(gateway.api, sentinel, path="/v3/messages")
        for s in streams:
            assert s.next_event().data["id"] == ev["id"]
            assert s.next_event().data["id"] == sentinel["id"]
    finally:
        for s in streams:
            s.close()


def test_inbound_health(gateway):
    """GET /_rig/health on the inbound port answers 200 OK."""
    r = httpx.get(gateway.inbound + "/_rig/health", timeout=T)
    assert r.status_code == 200
    assert r.text.strip() == "OK"


def test_api_health(gateway):
    """GET /health on the API port answers 200 OK; ?detailed answers the documented JSON."""
    r = httpx.get(gateway.api + "/health", timeout=T)
    assert r.status_code == 200
    assert r.text.strip() == "OK"
    d = httpx.get(gateway.api + "/health?detailed", timeout=T).json()
    assert d["status"] == "ok"
    assert isinstance(d["uptime_s"], (int, float))
    assert set(d["connections"]) >= {"sse", "ws", "longpolling"}
    assert isinstance(d["subscriptions"], int)
    assert d["build"] in ("cython", "python")


def test_messages_path_not_on_inbound_port(gateway):
    """/v3/messages belongs to the API port only: the inbound port does not accept it."""
    ev = make_event(uid("x"), {})
    r = publish(gateway.inbound, ev, path="/v3/messages")
    assert r.status_code == 404, (r.status_code, r.text)


# ------------------------------------------------------------------ batched mode

BATCH = "application/cloudevents-batch+json"


@pytest.mark.parametrize("where", ["inbound", "api"])
def test_batch_accepted_in_order_and_delivered(gateway, where):
    """A batch of mixed spec versions: 202 with the accepted events as an array, each delivered in order."""
    etype = uid("batch")
    batch = [make_event(etype, {"i": 0}), v02_event(etype, {"i": 1}), v10_event(etype, {"i": 2})]
    with open_sse(gateway.inbound, [{"eventType": etype}]) as s:
        s.expect_handshake()
        r = post_raw(gateway, where, json.dumps(batch).encode(), BATCH + "; charset=utf-8")
        assert r.status_code == 202, (r.status_code, r.text)
        assert r.headers["content-type"].startswith("application/json")
        assert r.json() == batch
        got = [s.next_event() for _ in batch]
        assert [g.data for g in got] == batch
        assert len({g.id for g in got}) == 3  # each its own resume id


@pytest.mark.parametrize("where", ["inbound", "api"])
def test_batch_with_one_bad_event_refuses_all_naming_its_index(gateway, where):
    """One invalid event (index 2) refuses the whole batch with 400 naming index 2; none is delivered."""
    etype = uid("badbatch")
    bad = make_event(etype, {"i": 2})
    del bad["id"]
    batch = [make_event(etype, {"i": 0}), make_event(etype, {"i": 1}), bad, make_event(etype, {"i": 3})]
    with open_sse(gateway.inbound, [{"eventType": etype}]) as s:
        s.expect_handshake()
        r = post_raw(gateway, where, json.dumps(batch).encode(), BATCH)
        assert r.status_code == 400, (r.status_code, r.text)
        assert "event 2" in r.text and "'id'" in r.text
        marker = make_event(etype, {"marker": True})
        publish_ok(gateway.inbound, marker)
        assert s.next_event().data == marker  # nothing of the refused batch came first


@pytest.mark.parametrize(
    "body, expect",
    [(b"[]", "empty batch"), (b"", "empty body"), (b'{"specversion": "1.0"}', "JSON array"), (b"[1,", "not valid JSON"),
     (b'[{"specversion":"1.0","type":"t","id":"1","source":"s"}, 7]', "event 1")],
    ids=["empty-array", "no-body", "object", "bad-json", "not-an-object"],
)
def test_batch_malformed_is_400(gateway, body, expect):
    """An empty array, an empty body, a non-array and broken JSON: 400 saying what is wrong."""
    r = post_raw(gateway, "inbound", body, BATCH)
    assert r.status_code == 400, (r.status_code, r.text)
    assert expect in r.text


def test_batch_body_limit_applies_to_whole_batch(gateway_factory):
    """RIGFAST_MAX_BODY_BYTES bounds the whole batch: small events adding up beyond it are 413, a batch under it 202."""
    gw = gateway_factory(RIGFAST_MAX_BODY_BYTES="2000")
    etype = uid("big")
    one = make_event(etype, {"pad": "x" * 100})
    small = json.dumps([one] * 3).encode()
    big = json.dumps([one] * 20).encode()
    assert len(small) < 2000 < len(big)
    assert post_raw(gw, "inbound", small, BATCH).status_code == 202
    r = post_raw(gw, "inbound", big, BATCH)
    assert r.status_code == 413, (r.status_code, r.text)
    assert "2000" in r.text
