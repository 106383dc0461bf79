"""Subscriptions: query parameter at connect, oneOf semantics, PUT .../subscriptions, JWT automatic ones."""

from __future__ import annotations

import asyncio
import json
import time
from urllib.parse import quote

import httpx
import jwt as pyjwt
import pytest
from websockets.asyncio.client import connect

from tests.conftest import JWT_SECRET
from tests.helpers import T, LongPoll, make_event, open_sse, publish_ok, uid, wait_conn_count


def sub_url(gw, transport: str, token: str) -> str:
    return f"{gw.inbound}/_rig/v1/connection/{transport}/{quote(token, safe='')}/subscriptions"


def put_subs(gw, transport: str, token: str, subs, headers=None) -> httpx.Response:
    return httpx.put(sub_url(gw, transport, token), json={"subscriptions": subs}, headers=headers, timeout=T)


def make_jwt(claims: dict) -> str:
    claims = dict(claims)
    claims.setdefault("exp", int(time.time()) + 3600)
    return pyjwt.encode(claims, JWT_SECRET, algorithm="HS256")


def received_ids(stream, sentinel_id: str) -> list:
    """Ids of the events read on an SSE stream up to and including the sentinel."""
    evs = stream.events_until(lambda e: e.data and e.data.get("id") == sentinel_id)
    return [e.data["id"] for e in evs]


# ------------------------------------------------------------ at connect time


def test_subscriptions_param_at_connect(gateway):
    """Subscriptions given as a query parameter take effect and are echoed in rig.subscriptions_set."""
    subs = [{"eventType": "greeting", "oneOf": [{"name": "p1"}]}]
    with open_sse(gateway.inbound, subs) as s:
        _, got = s.expect_handshake()
        assert got == subs
        hit = make_event("greeting", {"name": "p1"})
        publish_ok(gateway.inbound, make_event("greeting", {"name": "p2"}))
        publish_ok(gateway.inbound, hit)
        assert s.next_event().data["id"] == hit["id"]


def test_one_of_any_object_matches(gateway):
    """oneOf: an event is delivered when it satisfies any one of the objects."""
    a, b, c, d = (uid("n") for _ in range(4))
    subs = [{"eventType": "greeting", "oneOf": [{"name": a}, {"name": b}]}]
    with open_sse(gateway.inbound, subs) as s:
        s.expect_handshake()
        evs = {n: make_event("greeting", {"name": n}) for n in (c, a, d, b)}
        for n in (c, a, d, b):
            publish_ok(gateway.inbound, evs[n])
        sentinel = make_event("greeting", {"name": a, "sentinel": True})
        publish_ok(gateway.inbound, sentinel)
        assert received_ids(s, sentinel["id"]) == [evs[a]["id"], evs[b]["id"], sentinel["id"]]


def test_one_of_object_needs_every_field(gateway):
    """oneOf: an object with two fields matches only events where both fields are equal."""
    cust = uid("cust")
    subs = [{"eventType": "order", "oneOf": [{"customer": cust, "region": "eu"}]}]
    with open_sse(gateway.inbound, subs) as s:
        s.expect_handshake()
        misses = [
            make_event("order", {"customer": cust, "region": "us"}),
            make_event("order", {"customer": uid("other"), "region": "eu"}),
            make_event("order", {"customer": cust}),
            make_event("order", {"region": "eu"}),
        ]
        hit = make_event("order", {"customer": cust, "region": "eu", "total": 3})
        for ev in misses:
            publish_ok(gateway.inbound, ev)
        publish_ok(gateway.inbound, hit)
        sentinel = make_event("order", {"customer": cust, "region": "eu", "sentinel": True})
        publish_ok(gateway.inbound, sentinel)
        assert received_ids(s, sentinel["id"]) == [hit["id"], sentinel["id"]]


def test_one_of_single_field_of_two(gateway):
    """A oneOf object constraining one field of a two-field type ignores the other field."""
    cust = uid("cust")
    with open_sse(gateway.inbound, [{"eventType": "order", "oneOf": [{"customer": cust}]}]) as s:
        s.expect_handshake()
        e1 = make_event("order", {"customer": cust, "region": "eu"})
        e2 = make_event("order", {"customer": cust, "region": "us"})
        e3 = make_event("order", {"customer": uid("x"), "region": "eu"})
        for ev in (e1, e2, e3):
            publish_ok(gateway.inbound, ev)
        sentinel = make_event("order", {"customer": cust})
        publish_ok(gateway.inbound, sentinel)
        assert received_ids(s, sentinel["id"]) == [e1["id"], e2["id"], sentinel["id"]]


@pytest.mark.parametrize("sub", [{"oneOf": []}, {}], ids=["empty-oneOf", "no-oneOf"])
def test_empty_one_of_matches_every_event_of_type(gateway, sub):
    """oneOf empty or absent: every event of the type is delivered."""
    with open_sse(gateway.inbound, [dict(eventType="greeting", **sub)]) as s:
        s.expect_handshake()
        e1 = make_event("greeting", {"name": uid("any")})
        e2 = make_event("greeting", {"other": 1})
        publish_ok(gateway.inbound, e1)
        publish_ok(gateway.inbound, e2)
        assert received_ids(s, e2["id"]) == [e1["id"], e2["id"]]


def test_field_value_types_compare_as_json(gateway):
    """Constraint values compare by JSON equality: 1 matches 1, not "1" or true."""
    cust = uid("c")
    with open_sse(gateway.inbound, [{"eventType": "order", "oneOf": [{"customer": cust, "region": 1}]}]) as s:
        s.expect_handshake()
        for region in ("1", True, 1.5):
            publish_ok(gateway.inbound, make_event("order", {"customer": cust, "region": region}))
        hit = make_event("order", {"customer": cust, "region": 1})
        publish_ok(gateway.inbound, hit)
        assert received_ids(s, hit["id"]) == [hit["id"]]


# ----------------------------------------------------------- PUT subscriptions


def _sse_put_flow(gw):
    ta, tb = uid("put-a"), uid("put-b")
    with open_sse(gw.inbound, [{"eventType": ta}]) as s:
        token, _ = s.expect_handshake()
        r = put_subs(gw, "sse", token, [{"eventType": tb}])
        assert r.status_code == 204, (r.status_code, r.text)
        ev = s.next_event()
        assert ev.event == "rig.subscriptions_set"
        assert ev.data["data"] == [{"eventType": tb, "oneOf": []}]
        ea, eb = make_event(ta, {"n": "a"}), make_event(tb, {"n": "b"})
        publish_ok(gw.inbound, ea)
        publish_ok(gw.inbound, eb)
        assert s.next_event().data["id"] == eb["id"]


def _ws_put_flow(gw):
    ta, tb = uid("put-a"), uid("put-b")

    async def main():
        url = f"{gw.ws}/_rig/v1/connection/ws?subscriptions={quote(json.dumps([{'eventType': ta}]), safe='')}"
        async with connect(url, open_timeout=T, close_timeout=T, ping_interval=None) as ws:
            first = json.loads(await asyncio.wait_for(ws.recv(), T))
            token = first["data"]["connection_token"]
            assert json.loads(await asyncio.wait_for(ws.recv(), T))["type"] == "rig.subscriptions_set"
            r = await asyncio.to_thread(put_subs, gw, "ws", token, [{"eventType": tb}])
            assert r.status_code == 204, (r.status_code, r.text)
            ev = json.loads(await asyncio.wait_for(ws.recv(), T))
            assert ev["type"] == "rig.subscriptions_set"
            assert ev["data"] == [{"eventType": tb, "oneOf": []}]
            ea, eb = make_event(ta, {"n": "a"}), make_event(tb, {"n": "b"})
            await asyncio.to_thread(publish_ok, gw.inbound, ea)
            await asyncio.to_thread(publish_ok, gw.inbound, eb)
            assert json.loads(await asyncio.wait_for(ws.recv(), T))["id"] == eb["id"]

    asyncio.run(main())


def _lp_put_flow(gw):
    ta, tb = uid("put-a"), uid("put-b")
    lp = LongPoll(gw.inbound, [{"eventType": ta}])
    try:
        lp.poll()
        lp.collect_until(lambda e: e["type"] == "rig.subscriptions_set")
        r = put_subs(gw, "longpolling", lp.token, [{"eventType": tb}])
        assert r.status_code == 204, (r.status_code, r.text)
        got = lp.collect_until(lambda e: e["type"] == "rig.subscriptions_set")
        assert got[-1]["data"] == [{"eventType": tb, "oneOf": []}]
        ea, eb = make_event(ta, {"n": "a"}), make_event(tb, {"n": "b"})
        publish_ok(gw.inbound, ea)
        publish_ok(gw.inbound, eb)
        assert [e["id"] for e in lp.collect_until(lambda e: e["id"] == eb["id"])] == [eb["id"]]
    finally:
        lp.close()


@pytest.mark.parametrize("transport", ["sse", "ws", "longpolling"])
def test_put_replaces_subscriptions(gateway, transport):
    """PUT replaces the subscriptions: 204, rig.subscriptions_set on the connection, new filter applies."""
    {"sse": _sse_put_flow, "ws": _ws_put_flow, "longpolling": _lp_put_flow}[transport](gateway)


def test_put_subscriptions_set_on_stream_after_change(gateway):
    """After PUT with constraints, rig.subscriptions_set lists them and only matching events arrive."""
    n = uid("nm")
    with open_sse(gateway.inbound) as s:
        token, subs = s.expect_handshake()
        assert subs == []
        new = [{"eventType": "greeting", "oneOf": [{"name": n}]}]
        assert put_subs(gateway, "sse", token, new).status_code == 204
        ev = s.next_event()
        assert ev.event == "rig.subscriptions_set" and ev.data["data"] == new
        publish_ok(gateway.inbound, make_event("greeting", {"name": uid("other")}))
        hit = make_event("greeting", {"name": n})
        publish_ok(gateway.inbound, hit)
        assert s.next_event().data["id"] == hit["id"]


def test_put_empty_list_unsubscribes(gateway):
    """PUT with an empty list removes the manual subscriptions."""
    ta, tb = uid("un-a"), uid("un-b")
    with open_sse(gateway.inbound, [{"eventType": ta}]) as s:
        token, _ = s.expect_handshake()
        assert put_subs(gateway, "sse", token, []).status_code == 204
        assert s.next_event().data["data"] == []
        assert put_subs(gateway, "sse", token, [{"eventType": tb}]).status_code == 204
        assert s.next_event().data["data"] == [{"eventType": tb, "oneOf": []}]
        publish_ok(gateway.inbound, make_event(ta, {}))
        eb = make_event(tb, {})
        publish_ok(gateway.inbound, eb)
        assert s.next_event().data["id"] == eb["id"]


@pytest.mark.parametrize(
    "body,word",
    [
        (b"{not json", "json"),
        (b'{"subscriptions": "nope"}', "subscription"),
        (b'{"subscriptions": [{"oneOf": []}]}', "eventtype"),
        (b"[]", "subscription"),
    ],
    ids=["malformed-json", "not-a-list", "no-eventType", "not-an-object"],
)
def test_put_bad_body_400(gateway, body, word):
    """PUT with a malformed body answers 400 with a message naming the problem."""
    with open_sse(gateway.inbound) as s:
        token, _ = s.expect_handshake()
        r = httpx.put(sub_url(gateway, "sse", token), content=body, headers={"content-type": "application/json"},
                      timeout=T)
        assert r.status_code == 400, (r.status_code, r.text)
        text = r.text.lower()
        assert word in text or "subscription" in text or "json" in text, r.text


def test_put_undefined_field_accepted_echoed_ignored(gateway):
    """PUT with a constraint only on a field the extractors do not define: 204, echoed in
    rig.subscriptions_set, and ignored when matching, so every event of the type arrives (RIG)."""
    with open_sse(gateway.inbound) as s:
        token, _ = s.expect_handshake()
        etype = uid("unknown-field")
        subs = [{"eventType": etype, "oneOf": [{"undefinedfield": 1}]}]
        r = put_subs(gateway, "sse", token, subs)
        assert r.status_code == 204, (r.status_code, r.text)
        assert s.next_event().data["data"] == subs
        hit = make_event(etype, {"anything": 2})
        publish_ok(gateway.inbound, hit)
        assert s.next_event().data["id"] == hit["id"]


@pytest.mark.parametrize("token", ["abc", "%00%ff", "bad%20token!", "x" * 300])
def test_put_malformed_token_400(gateway, token):
    """PUT with a malformed connection token answers 400."""
    url = f"{gateway.inbound}/_rig/v1/connection/sse/{token}/subscriptions"
    r = httpx.put(url, json={"subscriptions": []}, timeout=T)
    assert r.status_code == 400, (r.status_code, r.text)
    assert "token" in r.text.lower(), r.text


@pytest.mark.parametrize("transport", ["sse", "ws"])
def test_put_closed_connection_410(gateway_factory, transport):
    """PUT for a connection that has been closed answers 410."""
    gw = gateway_factory()  # fresh: its connection count is ours alone
    if transport == "sse":
        s = open_sse(gw.inbound)
        token, _ = s.expect_handshake()
        wait_conn_count(gw.api, "sse", 1)
        s.close()
    else:

        async def main():
            async with connect(f"{gw.ws}/_rig/v1/connection/ws", open_timeout=T, close_timeout=T) as ws:
                tok = json.loads(await asyncio.wait_for(ws.recv(), T))["data"]["connection_token"]
                await asyncio.to_thread(wait_conn_count, gw.api, "ws", 1)
                return tok

        token = asyncio.run(main())
    wait_conn_count(gw.api, transport, 0)
    r = put_subs(gw, transport, token, [{"eventType": "greeting"}])
    assert r.status_code == 410, (r.status_code, r.text)


def test_put_wrong_transport_in_path(gateway):
    """PUT naming a transport other than sse/ws/longpolling is not found (404) or refused (400)."""
    with open_sse(gateway.inbound) as s:
        token, _ = s.expect_handshake()
        r = put_subs(gateway, "carrier-pigeon", token, [])
        assert r.status_code in (400, 404), (r.status_code, r.text)


def test_put_options_preflight(gateway):
    """OPTIONS preflight on the subscriptions path answers with CORS headers allowing PUT."""
    with open_sse(gateway.inbound) as s:
        token, _ = s.expect_handshake()
        r = httpx.options(
            sub_url(gateway, "sse", token),
            headers={
                "origin": "http://app.example",
                "access-control-request-method": "PUT",
                "access-control-request-headers": "content-type,authorization",
            },
            timeout=T,
        )
    assert r.status_code in (200, 204), (r.status_code, r.text)
    assert r.headers.get("access-control-allow-origin") in ("*", "http://app.example"), r.headers
    methods = [m.strip().upper() for m in r.headers.get("access-control-allow-methods", "").split(",")]
    assert "PUT" in methods, r.headers
    allowed = [h.strip().lower() for h in r.headers.get("access-control-allow-headers", "").split(",")]
    assert "content-type" in allowed and "authorization" in allowed, r.headers


def test_put_affects_only_its_connection(gateway):
    """A PUT for another connection's token does not change this connection's subscriptions."""
    ta = uid("iso")
    with open_sse(gateway.inbound, [{"eventType": ta}]) as a, open_sse(gateway.inbound) as b:
        a.expect_handshake()
        tb, _ = b.expect_handshake()
        assert put_subs(gateway, "sse", tb, [{"eventType": uid("bsub")}]).status_code == 204
        assert b.next_event().event == "rig.subscriptions_set"
        ev = make_event(ta, {})
        publish_ok(gateway.inbound, ev)
        nxt = a.next_event()
        assert nxt.data["id"] == ev["id"], nxt


# --------------------------------------------------------------- JWT automatic


def test_jwt_automatic_subscription(gateway):
    """A JWT claim named by an extractor's jwt pointer subscribes the connection automatically."""
    user = uid("user")
    token = make_jwt({"username": user})
    with open_sse(gateway.inbound, jwt=token) as s:
        _, subs = s.expect_handshake()
        assert {"eventType": "greeting", "oneOf": [{"name": user}]} in subs, subs
        publish_ok(gateway.inbound, make_event("greeting", {"name": uid("someone-else")}))
        hit = make_event("greeting", {"name": user})
        publish_ok(gateway.inbound, hit)
        assert s.next_event().data["id"] == hit["id"]


def test_jwt_authorization_header_and_manual_merged(gateway):
    """The Authorization header is honoured, and automatic and manual subscriptions are merged."""
    user, other = uid("user"), uid("type")
    token = make_jwt({"username": user})
    with open_sse(gateway.inbound, [{"eventType": other}], headers={"authorization": f"Bearer {token}"}) as s:
        _, subs = s.expect_handshake()
        assert {"eventType": "greeting", "oneOf": [{"name": user}]} in subs, subs
        assert {"eventType": other, "oneOf": []} in subs, subs
        e1 = make_event(other, {})
        e2 = make_event("greeting", {"name": user})
        publish_ok(gateway.inbound, e1)
        publish_ok(gateway.inbound, e2)
        assert received_ids(s, e2["id"]) == [e1["id"], e2["id"]]


def test_put_keeps_automatic_subscriptions(gateway):
    """PUT with the same Authorization header replaces manual subscriptions and keeps the automatic one."""
    user, t1, t2 = uid("user"), uid("m1"), uid("m2")
    token = make_jwt({"username": user})
    auth = {"authorization": f"Bearer {token}"}
    with open_sse(gateway.inbound, [{"eventType": t1}], headers=auth) as s:
        ctoken, _ = s.expect_handshake()
        r = put_subs(gateway, "sse", ctoken, [{"eventType": t2}], headers=auth)
        assert r.status_code == 204, r.text
        subs = s.next_event().data["data"]
        assert {"eventType": "greeting", "oneOf": [{"name": user}]} in subs, subs
        assert {"eventType": t2, "oneOf": []} in subs and not any(x["eventType"] == t1 for x in subs), subs
