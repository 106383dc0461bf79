"""HTTP long-polling transport: GET /_rig/v1/connection/longpolling with cookies."""

from __future__ import annotations

import asyncio
import json
import time
from urllib.parse import quote, unquote

import httpx
import pytest

from tests.helpers import T, LongPoll, make_event, open_raw, publish_ok, read_response, uid, wait_until

LP_WAIT_S = 0.5
LP_BUFFER = 5


@pytest.fixture(scope="module")
def lp_gateway():
    """A gateway with a short long-poll wait and a small per-session buffer."""
    from tests.conftest import start_gateway

    gw = start_gateway(RIGFAST_LONGPOLL_TIMEOUT_S=str(LP_WAIT_S), RIGFAST_LONGPOLL_BUFFER=str(LP_BUFFER))
    yield gw
    gw.stop()


def cookie_json(value: str):
    return json.loads(unquote(value))


def test_lp_first_request_creates_session(gateway):
    """The first poll answers 200 "ok" and sets connection_token and last_event_id cookies."""
    lp = LongPoll(gateway.inbound)
    try:
        r = lp.poll()
        assert r.status_code == 200, r.text
        assert r.json() == "ok"
        assert lp.cookies.get("connection_token"), r.headers.get_list("set-cookie")
        assert "last_event_id" in lp.cookies, r.headers.get_list("set-cookie")
        assert cookie_json(lp.cookies["last_event_id"]) == "first_event"
        assert r.headers.get("access-control-allow-credentials") == "true"
    finally:
        lp.close()


def test_lp_second_poll_returns_gateway_events(gateway):
    """The next poll returns rig.connection.create and rig.subscriptions_set with a last_event_id."""
    subs = [{"eventType": "greeting", "oneOf": [{"name": "lp-x"}]}]
    lp = LongPoll(gateway.inbound, subs)
    try:
        assert lp.poll().json() == "ok"
        r = lp.poll()
        assert r.status_code == 200
        assert r.headers.get("access-control-allow-credentials") == "true"
        body = r.json()
        assert set(body) >= {"last_event_id", "events"}
        assert isinstance(body["events"], list)
        types = [e["type"] for e in body["events"]]
        assert types[:2] == ["rig.connection.create", "rig.subscriptions_set"], types
        create, subs_set = body["events"][:2]
        assert create["data"]["connection_token"] == lp.token
        assert subs_set["data"] == subs
        assert isinstance(body["last_event_id"], str) and body["last_event_id"]
    finally:
        lp.close()


def test_lp_delivers_published_events(gateway):
    """Events published between polls are returned by the next poll, unchanged and in order."""
    etype = uid("lp")
    lp = LongPoll(gateway.inbound, [{"eventType": etype}])
    try:
        lp.poll()
        lp.collect_until(lambda e: e["type"] == "rig.subscriptions_set")
        e1, e2 = make_event(etype, {"n": 1}, ext1="a"), make_event(etype, {"n": 2})
        publish_ok(gateway.inbound, e1)
        publish_ok(gateway.inbound, e2)
        got = lp.collect_until(lambda e: e["id"] == e2["id"])
        assert [e for e in got if e["type"] == etype] == [e1, e2]
    finally:
        lp.close()


def test_lp_poll_wakes_up_on_event(gateway):
    """A waiting poll answers as soon as an event arrives, before its wait ends."""
    etype = uid("lp-wake")
    lp = LongPoll(gateway.inbound, [{"eventType": etype}])
    try:
        lp.poll()
        lp.collect_until(lambda e: e["type"] == "rig.subscriptions_set")
        cookie = "; ".join(f"{k}={v}" for k, v in lp.cookies.items())
        ev = make_event(etype, {"n": 1})

        async def main():
            reader, writer = await open_raw(gateway.hostport)
            try:
                writer.write(
                    f"GET /_rig/v1/connection/longpolling HTTP/1.1\r\nHost: x\r\nCookie: {cookie}\r\n\r\n".encode()
                )
                await writer.drain()
                # The poll is waiting: no answer yet (this gateway waits 3 s).
                with pytest.raises(asyncio.TimeoutError):
                    await asyncio.wait_for(reader.readuntil(b"\r\n"), 0.3)
                t0 = time.monotonic()
                await asyncio.to_thread(publish_ok, gateway.inbound, ev)
                resp = await read_response(reader, T)
                return resp, time.monotonic() - t0
            finally:
                writer.close()

        resp, elapsed = asyncio.run(main())
        assert resp.status == 200, resp
        assert [e["id"] for e in json.loads(resp.body)["events"]] == [ev["id"]]
        assert elapsed < 2.0, elapsed
    finally:
        lp.close()


def test_lp_empty_list_after_wait(lp_gateway):
    """With nothing to deliver, a poll waits about RIGFAST_LONGPOLL_TIMEOUT_S and returns an empty list."""
    lp = LongPoll(lp_gateway.inbound, [{"eventType": uid("lp-empty")}])
    try:
        lp.poll()
        lp.collect_until(lambda e: e["type"] == "rig.subscriptions_set")
        t0 = time.monotonic()
        r = lp.poll()
        elapsed = time.monotonic() - t0
        assert r.status_code == 200
        assert r.json()["events"] == []
        assert LP_WAIT_S * 0.6 <= elapsed < LP_WAIT_S + T, elapsed
    finally:
        lp.close()


def test_lp_buffer_is_bounded(lp_gateway):
    """A session keeps at most RIGFAST_LONGPOLL_BUFFER undelivered events, the newest included."""
    etype = uid("lp-buf")
    lp = LongPoll(lp_gateway.inbound, [{"eventType": etype}])
    try:
        lp.poll()
        lp.collect_until(lambda e: e["type"] == "rig.subscriptions_set")
        evs = [make_event(etype, {"n": i}) for i in range(3 * LP_BUFFER)]
        for ev in evs:
            publish_ok(lp_gateway.inbound, ev)
        got = lp.events()
        assert 0 < len(got) <= LP_BUFFER, [e.get("data") for e in got]
        assert evs[-1]["id"] in [e["id"] for e in got]
    finally:
        lp.close()


def test_lp_cookie_identifies_session(gateway):
    """Two long-polling clients have separate sessions; each sees only its own subscriptions' events."""
    ta, tb = uid("lp-a"), uid("lp-b")
    a, b = LongPoll(gateway.inbound, [{"eventType": ta}]), LongPoll(gateway.inbound, [{"eventType": tb}])
    try:
        for lp in (a, b):
            lp.poll()
            lp.collect_until(lambda e: e["type"] == "rig.subscriptions_set")
        assert a.token != b.token
        ea, eb = make_event(ta, {"n": "a"}), make_event(tb, {"n": "b"})
        publish_ok(gateway.inbound, ea)
        publish_ok(gateway.inbound, eb)
        assert [e["id"] for e in a.events()] == [ea["id"]]
        assert [e["id"] for e in b.events()] == [eb["id"]]
    finally:
        a.close()
        b.close()


def test_lp_session_expires_without_polls(gateway_factory):
    """A long-polling session not polled within its TTL is gone: PUT answers 410, a poll starts a new session."""
    # expiry may be checked on the heartbeat tick, so keep that short too
    gw = gateway_factory(RIGFAST_LONGPOLL_SESSION_TTL_S="0.5", RIGFAST_LONGPOLL_TIMEOUT_S="0.2",
                         RIGFAST_HEARTBEAT_INTERVAL_S="0.3")
    lp = LongPoll(gw.inbound, [{"eventType": uid("exp")}])
    try:
        assert lp.poll().json() == "ok"
        old = lp.token
        url = f"{gw.inbound}/_rig/v1/connection/longpolling/{quote(old, safe='')}/subscriptions"

        def gone():
            r = httpx.put(url, json={"subscriptions": []}, timeout=T)
            assert r.status_code in (204, 410), (r.status_code, r.text)
            return r.status_code == 410

        wait_until(gone, timeout=2 * T, interval=0.1, what="PUT on the expired session to answer 410")
        r = lp.poll()
        assert r.status_code == 200
        assert r.json() == "ok", r.text
        assert lp.token != old
    finally:
        lp.close()
