"""Session blacklist on the internal API: POST/GET, expiry, live connections ended, new requests refused."""

from __future__ import annotations

import asyncio
import json
import time
from urllib.parse import quote

import httpx
import jwt as pyjwt
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.conftest import JWT_SECRET
from tests.helpers import T, LongPoll, conn_count, make_event, open_sse, publish, uid, wait_conn_count, wait_until


def mint(jti: str | None = None, **claims) -> str:
    body = {"exp": int(time.time()) + 300}
    if jti is not None:
        body["jti"] = jti
    body.update(claims)
    return pyjwt.encode(body, JWT_SECRET, algorithm="HS256")


def blacklist(gw, session_id: str, validity=60, version: str = "v3") -> httpx.Response:
    return httpx.post(
        f"{gw.api}/{version}/session-blacklist",
        json={"sessionId": session_id, "validityInSeconds": validity},
        timeout=T,
    )


def is_blacklisted(gw, session_id: str, version: str = "v3") -> int:
    return httpx.get(f"{gw.api}/{version}/session-blacklist/{quote(session_id, safe='')}", timeout=T).status_code


@pytest.mark.parametrize("version", ["v3", "v2"])
def test_post_then_get(gateway, version):
    """POST answers 201 with location <path>/<id> and body {} (RIG's); GET answers 200 for a blacklisted
    session and 404 for another (v3 and v2 paths)."""
    sid = uid("sid")
    r = blacklist(gateway, sid, 60, version)
    assert r.status_code == 201, r.text
    assert r.headers["location"] == f"/{version}/session-blacklist/{sid}"
    assert r.json() == {}
    assert r.headers["content-type"].startswith("application/json")
    assert is_blacklisted(gateway, sid, version) == 200
    assert is_blacklisted(gateway, uid("other"), version) == 404
    other = "v2" if version == "v3" else "v3"
    assert is_blacklisted(gateway, sid, other) == 200


@pytest.mark.parametrize(
    "body",
    [b"not json", b"[]", b'{"validityInSeconds": 10}', b'{"sessionId": "x", "validityInSeconds": -1}',
     b'{"sessionId": "x"}', b'{"sessionId": "", "validityInSeconds": 5}'],
)
def test_bad_bodies_400(gateway, body):
    """Malformed blacklist requests are answered 400 with a message."""
    r = httpx.post(gateway.api + "/v3/session-blacklist", content=body,
                   headers={"content-type": "application/json"}, timeout=T)
    assert r.status_code == 400, r.text
    assert r.text.strip()


def test_entry_expires(gateway):
    """An entry disappears after validityInSeconds."""
    sid = uid("short")
    assert blacklist(gateway, sid, 1).status_code == 201
    assert is_blacklisted(gateway, sid) == 200
    wait_until(lambda: is_blacklisted(gateway, sid) == 404, timeout=T, interval=0.1, what="entry to expire")


def test_sse_killed_with_event_others_untouched(gateway):
    """A live SSE connection of the session gets rig.session_killed and is closed; another session keeps its stream."""
    sid = uid("sse-sid")
    etype = uid("bl")
    with open_sse(gateway.inbound, [{"eventType": etype}], jwt=mint(sid)) as victim, \
            open_sse(gateway.inbound, [{"eventType": etype}], jwt=mint(uid("keep"))) as other:
        victim.expect_handshake()
        other.expect_handshake()
        assert blacklist(gateway, sid).status_code == 201
        killed = victim.next_event()
        assert killed.event == "rig.session_killed"
        assert killed.data["type"] == "rig.session_killed" and killed.data["source"] == "rig"
        with pytest.raises(EOFError):
            victim.next_item()
        ev = make_event(etype, {"still": "here"})
        assert publish(gateway.inbound, ev).status_code == 202
        assert other.next_event().data["id"] == ev["id"]


def test_header_token_session_killed(gateway):
    """A session identified by an Authorization header token (not the query) is ended too."""
    sid = uid("hdr-sid")
    with open_sse(gateway.inbound, headers={"authorization": f"Bearer {mint(sid)}"}) as s:
        s.expect_handshake()
        assert blacklist(gateway, sid).status_code == 201
        assert s.next_event().event == "rig.session_killed"


def test_ws_closed_with_session_killed(gateway):
    """A live WebSocket of the session gets a close frame with reason 'Session killed.'."""
    sid = uid("ws-sid")

    async def main():
        url = f"{gateway.ws}/_rig/v1/connection/ws?jwt={quote(mint(sid), safe='')}"
        async with connect(url, ping_interval=None, open_timeout=T, close_timeout=T) as ws:
            for _ in range(2):
                json.loads(await asyncio.wait_for(ws.recv(), T))
            r = await asyncio.to_thread(blacklist, gateway, sid)
            assert r.status_code == 201
            with pytest.raises(ConnectionClosed) as info:
                await asyncio.wait_for(ws.recv(), T)
            assert info.value.rcvd is not None
            assert info.value.rcvd.reason == "Session killed."

    asyncio.run(main())


def test_longpolling_session_dropped(gateway):
    """A long-polling session of the session is dropped: its connection token is gone (PUT 410), new polls
    with the token 400 (RIG decodes every token on connect)."""
    sid = uid("lp-sid")
    token = mint(sid)
    lp = LongPoll(gateway.inbound, headers={"authorization": f"Bearer {token}"})
    try:
        assert lp.poll().status_code == 200
        conn = lp.token
        lp.events()
        assert blacklist(gateway, sid).status_code == 201
        r = httpx.put(f"{gateway.inbound}/_rig/v1/connection/longpolling/{conn}/subscriptions",
                      json={"subscriptions": []}, timeout=T)
        assert r.status_code == 410, r.text
        r = lp.poll()
        assert r.status_code == 400 and "blacklisted" in r.text, r.text
    finally:
        lp.close()


def test_parked_longpoll_released(gateway):
    """A long-poll waiting for events when its session is blacklisted does not hang: it ends at once."""
    sid = uid("lp-park")
    lp = LongPoll(gateway.inbound, headers={"authorization": f"Bearer {mint(sid)}"})
    try:
        assert lp.poll().status_code == 200
        lp.events()  # the two gateway events

        async def main():
            fut = asyncio.get_running_loop().run_in_executor(None, lp.poll)
            await asyncio.to_thread(
                wait_until, lambda: conn_count(gateway.api, "longpolling") >= 1, T, 0.05, "a session"
            )
            r = await asyncio.to_thread(blacklist, gateway, sid)
            assert r.status_code == 201
            started = time.monotonic()
            try:
                resp = await asyncio.wait_for(fut, T)
                outcome = resp.status_code
            except httpx.HTTPError:
                outcome = "closed"
            return outcome, time.monotonic() - started

        outcome, elapsed = asyncio.run(main())
        assert elapsed < 2.0, f"parked poll took {elapsed:.1f}s to end ({outcome})"
    finally:
        lp.close()


def test_new_requests_with_blacklisted_token_refused(gateway):
    """After the blacklist call every new request with that session's token is refused: SSE 400, WS close 1000
    "Bad request.", PUT 400 (RIG's answers), publish 403."""
    sid = uid("refuse")
    token = mint(sid)
    assert blacklist(gateway, sid).status_code == 201
    with open_sse(gateway.inbound, jwt=token) as s:
        assert s.status_code == 400
        assert "blacklisted" in s.body_text()
    r = publish(gateway.inbound, make_event(uid("x")), headers={"authorization": f"Bearer {token}"})
    assert r.status_code == 403
    with open_sse(gateway.inbound) as s:
        conn, _ = s.expect_handshake()
        r = httpx.put(f"{gateway.inbound}/_rig/v1/connection/sse/{conn}/subscriptions",
                      json={"subscriptions": []}, headers={"authorization": f"Bearer {token}"}, timeout=T)
        assert r.status_code == 400 and "blacklisted" in r.text

    async def ws():
        url = f"{gateway.ws}/_rig/v1/connection/ws?jwt={quote(token, safe='')}"
        async with connect(url, ping_interval=None, open_timeout=T, close_timeout=T) as c:
            with pytest.raises(ConnectionClosed) as info:
                await asyncio.wait_for(c.recv(), T)
            return info.value.rcvd

    rcvd = asyncio.run(ws())
    assert rcvd is not None and (rcvd.code, rcvd.reason) == (1000, "Bad request.")


def test_all_transports_of_one_session_end_together(gateway):
    """SSE, WS and long-polling connections sharing one session all end on one blacklist call."""
    sid = uid("multi")
    token = mint(sid)
    base = {k: conn_count(gateway.api, k) for k in ("sse", "ws", "longpolling")}

    async def main():
        url = f"{gateway.ws}/_rig/v1/connection/ws?jwt={quote(token, safe='')}"
        async with connect(url, ping_interval=None, open_timeout=T, close_timeout=T) as ws:
            for _ in range(2):
                await asyncio.wait_for(ws.recv(), T)
            sse = await asyncio.to_thread(open_sse, gateway.inbound, None, token)
            lp = LongPoll(gateway.inbound, headers={"authorization": f"Bearer {token}"})
            try:
                await asyncio.to_thread(sse.expect_handshake)
                assert (await asyncio.to_thread(lp.poll)).status_code == 200
                r = await asyncio.to_thread(blacklist, gateway, sid)
                assert r.status_code == 201
                with pytest.raises(ConnectionClosed):
                    await asyncio.wait_for(ws.recv(), T)
                ev = await asyncio.to_thread(sse.next_event)
                assert ev.event == "rig.session_killed"
            finally:
                sse.close()
                lp.close()

    asyncio.run(main())
    for kind, n in base.items():
        wait_conn_count(gateway.api, kind, n)


def test_custom_session_field(gateway_factory):
    """JWT_SESSION_FIELD names the claim (here a nested one) that identifies the session."""
    gw = gateway_factory(JWT_SESSION_FIELD="/ctx/sid")
    sid = uid("nested")
    with open_sse(gw.inbound, jwt=mint(uid("jti-ignored"), ctx={"sid": sid})) as s:
        s.expect_handshake()
        assert blacklist(gw, sid).status_code == 201
        assert s.next_event().event == "rig.session_killed"


def test_blacklist_size_in_metrics(gateway_factory):
    """rig_blacklist_size counts live entries."""
    from prometheus_client.parser import text_string_to_metric_families

    gw = gateway_factory()

    def size() -> float:
        text = httpx.get(gw.api + "/metrics", timeout=T).text
        fam = {f.name: f for f in text_string_to_metric_families(text)}["rig_blacklist_size"]
        return fam.samples[0].value

    assert size() == 0
    for _ in range(3):
        assert blacklist(gw, uid("m")).status_code == 201
    assert size() == 3
