"""Phoenix Channels across workers and nodes: long-polling requests reach the worker holding the socket."""

from __future__ import annotations

import json
import re

import httpx

from tests.helpers import T, make_event, uid


def post_event(base: str, ev: dict) -> None:
    r = httpx.post(base + "/_rig/v1/events", json=ev, timeout=T)
    assert r.status_code == 202, r.text


class PhxLongPoll:
    """The Phoenix client's long-polling transport by hand; every request on a fresh connection."""

    def __init__(self, base: str):
        self.base = base
        self.token = None

    def request(self, method: str, body: str | None = None, base: str | None = None) -> dict:
        params = {"vsn": "2.0.0", **({"token": self.token} if self.token else {})}
        with httpx.Client(timeout=3 * T) as c:  # a new connection: the kernel picks the worker
            url = (base or self.base) + "/socket/longpoll"
            if method == "GET":
                r = c.get(url, params=params)
            else:
                r = c.post(url, params=params, content=body, headers={"content-type": "application/x-ndjson"})
        assert r.status_code == 200, r.text
        return r.json()

    def messages_until(self, pred, base: str | None = None, polls: int = 10) -> list:
        out: list = []
        for _ in range(polls):
            body = self.request("GET", base=base)
            assert body["status"] in (200, 204), body
            out += [json.loads(m) for m in body.get("messages", [])]
            if pred(out):
                return out
        raise AssertionError(f"not there after {polls} polls: {out}")


def test_phoenix_longpoll_join_push_and_poll_on_any_worker(solo):
    """Joins, pushes and polls land on either worker of the node (some forwarded) and act on the one socket."""
    etype, etype2 = uid("phx-cl"), uid("phx-cl2")
    lp = PhxLongPoll(solo.inbound)
    first = lp.request("GET")
    assert first["status"] == 410
    lp.token = first["token"]
    join = json.dumps(["1", "1", "rig:c", "phx_join", {"subscriptions": [{"eventType": etype}]}])
    assert lp.request("POST", join) == {"status": 200}
    rep = lp.messages_until(lambda out: out)[0]
    assert rep[3] == "phx_reply" and rep[4]["status"] == "ok", rep
    for i in range(6):
        ev = make_event(etype, {"i": i})
        post_event(solo.inbound, ev)
        got = lp.messages_until(lambda out: out)
        assert [m[4]["id"] for m in got] == [ev["id"]], got
    ref = json.dumps(["1", "7", "rig:c", "subscriptions", {"subscriptions": [{"eventType": etype2}]}])
    assert lp.request("POST", ref) == {"status": 200}
    rep = lp.messages_until(lambda out: out)[0]
    assert rep[1] == "7" and rep[4]["response"]["subscriptions"] == [{"eventType": etype2, "oneOf": []}], rep
    ev = make_event(etype2)
    post_event(solo.inbound, ev)
    assert lp.messages_until(lambda out: out)[0][4]["id"] == ev["id"]
    text = httpx.get(solo.api + "/metrics", timeout=T).text
    assert re.search(r'rig_cluster_forwarded_total\{worker="\d",kind="phx",via="bus"\} [1-9]', text), "no request was forwarded"


def test_phoenix_longpoll_on_another_node(two_nodes):
    """A Phoenix long-polling socket made on node A is polled through node B."""
    a, b = two_nodes
    etype = uid("phx-node")
    lp = PhxLongPoll(a.inbound)
    first = lp.request("GET")
    lp.token = first["token"]
    assert lp.request("POST", json.dumps(["1", "1", "rig:n", "phx_join", {"subscriptions": [{"eventType": etype}]}]), base=b.inbound) == {"status": 200}
    rep = lp.messages_until(lambda out: out, base=b.inbound)[0]
    assert rep[4]["status"] == "ok", rep
    ev = make_event(etype)
    post_event(b.inbound, ev)
    got = lp.messages_until(lambda out: out, base=b.inbound)
    assert [m[4]["id"] for m in got] == [ev["id"]], got


def test_phoenix_websocket_on_each_worker_gets_events_published_anywhere(solo):
    """Phoenix sockets held by either worker of the node: joins work there, and every event published
    on the node (landing on either worker) reaches each socket once."""
    import asyncio

    from websockets.asyncio.client import connect

    etype = uid("phx-ws-cl")

    async def main():
        held: dict[int, tuple] = {}
        extra = []
        for _ in range(40):
            ws = await connect(solo.inbound.replace("http://", "ws://") + "/socket/websocket?vsn=2.0.0", ping_interval=None, open_timeout=T, close_timeout=T)
            await ws.send(json.dumps(["1", "1", "rig:cl", "phx_join", {"subscriptions": [{"eventType": etype}]}]))
            rep = json.loads(await asyncio.wait_for(ws.recv(), T))
            assert rep[4]["status"] == "ok", rep
            worker = int(rep[4]["response"]["connection_token"].split(".")[1][1:])
            if worker in held:
                extra.append(ws)
            else:
                held[worker] = ws
            if len(held) == 2:
                break
        assert set(held) == {0, 1}, f"sockets landed only on workers {set(held)}"
        for ws in extra:
            await ws.close()
        sent = []
        for i in range(6):  # fresh connections: the events enter on either worker
            ev = make_event(etype, {"i": i})
            await asyncio.to_thread(post_event, solo.inbound, ev)
            sent.append(ev["id"])
        for worker, ws in held.items():
            got = [json.loads(await asyncio.wait_for(ws.recv(), T))[4]["id"] for _ in sent]
            assert got == sent, (worker, got)
            try:
                more = await asyncio.wait_for(ws.recv(), 0.3)
            except asyncio.TimeoutError:
                more = None
            assert more is None, (worker, more)
            await ws.close()

    asyncio.run(asyncio.wait_for(main(), 6 * T))
