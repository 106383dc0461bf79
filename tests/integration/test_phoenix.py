"""Phoenix Channels (/socket/websocket, /socket/longpoll) with plain clients: websockets and httpx."""

from __future__ import annotations

import asyncio
import json
import time
from urllib.parse import quote

import httpx
import jwt as pyjwt
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.conftest import JWT_SECRET
from tests.helpers import T, make_event, publish_ok, uid, wait_until


def mint(sid: str, **claims) -> str:
    body = {"jti": sid, "exp": int(time.time()) + 600, **claims}
    return pyjwt.encode(body, JWT_SECRET, algorithm="HS256")


def blacklist(gw, session_id: str) -> None:
    r = httpx.post(f"{gw.api}/v3/session-blacklist", json={"sessionId": session_id, "validityInSeconds": 60}, timeout=T)
    assert r.status_code == 201, r.text


class Phx:
    """A Phoenix socket spoken by hand: serializer 2.0.0 arrays or 1.0.0 objects."""

    def __init__(self, ws, vsn: str):
        self.ws = ws
        self.vsn = vsn
        self.ref = 0

    async def send(self, topic, event, payload=None, join_ref=None, ref=None):
        if ref is None:
            self.ref += 1
            ref = str(self.ref)
        payload = {} if payload is None else payload
        if self.vsn == "2.0.0":
            await self.ws.send(json.dumps([join_ref, ref, topic, event, payload]))
        else:
            await self.ws.send(json.dumps({"join_ref": join_ref, "ref": ref, "topic": topic, "event": event, "payload": payload}))
        return ref

    async def recv(self, timeout=T):
        raw = await asyncio.wait_for(self.ws.recv(), timeout)
        msg = json.loads(raw)
        if self.vsn == "2.0.0":
            assert isinstance(msg, list) and len(msg) == 5, msg
            return msg
        assert isinstance(msg, dict), msg
        return [msg["join_ref"], msg["ref"], msg["topic"], msg["event"], msg["payload"]]

    async def reply(self, ref, timeout=T):
        """The phx_reply to ``ref`` (pushes before it are returned too)."""
        seen = []
        while True:
            m = await self.recv(timeout)
            if m[3] == "phx_reply" and m[1] == ref:
                return m, seen
            seen.append(m)

    async def no_message(self, wait=0.3):
        try:
            m = await asyncio.wait_for(self.ws.recv(), wait)
        except asyncio.TimeoutError:
            return
        raise AssertionError(f"unexpected message {m}")


def url(gw, vsn="2.0.0", **params) -> str:
    q = "&".join([f"vsn={vsn}"] + [f"{k}={quote(v, safe='')}" for k, v in params.items()])
    return f"{gw.ws}/socket/websocket?{q}"


def phx(gw, vsn="2.0.0", **params):
    return connect(url(gw, vsn, **params), ping_interval=None, open_timeout=T, close_timeout=T)


async def join(p: Phx, topic, payload=None, ref=None):
    """phx_join as the JS client sends it (join_ref = ref); returns the reply."""
    p.ref += 1
    ref = ref or str(p.ref)
    await p.send(topic, "phx_join", payload or {}, join_ref=ref, ref=ref)
    m, seen = await p.reply(ref)
    assert not seen, seen
    return m


def run(coro):
    asyncio.run(asyncio.wait_for(coro, 6 * T))


@pytest.mark.parametrize("vsn", ["2.0.0", "1.0.0"])
def test_heartbeat_join_push_both_serializers(gateway, vsn):
    """Heartbeat gets phx_reply ok; a join replies ok with token + subscriptions; a matching event is pushed with its resume id."""
    etype = uid("phx")

    async def main():
        async with phx(gateway, vsn) as ws:
            p = Phx(ws, vsn)
            ref = await p.send("phoenix", "heartbeat", {})
            m, _ = await p.reply(ref)
            assert m == [None, ref, "phoenix", "phx_reply", {"status": "ok", "response": {}}]
            rep = await join(p, "rig:feed", {"subscriptions": [{"eventType": etype}]})
            assert rep[0] == rep[1] and rep[2] == "rig:feed", rep
            assert rep[4]["status"] == "ok", rep
            resp = rep[4]["response"]
            assert isinstance(resp["connection_token"], str) and len(resp["connection_token"]) >= 16
            assert resp["subscriptions"] == [{"eventType": etype, "oneOf": []}]
            ev = make_event(etype, {"n": 1})
            publish_ok(gateway.inbound, ev)
            push = await p.recv()
            join_ref, rid, topic, event, payload = push
            assert (join_ref, topic, event) == (None, "rig:feed", etype), push
            assert payload == ev or payload["id"] == ev["id"], push
            assert isinstance(rid, str) and not rid.isdigit(), rid  # never a bare integer
            await p.no_message()  # rig.subscriptions_set / rig.connection.create are not pushed

    run(main())


def test_bad_messages_answered_as_phoenix_does(gateway):
    """Push before join, foreign topic, unknown event, join twice, leave: each answered; not-JSON and wrong arity close the socket."""
    etype = uid("phx-bad")

    async def main():
        async with phx(gateway) as ws:
            p = Phx(ws, "2.0.0")
            ref = await p.send("rig:nojoin", "subscriptions", {"subscriptions": []})
            m, _ = await p.reply(ref)
            assert m[4] == {"status": "error", "response": {"reason": "unmatched topic"}}, m
            rep = await join(p, "room:lobby")
            assert rep[4] == {"status": "error", "response": {"reason": "unmatched topic"}}, rep
            rep = await join(p, "rig:a", {"subscriptions": [{"eventType": etype}]})
            first_join_ref = rep[0]
            assert rep[4]["status"] == "ok"
            ref = await p.send("rig:a", "shout", {}, join_ref=first_join_ref)
            m, _ = await p.reply(ref)
            assert m[4]["status"] == "error" and "unknown event" in m[4]["response"]["reason"], m
            # bad subscriptions: error reply naming the problem, socket alive
            p.ref += 1
            ref = str(p.ref)
            await p.send("rig:b", "phx_join", {"subscriptions": "nope"}, join_ref=ref, ref=ref)
            m, _ = await p.reply(ref)
            assert m[4]["status"] == "error" and m[4]["response"]["reason"], m
            # join twice: the old channel is closed (phx_close with the old join ref), the new one joins
            p.ref += 1
            ref = str(p.ref)
            await p.send("rig:a", "phx_join", {"subscriptions": [{"eventType": etype}]}, join_ref=ref, ref=ref)
            m, seen = await p.reply(ref)
            assert seen == [[first_join_ref, first_join_ref, "rig:a", "phx_close", {}]], seen
            assert m[4]["status"] == "ok"
            # still serving after all that
            ev = make_event(etype, {"n": 1})
            publish_ok(gateway.inbound, ev)
            push = await p.recv()
            assert push[2:4] == ["rig:a", etype] and push[4]["id"] == ev["id"]
            await p.no_message()  # delivered once, not to the replaced channel too
            # leave: reply ok, then phx_close; no more events
            lref = await p.send("rig:a", "phx_leave", {}, join_ref=ref)
            m = await p.recv()
            assert m == [ref, lref, "rig:a", "phx_reply", {"status": "ok", "response": {}}], m
            assert await p.recv() == [ref, ref, "rig:a", "phx_close", {}]
            publish_ok(gateway.inbound, make_event(etype, {"n": 2}))
            await p.no_message()
            # wrong arity: Phoenix's socket dies, so the server closes it
            await ws.send(json.dumps([None, "9", "phoenix", "heartbeat"]))
            with pytest.raises(ConnectionClosed) as info:
                await asyncio.wait_for(ws.recv(), T)
            assert info.value.rcvd is not None and info.value.rcvd.code == 1011, info.value
            assert "array" in info.value.rcvd.reason

        async with phx(gateway) as ws:
            await ws.send("this is not json")
            with pytest.raises(ConnectionClosed) as info:
                await asyncio.wait_for(ws.recv(), T)
            assert info.value.rcvd.code == 1011 and "not JSON" in info.value.rcvd.reason
        # the gateway is fine
        async with phx(gateway) as ws:
            p = Phx(ws, "2.0.0")
            ref = await p.send("phoenix", "heartbeat", {})
            m, _ = await p.reply(ref)
            assert m[4]["status"] == "ok"

    run(main())


def test_several_topics_subscriptions_push_and_filtered_types(gateway):
    """Two topics on one socket, each with its own subscriptions; the subscriptions push replaces them; phx_ types never pushed."""
    a, b, c = uid("phx-a"), uid("phx-b"), uid("phx-c")
    phx_type = "phx_" + uid("x")

    async def main():
        async with phx(gateway) as ws:
            p = Phx(ws, "2.0.0")
            ra = await join(p, "rig:one", {"subscriptions": [{"eventType": a}, {"eventType": phx_type}]})
            rb = await join(p, "rig:two", {"subscriptions": [{"eventType": b}]})
            assert ra[4]["response"]["connection_token"] != rb[4]["response"]["connection_token"]
            ea, eb = make_event(a, {"n": 1}), make_event(b, {"n": 1})
            publish_ok(gateway.inbound, make_event(phx_type, {"n": 0}))
            publish_ok(gateway.inbound, ea)
            publish_ok(gateway.inbound, eb)
            got = [await p.recv(), await p.recv()]
            assert sorted((m[2], m[4]["id"]) for m in got) == sorted([("rig:one", ea["id"]), ("rig:two", eb["id"])]), got
            # replace rig:one's subscriptions with c
            ref = await p.send("rig:one", "subscriptions", {"subscriptions": [{"eventType": c}]}, join_ref=ra[0])
            m, _ = await p.reply(ref)
            assert m[4] == {"status": "ok", "response": {"subscriptions": [{"eventType": c, "oneOf": []}]}}, m
            publish_ok(gateway.inbound, make_event(a, {"n": 2}))
            ec = make_event(c, {"n": 1})
            publish_ok(gateway.inbound, ec)
            m = await p.recv()
            assert m[2:4] == ["rig:one", c] and m[4]["id"] == ec["id"], m
            await p.no_message()

    run(main())


def test_jwt_connect_refusal_and_automatic_subscriptions(gateway):
    """A bad or blacklisted token is refused with 403 before the upgrade; a good one subscribes its channel automatically."""
    name = uid("user")

    async def main():
        for bad in ("not-a-jwt", pyjwt.encode({"jti": "x", "exp": int(time.time()) - 3600}, JWT_SECRET, algorithm="HS256")):
            with pytest.raises(InvalidStatus) as info:
                async with phx(gateway, token=bad):
                    pass
            assert info.value.response.status_code == 403
        sid = uid("bl")
        blacklist(gateway, sid)
        with pytest.raises(InvalidStatus) as info:
            async with phx(gateway, jwt=mint(sid)):
                pass
        assert info.value.response.status_code == 403
        async with phx(gateway, token=mint(uid("s"), username=name)) as ws:
            p = Phx(ws, "2.0.0")
            rep = await join(p, "rig:me")
            assert rep[4]["response"]["subscriptions"] == [{"eventType": "greeting", "oneOf": [{"name": name}]}], rep
            ev = make_event("greeting", {"name": name})
            publish_ok(gateway.inbound, make_event("greeting", {"name": uid("other")}))
            publish_ok(gateway.inbound, ev)
            m = await p.recv()
            assert m[2:4] == ["rig:me", "greeting"] and m[4]["id"] == ev["id"]

    run(main())


def test_blacklist_sends_phx_error_on_every_topic_then_closes(gateway):
    sid = uid("victim")

    async def main():
        async with phx(gateway, token=mint(sid)) as ws, phx(gateway, token=mint(uid("keep"))) as other:
            p, q = Phx(ws, "2.0.0"), Phx(other, "2.0.0")
            r1 = await join(p, "rig:x")
            r2 = await join(p, "rig:y")
            await join(q, "rig:x")
            blacklist(gateway, sid)
            got = [await p.recv(), await p.recv()]
            assert sorted(got) == sorted([[r1[0], r1[0], "rig:x", "phx_error", {}], [r2[0], r2[0], "rig:y", "phx_error", {}]]), got
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), T)
            ref = await q.send("phoenix", "heartbeat", {})
            m, _ = await q.reply(ref)
            assert m[4]["status"] == "ok"  # the other session is untouched

    run(main())


def test_rejoin_with_last_event_id_replays_in_order_and_gap(gateway_factory):
    """A join with last_event_id replays what was missed, after the reply, in order; too far back: rig.history_gap first."""
    gw = gateway_factory(RIGFAST_HISTORY_SIZE="5")
    etype = uid("phx-res")
    subs = {"subscriptions": [{"eventType": etype}]}

    async def main():
        async with phx(gw) as ws:
            p = Phx(ws, "2.0.0")
            await join(p, "rig:r", subs)
            publish_ok(gw.inbound, make_event(etype, {"n": 0}))
            last = (await p.recv())[1]
        missed = [make_event(etype, {"n": i}) for i in range(1, 4)]
        for ev in missed:
            publish_ok(gw.inbound, ev)
        async with phx(gw) as ws:
            p = Phx(ws, "2.0.0")
            rep = await join(p, "rig:r", {**subs, "last_event_id": last})
            assert rep[4]["status"] == "ok"
            replayed = [await p.recv() for _ in missed]
            assert [m[4]["id"] for m in replayed] == [e["id"] for e in missed]
            assert all(m[0] is None and m[2] == "rig:r" for m in replayed)
            live = make_event(etype, {"n": "live"})
            publish_ok(gw.inbound, live)
            assert (await p.recv())[4]["id"] == live["id"]
            await p.no_message()
        for i in range(8):
            publish_ok(gw.inbound, make_event(etype, {"n": 10 + i}))
        async with phx(gw) as ws:
            p = Phx(ws, "2.0.0")
            await join(p, "rig:r", {**subs, "last_event_id": last})
            gap = await p.recv()
            assert gap[1] is None and gap[3] == "rig.history_gap" and gap[4]["data"]["last_event_id"] == last, gap

    run(main())


def test_idle_socket_closed_and_connections_counted(gateway_factory):
    gw = gateway_factory(RIGFAST_PHOENIX_IDLE_S="1", RIGFAST_HEARTBEAT_INTERVAL_S="0.3")

    async def main():
        async with phx(gw) as ws:
            p = Phx(ws, "2.0.0")
            await join(p, "rig:a")
            started = time.monotonic()  # the server hears the next message after this
            await join(p, "rig:b")
            assert httpx.get(gw.api + "/health?detailed", timeout=T).json()["connections"]["phoenix"] == 1
            with pytest.raises(ConnectionClosed) as info:
                await asyncio.wait_for(ws.recv(), 4 * T)
            assert time.monotonic() - started >= 0.9
            assert info.value.rcvd is not None and info.value.rcvd.reason == "idle timeout"
        wait_until(lambda: httpx.get(gw.api + "/health?detailed", timeout=T).json()["connections"]["phoenix"] == 0,
                   what="phoenix connection count back to 0")
        metrics = httpx.get(gw.api + "/metrics", timeout=T).text
        assert 'rig_connections_opened_total{transport="phoenix"} 1' in metrics.replace(".0", ""), metrics

    run(main())


# ------------------------------------------------------------------ long-polling


class LP:
    def __init__(self, gw, vsn="2.0.0", **params):
        self.base = gw.inbound + "/socket/longpoll"
        self.params = {"vsn": vsn, **params}
        self.client = httpx.Client(timeout=3 * T, headers={"origin": "http://page.example"})
        self.token = None
        self.ref = 0

    def get(self):
        params = dict(self.params)
        if self.token:
            params["token"] = self.token
        r = self.client.get(self.base, params=params)
        assert r.status_code == 200, r.text
        return r

    def post(self, *msgs):
        self.ref += 1
        body = "\n".join(json.dumps(m) for m in msgs)
        r = self.client.post(self.base, params={**self.params, "token": self.token}, content=body,
                             headers={"content-type": "application/x-ndjson"})
        assert r.status_code == 200
        return r.json()

    def messages(self, until=None, polls=10):
        out = []
        for _ in range(polls):
            body = self.get().json()
            assert body["status"] in (200, 204), body
            out += [json.loads(m) for m in body.get("messages", [])]
            if until is None or until(out):
                return out
        raise AssertionError(f"not there after {polls} polls: {out}")


def test_longpoll_as_phoenix_serves_it(gateway_factory):
    """410 + token first, POSTed ndjson joins, 200 with frame strings, 204 when idle, CORS with credentials, 410 unknown token."""
    gw = gateway_factory(RIGFAST_PHOENIX_POLL_TIMEOUT_S="0.5", CORS="http://page.example")
    etype = uid("phx-lp")
    lp = LP(gw)
    r = lp.get()
    assert r.headers["access-control-allow-origin"] == "http://page.example"
    assert r.headers["access-control-allow-credentials"] == "true"
    first = r.json()
    assert first["status"] == 410 and first["messages"] == [] and first["token"], first
    lp.token = first["token"]
    assert lp.post([None, "1", "phoenix", "heartbeat", {}], ["2", "2", "rig:lp", "phx_join", {"subscriptions": [{"eventType": etype}]}]) == {"status": 200}
    got = lp.messages(until=lambda out: len(out) >= 2)
    assert got[0] == [None, "1", "phoenix", "phx_reply", {"status": "ok", "response": {}}]
    assert got[1][:4] == ["2", "2", "rig:lp", "phx_reply"] and got[1][4]["status"] == "ok"
    assert lp.get().json() == {"status": 204, "token": lp.token}
    ev = make_event(etype, {"n": 1})
    publish_ok(gw.inbound, ev)
    push = lp.messages(until=lambda out: out)
    assert push[0][0] is None and push[0][2:4] == ["rig:lp", etype] and push[0][4]["id"] == ev["id"], push
    pre = lp.client.options(lp.base, headers={"access-control-request-method": "POST", "access-control-request-headers": "content-type"})
    assert pre.status_code == 204 and "POST" in pre.headers["access-control-allow-methods"]
    assert "content-type" in pre.headers["access-control-allow-headers"]
    gone = LP(gw)
    gone.token = "nobody.w0.AAAAAAAAAAAAAAAAAAAAAAAA"
    assert gone.get().json() == {"status": 410}
    assert gone.post([None, "1", "phoenix", "heartbeat", {}]) == {"status": 410}
    refused = LP(gw, jwt="not-a-jwt")
    assert refused.get().json() == {"status": 403}


def test_longpoll_blacklist_and_auth_token_param(gateway_factory):
    """The JWT can ride in `token` (the LP session token follows it); blacklisting sends phx_error, then the session is gone."""
    gw = gateway_factory(RIGFAST_PHOENIX_POLL_TIMEOUT_S="0.5")
    sid = uid("lp-victim")
    lp = LP(gw, token=mint(sid, username="lp-user"))
    first = lp.get().json()
    assert first["status"] == 410
    # as the JS client: the page's token first, the session's appended
    lp.params = {"token": lp.params["token"], "vsn": "2.0.0"}
    jwt_token = lp.params.pop("token")
    lp.token = first["token"]
    base = lp.base
    lp.base = f"{base}?token={quote(jwt_token, safe='')}"
    assert lp.post(["3", "3", "rig:me", "phx_join", {}]) == {"status": 200}
    rep = lp.messages(until=lambda out: out)[0]
    assert rep[4]["response"]["subscriptions"] == [{"eventType": "greeting", "oneOf": [{"name": "lp-user"}]}], rep
    blacklist(gw, sid)
    err = lp.messages(until=lambda out: out)
    assert err == [["3", "3", "rig:me", "phx_error", {}]], err
    assert lp.get().json() == {"status": 410}


def test_auth_token_subprotocol_and_put_on_a_channel_token(gateway):
    """The client's authToken option (a base64url.bearer.phx. subprotocol) authenticates; a channel's
    connection token works with PUT .../subscriptions like any connection's."""
    import base64

    name = uid("sub-user")
    etype = uid("phx-put")
    token = mint(uid("s"), username=name)
    proto = "base64url.bearer.phx." + base64.b64encode(token.encode()).decode().rstrip("=")

    async def main():
        async with connect(url(gateway), subprotocols=["phoenix", proto], ping_interval=None, open_timeout=T, close_timeout=T) as ws:
            assert ws.subprotocol == "phoenix"
            p = Phx(ws, "2.0.0")
            rep = await join(p, "rig:auth")
            assert rep[4]["response"]["subscriptions"] == [{"eventType": "greeting", "oneOf": [{"name": name}]}], rep
            ctoken = rep[4]["response"]["connection_token"]
            r = await asyncio.to_thread(httpx.put, f"{gateway.inbound}/_rig/v1/connection/ws/{ctoken}/subscriptions",
                                        json={"subscriptions": [{"eventType": etype}]}, timeout=T)
            assert r.status_code == 204, r.text
            ev = make_event(etype)
            await asyncio.to_thread(publish_ok, gateway.inbound, ev)
            m = await p.recv()
            assert m[2:4] == ["rig:auth", etype] and m[4]["id"] == ev["id"], m

    run(main())


def test_longpoll_sessions_bounded(gateway_factory):
    """Phoenix long-polling sessions count against RIGFAST_LONGPOLL_MAX_SESSIONS: past it a new one is 503 + Retry-After."""
    gw = gateway_factory(RIGFAST_LONGPOLL_MAX_SESSIONS="2")
    first, second = LP(gw).get().json(), LP(gw).get().json()
    assert first["status"] == second["status"] == 410
    r = httpx.get(gw.inbound + "/socket/longpoll", params={"vsn": "2.0.0"}, timeout=T)
    assert r.status_code == 503 and r.headers["retry-after"] == "1" and "RIGFAST_LONGPOLL_MAX_SESSIONS" in r.text
    # a session that ends frees its place
    gone = LP(gw)
    gone.token = first["token"]
    assert gone.post(["1", "1", "rig:a", "phx_join", "not an object"]) == {"status": 200}
    assert gone.post("not a frame") == {"status": 410}  # a bad message drops the session, as Phoenix's crash would
    assert LP(gw).get().json()["status"] == 410


def test_websocket_handshake_rules(gateway):
    """/socket/websocket checks the upgrade as /_rig/v1/connection/ws does: not an upgrade 426, bad key 400."""
    base = gateway.inbound + "/socket/websocket?vsn=2.0.0"
    assert httpx.get(base, timeout=T).status_code == 426
    r = httpx.get(base, headers={"upgrade": "websocket", "connection": "Upgrade", "sec-websocket-version": "13",
                                 "sec-websocket-key": "short"}, timeout=T)
    assert r.status_code == 400 and "Sec-WebSocket-Key" in r.text
