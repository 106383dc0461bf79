"""One gateway across workers and nodes: every test crosses a worker or node boundary on purpose."""

from __future__ import annotations

import json
import os
import re
import signal
import time
from urllib.parse import unquote

import httpx
import pytest

from tests.cluster.conftest import Node, jwt_for
from tests.helpers import T, LongPoll, SseStream, make_event, open_sse, uid, wait_until

TOKEN_RE = re.compile(r"^[A-Za-z0-9_.~-]{8,256}$")


def route(token: str) -> tuple[str, int]:
    node, w, rand = token.split(".")
    return node, int(w[1:])


def streams_on(node: Node, workers: set[int], subs: list, limit: int = 60, **kw) -> dict[int, tuple[SseStream, str]]:
    """SSE connections to `node`, one per worker in `workers` (the kernel picks; extra ones are closed)."""
    got: dict[int, tuple[SseStream, str]] = {}
    for _ in range(limit):
        s = open_sse(node.inbound, subs, **kw)
        token, _ = s.expect_handshake()
        w = route(token)[1]
        if w in workers and w not in got:
            got[w] = (s, token)
        else:
            s.close()
        if set(got) == workers:
            return got
    raise AssertionError(f"SSE connections never covered workers {workers}: {set(got)}")


def ids_until(stream: SseStream, want: set[str], timeout: float = 2 * T) -> list[str]:
    """Event ids read until every id in `want` was seen (a bounded read)."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while not want <= set(seen):
        ev = stream.next_event(max(0.0, deadline - time.monotonic()))
        seen.append(ev.data.get("id"))
    return seen


def post(client_or_base, event: dict, path: str = "/_rig/v1/events") -> None:
    body = json.dumps(event).encode()
    hdrs = {"content-type": "application/cloudevents+json"}
    if isinstance(client_or_base, str):
        r = httpx.post(client_or_base + path, content=body, headers=hdrs, timeout=T)
    else:
        r = client_or_base.post(path, content=body, headers=hdrs)
    assert r.status_code == 202, (r.status_code, r.text)


def test_event_reaches_every_worker_of_every_node_exactly_once(two_nodes):
    """Events submitted on any worker of any node (inbound and /v3/messages) reach all 4 workers' connections exactly once."""
    a, b = two_nodes
    etype = uid("type")
    subs = [{"eventType": etype}]
    streams = [s for n in (a, b) for s, _ in streams_on(n, {0, 1}, subs).values()]
    try:
        a0, b1 = a.pinned(0), b.pinned(1)
        events = [make_event(etype, {"i": i}) for i in range(6)]
        post(a.inbound, events[0])
        post(b.inbound, events[1])
        post(a0, events[2], "/v3/messages")
        post(b1, events[3], "/v3/messages")
        post(a.pinned(1), events[4], "/v3/messages")
        post(b.pinned(0), events[5], "/v3/messages")
        want = {e["id"] for e in events}
        seen_all = [ids_until(s, want) for s in streams]
        # a duplicate would travel as fast as the original: flush with one more event per node, then count
        fences = [make_event(etype), make_event(etype)]
        post(a0, fences[0], "/v3/messages")
        post(b1, fences[1], "/v3/messages")
        for s, seen in zip(streams, seen_all):
            seen += ids_until(s, {f["id"] for f in fences})
            assert sorted(i for i in seen if i in want) == sorted(want), seen
    finally:
        for s in streams:
            s.close()


def test_tokens_carry_node_and_worker_and_stay_unguessable(two_nodes):
    """Connection tokens are <node>.w<worker>.<random>, match the token syntax, and the random part has 144 bits."""
    a, _ = two_nodes
    got = streams_on(a, {0, 1}, [])
    try:
        for w, (_, token) in got.items():
            assert TOKEN_RE.match(token)
            node, worker, rand = token.split(".")
            assert (node, worker) == ("na", f"w{w}")
            assert len(rand) == 24  # 18 random bytes, base64url
        assert got[0][1].split(".")[2] != got[1][1].split(".")[2]
    finally:
        for s, _ in got.values():
            s.close()


def test_put_subscriptions_on_another_node(two_nodes):
    """PUT subscriptions on node B for a connection held by node A: 204, applied; 410 once the connection is gone."""
    a, b = two_nodes
    etype = uid("type")
    s, token = streams_on(a, {1}, [])[1]
    try:
        url = f"{b.inbound}/_rig/v1/connection/sse/{token}/subscriptions"
        r = httpx.put(url, json={"subscriptions": [{"eventType": etype}]}, timeout=T)
        assert r.status_code == 204, (r.status_code, r.text)
        ev = s.next_event()
        assert ev.event == "rig.subscriptions_set" and ev.data["data"] == [{"eventType": etype, "oneOf": []}]
        e = make_event(etype)
        post(b.inbound, e)
        assert ids_until(s, {e["id"]})[-1] == e["id"]
    finally:
        s.close()
    wait_until(lambda: httpx.put(url, json={"subscriptions": []}, timeout=T).status_code == 410, what="410 after close")


def test_put_subscriptions_on_another_worker(solo):
    """PUT subscriptions for a connection of worker 0 sent to the node until worker 1 took one (counted): 204 each time."""
    etype = uid("type")
    s, token = streams_on(solo, {0}, [])[0]
    url = f"{solo.inbound}/_rig/v1/connection/sse/{token}/subscriptions"

    def forwarded() -> float:
        text = httpx.get(solo.api + "/metrics", timeout=T).text
        m = re.search(r'rig_cluster_forwarded_total\{worker="1",kind="subs",via="bus"\} (\d+)', text)
        return float(m.group(1)) if m else 0.0

    try:
        before = forwarded()
        for _ in range(40):
            r = httpx.put(url, json={"subscriptions": [{"eventType": etype}]}, timeout=T)
            assert r.status_code == 204, (r.status_code, r.text)
            if forwarded() > before:
                break
        else:
            raise AssertionError("no PUT landed on worker 1 in 40 tries")
        e = make_event(etype)
        post(solo.pinned(1), e, "/v3/messages")
        assert e["id"] in ids_until(s, {e["id"]})
    finally:
        s.close()
    wait_until(lambda: httpx.put(url, json={"subscriptions": []}, timeout=T).status_code == 410, what="410 after close")


def test_longpolling_session_survives_polls_on_other_node(two_nodes):
    """A long-polling session made on node A is served when its polls land on node B, and vice versa."""
    a, b = two_nodes
    etype = uid("type")
    lp = LongPoll(a.inbound, [{"eventType": etype}], timeout=2 * T)
    try:
        assert lp.poll().json() == "ok"
        assert route(lp.token)[0] == "na"
        first = lp.events()  # the gateway events, whichever worker of A answers
        assert [e["type"] for e in first][:1] == ["rig.connection.create"]
        lp.url = b.inbound + "/_rig/v1/connection/longpolling"
        e1 = make_event(etype)
        post(b.inbound, e1)
        got = lp.collect_until(lambda e: e.get("id") == e1["id"])
        assert [e["id"] for e in got if e.get("type") == etype] == [e1["id"]]
        assert "last_event_id" in lp.cookies
        assert route(lp.token)[0] == "na"  # still the same session
        lp.url = a.inbound + "/_rig/v1/connection/longpolling"
        e2 = make_event(etype)
        post(a.inbound, e2)
        got = lp.collect_until(lambda e: e.get("id") == e2["id"])
        assert [e["id"] for e in got if e.get("type") == etype] == [e2["id"]]
    finally:
        lp.close()


def test_longpolling_session_survives_polls_on_other_worker(solo):
    """A long-polling session keeps its events whichever worker of the node its polls land on (some are forwarded)."""
    etype = uid("type")
    lp = LongPoll(solo.inbound, [{"eventType": etype}], timeout=2 * T)
    try:
        assert lp.poll().json() == "ok"
        token = lp.token
        lp.events()
        for i in range(8):  # fresh connections: the kernel spreads them over both workers
            lp.client.close()
            lp.client = httpx.Client(timeout=2 * T)
            e = make_event(etype, {"i": i})
            post(solo.inbound, e)
            got = lp.collect_until(lambda x: x.get("id") == e["id"])
            assert [x["id"] for x in got if x.get("type") == etype] == [e["id"]]
            assert lp.token == token
        text = httpx.get(solo.api + "/metrics", timeout=T).text
        assert re.search(r'rig_cluster_forwarded_total\{worker="\d",kind="poll",via="bus"\} [1-9]', text), "no poll was forwarded"
    finally:
        lp.close()


def test_blacklist_on_one_node_ends_connections_everywhere_within_1s(two_nodes):
    """A blacklist entry posted to node B ends the session's SSE connections on both workers of node A and on node B within 1 s."""
    a, b = two_nodes
    sid = uid("session")
    token = jwt_for(sid)
    streams = [s for s, _ in streams_on(a, {0, 1}, [], jwt=token).values()]
    streams.append(streams_on(b, {0}, [], jwt=token)[0][0])
    try:
        t0 = time.monotonic()
        r = httpx.post(b.api + "/v3/session-blacklist", json={"sessionId": sid, "validityInSeconds": 60}, timeout=T)
        assert r.status_code == 201, r.text
        for s in streams:
            ev = s.next_event(timeout=T)
            assert ev.event == "rig.session_killed", ev
            assert time.monotonic() - t0 < 1.0
            with pytest.raises(EOFError):
                s.next_event(timeout=T)
        for node in (a, b):  # every worker of every node knows the entry
            for w in (0, 1):
                assert node.pinned(w).get(f"/v3/session-blacklist/{sid}").status_code == 200
    finally:
        for s in streams:
            s.close()


def test_blacklist_still_in_force_after_node_restart(two_nodes):
    """A blacklist entry made on node A is known to node B after B restarts (re-read from the compacted topic)."""
    a, b = two_nodes
    sid = uid("session")
    r = httpx.post(a.api + "/v3/session-blacklist", json={"sessionId": sid, "validityInSeconds": 120}, timeout=T)
    assert r.status_code == 201
    wait_until(lambda: httpx.get(f"{b.api}/v3/session-blacklist/{sid}", timeout=T).status_code == 200, what="B knows it")
    assert b.stop() == 0
    b.start()  # same node id and ports; ready means the blacklist topic was read to its end
    for w in (0, 1):
        assert b.pinned(w).get(f"/v3/session-blacklist/{sid}").status_code == 200
    refused = open_sse(b.inbound, [], jwt=jwt_for(sid))
    try:
        assert refused.status_code == 400 and "blacklisted" in refused.body_text()  # RIG: a blacklisted token on connect
    finally:
        refused.close()


def test_worker_killed_is_replaced_and_the_other_keeps_its_connections(solo):
    """SIGKILL one worker: the supervisor starts a new one, the other worker's connections keep receiving, clients reconnect at once."""
    etype = uid("type")
    subs = [{"eventType": etype}]
    got = streams_on(solo, {0, 1}, subs)
    (s0, _), (s1, _) = got[0], got[1]
    try:
        victim = solo.healths({1})[1]["pid"]
        os.kill(victim, signal.SIGKILL)
        with pytest.raises((EOFError, httpx.HTTPError)):  # the dead worker's client sees its stream end
            s1.next_event(timeout=T)
        again = open_sse(solo.inbound, subs)  # reconnect at once: the survivor (or the new worker) accepts
        try:
            again.expect_handshake()
        finally:
            again.close()
        e = make_event(etype)
        post(solo.inbound, e)
        assert e["id"] in ids_until(s0, {e["id"]})
        healths = solo.wait_ready()
        assert healths[1]["pid"] != victim
        assert healths[0]["connections"]["sse"] >= 1
        e2 = make_event(etype)
        post(solo.pinned(1), e2, "/v3/messages")  # the new worker 1 relays to worker 0's connection
        assert e2["id"] in ids_until(s0, {e2["id"]})
    finally:
        s0.close()
        s1.close()


def test_metrics_list_every_worker_of_the_node(solo):
    """/metrics on a multi-worker node has each worker's series, labelled worker="0" and worker="1"."""
    text = httpx.get(solo.api + "/metrics", timeout=T).text
    for w in (0, 1):
        assert f'rig_connections{{worker="{w}",transport="sse"}}' in text
    assert text.count("# TYPE rig_connections gauge") == 1
    local = httpx.get(solo.api + "/metrics?local", timeout=T).text
    assert 'worker="' not in local


def test_connection_rate_limit_is_per_node_and_clean_stop():
    """MAX_CONNECTIONS_PER_MINUTE=10 on a 2-worker node admits 10 new sessions in all; SIGTERM stops every process, exit 0."""
    node = Node(uid("nr")[:12], MAX_CONNECTIONS_PER_MINUTE="10").start()
    try:
        pids = [h["pid"] for h in node.wait_ready().values()]
        codes = []
        for _ in range(40):
            with httpx.Client(timeout=T) as c:  # a fresh connection each: the kernel picks the worker
                codes.append(c.get(node.inbound + "/_rig/v1/connection/longpolling").status_code)
        assert codes.count(200) == 10, codes
        assert set(codes) == {200, 429}
    finally:
        assert node.stop() == 0
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_sse_resume_on_another_worker(solo):
    """A client that saw an event on worker 0 and reconnects to worker 1 with Last-Event-ID gets only what it missed, no gap."""
    etype = uid("resume")
    subs = [{"eventType": etype}]
    s0, _ = streams_on(solo, {0}, subs)[0]
    try:
        first = make_event(etype, {"n": 0})
        post(solo.inbound, first)
        seen = s0.next_event()
        assert seen.data["id"] == first["id"]
        last_id = seen.id
    finally:
        s0.close()
    missed = [make_event(etype, {"n": i}) for i in (1, 2)]
    for ev in missed:
        post(solo.inbound, ev)
    wait_until(lambda: all(h["connections"]["sse"] == 0 for h in solo.healths().values()), what="first stream gone")
    s1, _ = streams_on(solo, {1}, subs, headers={"last-event-id": last_id})[1]
    try:
        got = [s1.next_event() for _ in missed]
        assert [e.event for e in got] == [etype, etype], [e.event for e in got]  # no rig.history_gap
        assert [e.data["id"] for e in got] == [e["id"] for e in missed]
    finally:
        s1.close()


def test_kafka_event_resume_on_another_worker(two_nodes, tansu):
    """Kafka-read events carry their record position as id, so a resume on another worker finds it: no gap."""
    from confluent_kafka import Producer

    na = two_nodes[0]
    etype = uid("kresume")
    subs = [{"eventType": etype}]
    producer = Producer({"bootstrap.servers": tansu.bootstrap})

    def produce(ev: dict) -> None:
        producer.produce("rig-src-na", json.dumps(ev).encode())
        assert producer.flush(T) == 0

    s0, _ = streams_on(na, {0}, subs)[0]
    try:
        first = make_event(etype, {"n": 0})
        produce(first)
        seen = s0.next_event(timeout=2 * T)
        assert seen.data["id"] == first["id"]
        last_id = seen.id
        assert last_id.startswith("k:rig-src-na:"), last_id
    finally:
        s0.close()
    missed = [make_event(etype, {"n": i}) for i in (1, 2)]
    for ev in missed:
        produce(ev)
    s1, _ = streams_on(na, {1}, subs, headers={"last-event-id": last_id})[1]
    try:
        got = [s1.next_event(timeout=2 * T) for _ in missed]
        assert [e.event for e in got] == [etype, etype], [e.event for e in got]  # no rig.history_gap
        assert [e.data["id"] for e in got] == [e["id"] for e in missed]
    finally:
        s1.close()


def _cursor_poll(lp: LongPoll, base: str, cookies: dict) -> dict:
    """One poll with the given cookies on a fresh connection to `base` (the kernel picks the worker)."""
    lp.client.close()
    lp.client = httpx.Client(timeout=2 * T)
    lp.url = base + "/_rig/v1/connection/longpolling"
    lp.cookies = dict(cookies)
    r = lp.poll()
    assert r.status_code == 200, (r.status_code, r.text)
    return r.json()


def test_longpolling_cursor_replays_on_other_worker(solo):
    """The last_event_id cookie is a read cursor on every worker: polling again with an old cookie returns the
    same events whichever worker takes the poll (some polls are forwarded to the session's worker)."""
    etype = uid("type")
    lp = LongPoll(solo.inbound, [{"eventType": etype}], timeout=2 * T)
    try:
        assert lp.poll().json() == "ok"
        lp.collect_until(lambda e: e.get("type") == "rig.subscriptions_set")
        cursor = dict(lp.cookies)
        e1, e2 = make_event(etype, {"n": 1}), make_event(etype, {"n": 2})
        post(solo.inbound, e1)
        post(solo.inbound, e2)
        lp.collect_until(lambda e: e.get("id") == e2["id"])
        for _ in range(8):
            body = _cursor_poll(lp, solo.inbound, cursor)
            assert [e["id"] for e in body["events"]] == [e1["id"], e2["id"]]
            assert body["last_event_id"] == e2["id"]
        text = httpx.get(solo.api + "/metrics", timeout=T).text
        assert re.search(r'rig_cluster_forwarded_total\{worker="\d",kind="poll",via="bus"\} [1-9]', text), "no poll was forwarded"
    finally:
        lp.close()


def test_longpolling_cursor_replays_on_other_node(two_nodes):
    """A poll with an old last_event_id cookie on node B, for a session of node A, gets the same events again."""
    a, b = two_nodes
    etype = uid("type")
    lp = LongPoll(a.inbound, [{"eventType": etype}], timeout=2 * T)
    try:
        assert lp.poll().json() == "ok"
        lp.collect_until(lambda e: e.get("type") == "rig.subscriptions_set")
        cursor = dict(lp.cookies)
        e1 = make_event(etype)
        post(b.inbound, e1)
        lp.collect_until(lambda e: e.get("id") == e1["id"])
        for base in (b.inbound, a.inbound, b.inbound):
            body = _cursor_poll(lp, base, cursor)
            assert [e["id"] for e in body["events"]] == [e1["id"]], base
            assert body["last_event_id"] == e1["id"]
            assert json.loads(unquote(lp.cookies["last_event_id"])) == e1["id"]
    finally:
        lp.close()
