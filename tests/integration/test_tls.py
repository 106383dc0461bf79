"""TLS: HTTPS_CERTFILE / HTTPS_KEYFILE (/ HTTPS_KEYFILE_PASS) open 4001/4011-style ports for every transport."""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from urllib.parse import quote

import httpx
import jwt as pyjwt
import pytest
from websockets.asyncio.client import connect

from tests.certs import make_cert
from tests.conftest import JWT_SECRET, start_gateway
from tests.helpers import SseParser, T, free_port, make_event, uid

PASSWORD = "correct horse battery staple"


def start_tls_gateway(cert: str, key: str, **env):
    https, api_https = free_port(), free_port()
    gw = start_gateway(HTTPS_CERTFILE=cert, HTTPS_KEYFILE=key, INBOUND_HTTPS_PORT=str(https),
                       API_HTTPS_PORT=str(api_https), **env)
    gw.https = f"https://127.0.0.1:{https}"
    gw.api_https = f"https://127.0.0.1:{api_https}"
    gw.wss = f"wss://127.0.0.1:{https}"
    return gw


@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    """(gateway, client SSL context) with a plain (unencrypted) key."""
    cert, key = make_cert(tmp_path_factory.mktemp("tls"))
    gw = start_tls_gateway(cert, key)
    ctx = ssl.create_default_context(cafile=cert)
    yield gw, ctx
    gw.stop()


def read_sse_events(response: httpx.Response, n: int) -> list:
    """The next ``n`` SSE events of a streaming response (reads bounded by the client's timeout)."""
    if not hasattr(response, "_sse_lines"):
        response._sse_lines = response.iter_lines()
        response._sse_parser = SseParser()
    parser, out = response._sse_parser, []
    for line in response._sse_lines:
        item = parser.feed_line(line)
        if item is not None and item.kind == "event":
            out.append(item)
            if len(out) == n:
                return out
    raise AssertionError(f"stream ended after {len(out)} events")


def test_health_over_tls_on_both_ports(tls):
    """The inbound and internal TLS ports answer /_rig/health and /health; the plain ports still work."""
    gw, ctx = tls
    with httpx.Client(verify=ctx, timeout=T) as c:
        assert c.get(gw.https + "/_rig/health").text.strip() == "OK"
        assert c.get(gw.api_https + "/health").text.strip() == "OK"
    assert httpx.get(gw.api + "/health", timeout=T).status_code == 200


def test_sse_over_tls(tls):
    """An SSE stream over TLS gets the handshake events and a published event."""
    gw, ctx = tls
    etype = uid("tls-sse")
    params = {"subscriptions": json.dumps([{"eventType": etype}])}
    with httpx.Client(verify=ctx, timeout=T) as c, c.stream("GET", gw.https + "/_rig/v1/connection/sse", params=params) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        first, second = read_sse_events(r, 2)
        assert first.event == "rig.connection.create" and second.event == "rig.subscriptions_set"
        ev = make_event(etype, {"secure": True})
        assert c.post(gw.https + "/_rig/v1/events", json=ev).status_code == 202
        assert read_sse_events(r, 1)[0].data == ev


def test_ws_over_tls(tls):
    """A WebSocket over TLS (wss://) gets the handshake frames and an event published on the internal TLS port."""
    gw, ctx = tls
    etype = uid("tls-ws")

    async def main():
        url = f"{gw.wss}/_rig/v1/connection/ws?subscriptions={quote(json.dumps([{'eventType': etype}]), safe='')}"
        async with connect(url, ssl=ctx, ping_interval=None, open_timeout=T, close_timeout=T) as ws:
            types = [json.loads(await asyncio.wait_for(ws.recv(), T))["type"] for _ in range(2)]
            assert types == ["rig.connection.create", "rig.subscriptions_set"]
            ev = make_event(etype, {"over": "wss"})
            r = await asyncio.to_thread(
                lambda: httpx.post(gw.api_https + "/v3/messages", json=ev, verify=ctx, timeout=T)
            )
            assert r.status_code == 202, r.text
            assert json.loads(await asyncio.wait_for(ws.recv(), T)) == ev

    asyncio.run(main())


def test_longpolling_over_tls(tls):
    """Long-polling over TLS creates a session and returns events on the next poll."""
    gw, ctx = tls
    with httpx.Client(verify=ctx, timeout=T) as c:
        r = c.get(gw.https + "/_rig/v1/connection/longpolling")
        assert r.status_code == 200 and r.json() == "ok"
        r = c.get(gw.https + "/_rig/v1/connection/longpolling")
        assert [e["type"] for e in r.json()["events"]][:2] == ["rig.connection.create", "rig.subscriptions_set"]


def test_plain_http_on_tls_port_fails(tls):
    """A plaintext request to the TLS port gets no HTTP answer (the port speaks TLS only)."""
    gw, _ = tls
    with pytest.raises(httpx.HTTPError):
        httpx.get(gw.https.replace("https://", "http://") + "/_rig/health", timeout=T)


def test_encrypted_key_with_password(tmp_path):
    """HTTPS_KEYFILE_PASS unlocks an encrypted key; SSE with a JWT works over it."""
    cert, key = make_cert(tmp_path, PASSWORD)
    gw = start_tls_gateway(cert, key, HTTPS_KEYFILE_PASS=PASSWORD, SUBSCRIPTION_CHECK="jwt_validation")
    try:
        ctx = ssl.create_default_context(cafile=cert)
        token = pyjwt.encode({"exp": int(time.time()) + 60, "jti": uid()}, JWT_SECRET, algorithm="HS256")
        with httpx.Client(verify=ctx, timeout=T) as c:
            named = {"subscriptions": '[{"eventType": "tls"}]'}  # the check runs when subscriptions are named
            with c.stream("GET", gw.https + "/_rig/v1/connection/sse", params=named) as r:
                assert r.status_code == 403
            with c.stream("GET", gw.https + "/_rig/v1/connection/sse", params={**named, "jwt": token}) as r:
                assert r.status_code == 200
                assert read_sse_events(r, 1)[0].event == "rig.connection.create"
    finally:
        gw.stop()


def test_wrong_key_password_stops_start(tmp_path):
    """A wrong HTTPS_KEYFILE_PASS stops the gateway at start with a message, instead of running without TLS."""
    cert, key = make_cert(tmp_path, PASSWORD)
    with pytest.raises(RuntimeError) as info:
        start_tls_gateway(cert, key, HTTPS_KEYFILE_PASS="wrong")
    assert "exited" in str(info.value)
    assert "HTTPS_KEYFILE" in str(info.value)


def test_longpoll_cookies_secure_on_tls(tls):
    """On the TLS port the long-polling cookies also carry Secure (HttpOnly and SameSite=Lax as on plain HTTP)."""
    gw, ctx = tls
    with httpx.Client(verify=ctx, timeout=T) as c:
        r = c.get(gw.https + "/_rig/v1/connection/longpolling")
        assert r.status_code == 200
        cookies = r.headers.get_list("set-cookie")
        assert len(cookies) == 2
        for cookie in cookies:
            attrs = {a.strip().lower() for a in cookie.split(";")[1:]}
            assert {"secure", "httponly", "samesite=lax", "path=/"} <= attrs, cookie
        r = c.get(gw.https + "/_rig/v1/connection/longpolling")  # the poll answer sets last_event_id again
        assert all("Secure" in v for v in r.headers.get_list("set-cookie"))
