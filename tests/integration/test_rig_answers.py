"""RIG 3.0's exact answers where rigfast used to differ: one test per point (tokens on connect, the
connect check, PUT, WebSocket setup, binary mode, the long-polling cursor, gateway events, refusals a
browser can read, the /v2 API). Unknown constraint fields: test_sse.py and test_subscriptions.py;
the blacklist answer: test_blacklist.py; unsupported RIG settings: test_config_errors.py; across
workers and nodes: tests/cluster/test_cluster.py."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
from urllib.parse import quote, unquote

import httpx
import jwt as pyjwt
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.conftest import JWT_SECRET, start_gateway
from tests.helpers import T, LongPoll, make_event, open_raw, open_sse, publish, publish_ok, raw_exchange, read_head, uid

SSE = "/_rig/v1/connection/sse"
WS = "/_rig/v1/connection/ws"
LP = "/_rig/v1/connection/longpolling"
ORIGIN = "http://page.example.test"


def mint(sid: str | None = None, exp_in: float = 300, **claims) -> str:
    return pyjwt.encode({"jti": sid or uid("jti"), "exp": int(time.time() + exp_in), **claims}, JWT_SECRET, "HS256")


def blacklist(gw, sid: str) -> None:
    r = httpx.post(gw.api + "/v3/session-blacklist", json={"sessionId": sid, "validityInSeconds": 60}, timeout=T)
    assert r.status_code == 201, r.text


def q(subs) -> str:
    return quote(json.dumps(subs), safe="")


async def ws_close_of(url: str):
    """(code, reason) of the close frame that follows the handshake, or ("open", first frame)."""
    async with connect(url, ping_interval=None, open_timeout=T, close_timeout=T) as ws:
        try:
            msg = await asyncio.wait_for(ws.recv(), T)
        except ConnectionClosed as exc:
            assert exc.rcvd is not None, "closed without a close frame"
            return exc.rcvd.code, exc.rcvd.reason
        return "open", json.loads(msg)


@pytest.fixture(scope="module")
def jwt_gw():
    gw = start_gateway(SUBSCRIPTION_CHECK="jwt_validation")
    yield gw
    gw.stop()


# 1 ------------------------------------------------------------------------------------------------
def test_p1_bad_expired_or_blacklisted_token_on_connect_is_400(gateway):
    """SUBSCRIPTION_CHECK=no_check: a token that does not verify, has expired or is blacklisted is 400 on SSE
    and long-polling (RIG decodes every token), and a handshake then close 1000 "Bad request." on WS."""
    sid = uid("p1")
    blacklist(gateway, sid)
    bad = {"garbage": "not.a.jwt", "expired": mint(exp_in=-120), "blacklisted": mint(sid)}
    for why, token in bad.items():
        for path in (SSE, LP):
            r = httpx.get(gateway.inbound + path, params={"jwt": token}, timeout=T)
            assert r.status_code == 400, (why, path, r.status_code, r.text)
            assert r.text.strip(), (why, path)
        r = httpx.get(gateway.inbound + SSE, headers={"authorization": f"Bearer {token}"}, timeout=T)
        assert r.status_code == 400, (why, "header", r.text)
        assert asyncio.run(ws_close_of(f"{gateway.ws}{WS}?jwt={quote(token, safe='')}")) == (1000, "Bad request."), why
    with open_sse(gateway.inbound, jwt=mint()) as s:  # a good one still opens
        s.expect_handshake()


# 2 ------------------------------------------------------------------------------------------------
def test_p2_connect_check_only_when_subscriptions_are_named(jwt_gw):
    """jwt_validation: a connect without subscriptions needs no token (SSE, WS, long-polling); naming
    subscriptions without one is 403; a PUT is always checked."""
    with open_sse(jwt_gw.inbound) as s:
        conn, subs = s.expect_handshake()
        assert subs == []
        put = f"{jwt_gw.inbound}/_rig/v1/connection/sse/{conn}/subscriptions"
        r = httpx.put(put, json={"subscriptions": [{"eventType": "x"}]}, timeout=T)
        assert r.status_code == 403, r.text
    kind, first = asyncio.run(ws_close_of(jwt_gw.ws + WS))
    assert kind == "open" and first["type"] == "rig.connection.create"
    lp = LongPoll(jwt_gw.inbound)
    try:
        assert lp.poll().json() == "ok"
    finally:
        lp.close()
    named = [{"eventType": uid("named")}]
    r = httpx.get(jwt_gw.inbound + SSE + "?subscriptions=" + q(named), timeout=T)
    assert r.status_code == 403, r.text
    r = httpx.get(jwt_gw.inbound + LP + "?subscriptions=" + q(named), timeout=T)
    assert r.status_code == 403, r.text


# 3 ------------------------------------------------------------------------------------------------
def test_p3_put_subscriptions_answers_and_sessions(gateway, jwt_gw):
    """PUT: 400 for a content type other than application/json and for a token that does not verify, has
    expired or is blacklisted (under jwt_validation a missing token stays 403); after a PUT the connection
    belongs to the sessions of the PUT's tokens, so blacklisting one of them ends it."""
    body = json.dumps({"subscriptions": [{"eventType": uid("p3")}]})
    with open_sse(gateway.inbound) as s:
        conn, _ = s.expect_handshake()
        url = f"{gateway.inbound}/_rig/v1/connection/sse/{conn}/subscriptions"
        r = httpx.put(url, content=body, headers={"content-type": "text/plain"}, timeout=T)
        assert r.status_code == 400 and "application/json" in r.text, r.text
        r = httpx.put(url, content=body, timeout=T)  # no content type at all
        assert r.status_code == 400, r.text
        for token in ("not.a.jwt", mint(exp_in=-120)):
            r = httpx.put(url, content=body, headers={"content-type": "application/json",
                                                       "authorization": f"Bearer {token}"}, timeout=T)
            assert r.status_code == 400 and "token" in r.text, r.text
        sid = uid("p3-session")
        r = httpx.put(url, content=body, headers={"content-type": "application/json; charset=utf-8",
                                                   "authorization": f"Bearer {mint(sid)}"}, timeout=T)
        assert r.status_code == 204, r.text
        assert s.next_event().event == "rig.subscriptions_set"
        blacklist(gateway, sid)
        assert s.next_event().event == "rig.session_killed"
    with open_sse(jwt_gw.inbound) as s:
        conn, _ = s.expect_handshake()
        url = f"{jwt_gw.inbound}/_rig/v1/connection/sse/{conn}/subscriptions"
        assert httpx.put(url, content=body, headers={"content-type": "application/json"}, timeout=T).status_code == 403
        both = [("content-type", "application/json"), ("authorization", f"Bearer {mint()}"),
                ("authorization", f"Bearer {mint(exp_in=-120)}")]
        r = httpx.put(url, content=body, headers=both, timeout=T)
        assert r.status_code == 400, r.text  # the check passed (one valid token), then every token is decoded


# 5 ------------------------------------------------------------------------------------------------
def _upgrade(path: str, key: str | None = "dGhlIHNhbXBsZSBub25jZQ==", version: str | None = "13", upgrade=True) -> bytes:
    lines = [f"GET {path} HTTP/1.1", "Host: x"]
    if upgrade:
        lines += ["Connection: Upgrade", "Upgrade: websocket"]
    if key is not None:
        lines.append(f"Sec-WebSocket-Key: {key}")
    if version is not None:
        lines.append(f"Sec-WebSocket-Version: {version}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def test_p5_websocket_setup_answers(gateway):
    """Not an upgrade: 426. Missing or invalid key, unsupported version: 400. Versions 7, 8 and 13: 101.
    A setup error after the handshake: close 1000 "Bad request."."""

    async def status(request: bytes) -> int:
        reader, writer = await open_raw(gateway.hostport)
        try:
            writer.write(request)
            await writer.drain()
            return (await read_head(reader, T)).status
        finally:
            writer.close()

    async def main():
        assert (await raw_exchange(gateway.hostport, _upgrade(WS, upgrade=False))).status == 426
        assert (await raw_exchange(gateway.hostport, _upgrade(WS, key=None))).status == 400
        assert (await raw_exchange(gateway.hostport, _upgrade(WS, key="too-short"))).status == 400
        r = await raw_exchange(gateway.hostport, _upgrade(WS, version="12"))
        assert r.status == 400 and r.header("sec-websocket-version") == "13"
        assert (await raw_exchange(gateway.hostport, _upgrade(WS, version=None))).status == 400
        for v in ("7", "8", "13"):
            key = base64.b64encode(os.urandom(16)).decode()
            assert await status(_upgrade(WS, key=key, version=v)) == 101, v

    asyncio.run(main())
    bad = gateway.ws + WS + "?subscriptions=" + q([{"eventType": ""}])
    assert asyncio.run(ws_close_of(bad)) == (1000, "Bad request.")


# 6 ------------------------------------------------------------------------------------------------
def test_p6_any_other_content_type_is_binary_mode(gateway):
    """A body with a non-JSON content type and no ce- headers is binary mode without ce-specversion: 400 with
    a message naming the header (not 415); with the ce- headers it is accepted."""
    r = httpx.post(gateway.inbound + "/_rig/v1/events", content=b"hello", headers={"content-type": "text/plain"}, timeout=T)
    assert r.status_code == 400, r.text
    assert "ce-specversion" in r.text
    r = httpx.post(gateway.inbound + "/_rig/v1/events", content=b"hello",
                   headers={"content-type": "text/plain", "ce-type": "t", "ce-source": "s", "ce-id": "1"}, timeout=T)
    assert r.status_code == 400 and "ce-specversion" in r.text and "ce-type" not in r.text, r.text
    etype = uid("p6")
    with open_sse(gateway.inbound, [{"eventType": etype}]) as s:
        s.expect_handshake()
        r = httpx.post(gateway.inbound + "/_rig/v1/events", content=b"hello", timeout=T, headers={
            "content-type": "text/plain", "ce-specversion": "1.0", "ce-type": etype, "ce-source": "s", "ce-id": uid()})
        assert r.status_code == 202, r.text
        assert s.next_event().data["data"] == "hello"


# 7 ------------------------------------------------------------------------------------------------
def test_p7_longpolling_is_a_read_cursor(gateway):
    """last_event_id (body and cookie) is the id of the newest event returned, gateway events included; both
    cookies on every answer; a poll with an old cookie gets the same events again; with the new one, what
    came after."""
    etype = uid("p7")
    lp = LongPoll(gateway.inbound, [{"eventType": etype}])
    try:
        r = lp.poll()
        assert r.json() == "ok"
        names = [c.split("=", 1)[0] for c in r.headers.get_list("set-cookie")]
        assert names == ["connection_token", "last_event_id"], names
        old_cookies = dict(lp.cookies)
        r = lp.poll()
        body = r.json()
        types = [e["type"] for e in body["events"]]
        assert types == ["rig.connection.create", "rig.subscriptions_set"], types
        assert body["last_event_id"] == body["events"][-1]["id"] != "first_event"
        assert [c.split("=", 1)[0] for c in r.headers.get_list("set-cookie")] == ["connection_token", "last_event_id"]
        assert json.loads(unquote(lp.cookies["last_event_id"])) == body["last_event_id"]
        cursor = dict(lp.cookies)
        e1, e2 = make_event(etype, {"n": 1}), make_event(etype, {"n": 2})
        publish_ok(gateway.inbound, e1)
        publish_ok(gateway.inbound, e2)
        got = lp.collect_until(lambda e: e["id"] == e2["id"])
        assert [e["id"] for e in got] == [e1["id"], e2["id"]]
        # the answer was "lost": poll again with the cookies from before it
        lp.cookies = dict(cursor)
        body = lp.poll().json()
        assert [e["id"] for e in body["events"]] == [e1["id"], e2["id"]]
        assert body["last_event_id"] == e2["id"]
        lp.cookies = dict(old_cookies)  # back to "first_event": everything the session holds, in order
        body = lp.poll().json()
        assert [e["type"] for e in body["events"]] == ["rig.connection.create", "rig.subscriptions_set", etype, etype]
        e3 = make_event(etype, {"n": 3})
        publish_ok(gateway.inbound, e3)
        assert [e["id"] for e in lp.events()] == [e3["id"]]  # after the newest returned: only the new one
    finally:
        lp.close()


# 10 -----------------------------------------------------------------------------------------------
def test_p10_gateway_events_are_specversion_0_2(gateway):
    """rig.connection.create, rig.subscriptions_set and rig.session_killed carry "specversion": "0.2"."""
    sid = uid("p10")
    with open_sse(gateway.inbound, jwt=mint(sid)) as s:
        created = s.next_event().data
        subs_set = s.next_event().data
        blacklist(gateway, sid)
        killed = s.next_event().data
    for ev in (created, subs_set, killed):
        assert ev["specversion"] == "0.2" and ev["source"] == "rig" and ev["id"] and ev["time"], ev
    assert [created["type"], subs_set["type"], killed["type"]] == ["rig.connection.create", "rig.subscriptions_set",
                                                                  "rig.session_killed"]


# 11 -----------------------------------------------------------------------------------------------
def test_p11_refusals_carry_credentialed_cors(jwt_gw, gateway_factory):
    """Long-polling 403 / 400 / 429 and other refusals on the public port echo the Origin with
    access-control-allow-credentials: true, like a success, so the page can read the status."""
    hdr = {"origin": ORIGIN}

    def assert_cors(r, status):
        assert r.status_code == status, (r.status_code, r.text)
        assert r.headers.get("access-control-allow-origin") == ORIGIN, r.headers
        assert r.headers.get("access-control-allow-credentials") == "true", r.headers

    assert_cors(httpx.get(jwt_gw.inbound + LP + "?subscriptions=" + q([{"eventType": "x"}]), headers=hdr, timeout=T), 403)
    assert_cors(httpx.get(jwt_gw.inbound + LP + "?subscriptions=not-json", headers=hdr, timeout=T), 400)
    assert_cors(httpx.get(jwt_gw.inbound + SSE + "?jwt=garbage", headers=hdr, timeout=T), 400)
    assert_cors(httpx.post(jwt_gw.inbound + "/_rig/v1/events", content=b"{", headers=hdr, timeout=T), 400)
    assert_cors(httpx.get(jwt_gw.inbound + "/no/such/route", headers=hdr, timeout=T), 404)
    gw = gateway_factory(MAX_CONNECTIONS_PER_MINUTE="1")
    assert httpx.get(gw.inbound + LP, headers=hdr, timeout=T).status_code == 200
    assert_cors(httpx.get(gw.inbound + LP, headers=hdr, timeout=T), 429)


# 12 -----------------------------------------------------------------------------------------------
def test_p12_v2_api_as_rigs_v2_controllers(gateway):
    """/v2/messages publishes (202, unchecked); /v2/apis lists, adds, shows, deletes as v3 does;
    /v2/responses wants a CloudEvent carrying rig.correlation (400 otherwise); /v2/session-blacklist: 201."""
    etype = uid("p12")
    with open_sse(gateway.inbound, [{"eventType": etype}]) as s:
        s.expect_handshake()
        ev = make_event(etype, {"v": 2})
        r = publish(gateway.api, ev, path="/v2/messages")
        assert r.status_code == 202, r.text
        assert s.next_event().data["id"] == ev["id"]
    api_id = uid("api")
    api = {"id": api_id, "name": api_id, "version_data": {"default": {"endpoints": [
        {"id": "e1", "method": "GET", "path_regex": f"/{api_id}/x"}]}},
           "proxy": {"target_url": "127.0.0.1", "port": 9, "use_env": False}}
    assert httpx.post(gateway.api + "/v2/apis", json=api, timeout=T).status_code == 201
    assert api_id in [a["id"] for a in httpx.get(gateway.api + "/v2/apis", timeout=T).json()]
    assert httpx.get(gateway.api + f"/v2/apis/{api_id}", timeout=T).json()["id"] == api_id
    assert httpx.get(gateway.api + f"/v3/apis/{api_id}", timeout=T).status_code == 200  # one set of APIs
    assert httpx.post(gateway.api + "/v2/apis", json=api, timeout=T).status_code == 409
    assert httpx.delete(gateway.api + f"/v2/apis/{api_id}", timeout=T).status_code == 204
    assert httpx.get(gateway.api + f"/v2/apis/{api_id}", timeout=T).status_code == 404
    r = httpx.post(gateway.api + "/v2/responses", json={"rig": {"correlation": "x"}}, timeout=T)
    assert r.status_code == 400, r.text  # not a CloudEvent
    r = httpx.post(gateway.api + "/v2/responses", json=make_event("t"), timeout=T)
    assert r.status_code == 400 and "correlation" in r.text, r.text
    r = httpx.post(gateway.api + "/v2/responses", json={**make_event("t"), "rig": {"correlation": uid("nobody")}}, timeout=T)
    assert r.status_code == 404, r.text  # a valid answer nobody waits for
    r = httpx.post(gateway.api + "/v2/session-blacklist", json={"sessionId": "s2", "validityInSeconds": 5}, timeout=T)
    assert r.status_code == 201 and r.headers["location"] == "/v2/session-blacklist/s2"
