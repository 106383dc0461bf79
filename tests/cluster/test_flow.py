"""The flow of a submitted event on a node (docs/cluster.md): through the node's reader to the workers that want it,
kept once in the node's history, served by the accepting worker itself while the reader is down, never twice."""

from __future__ import annotations

import json
import os
import re
import signal

import httpx
import pytest

from tests.cluster.conftest import Node
from tests.cluster.test_cluster import ids_until, post, streams_on
from tests.helpers import T, make_event, uid, wait_until

pytestmark = pytest.mark.kafka

WORKERS = 3


@pytest.fixture(scope="module")
def node():
    """Node "nf": three workers and their reader, no Kafka."""
    n = Node("nf", workers=WORKERS)
    try:
        yield n.start()
    finally:
        n.stop()


def reader_pids(node: Node) -> list[int]:
    return [int(p) for p in re.findall(r"reader started, pid (\d+)", node.log(tail=1 << 20))]


def all_linked(node: Node) -> bool:
    """Every worker linked to the reader, which holds every worker's whole interest."""
    return all(h["cluster"]["reader"]["connected"] and h["cluster"]["reader"]["linked_workers"] == list(range(WORKERS))
               for h in node.healths().values())


def metric(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels`."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        head, _, value = line.rpartition(" ")
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            total += float(value)
    return total


def node_metrics(node: Node) -> str:
    return httpx.get(node.api + "/metrics", timeout=T).text


def exactly_once(streams, want: list[str], fence_on: httpx.Client, etype: str) -> None:
    """Every stream saw each id of `want` once: read until all came, then until a fence posted after them
    (a duplicate would travel as fast as the original)."""
    seen_all = [ids_until(s, set(want), timeout=4 * T) for s in streams]
    fence = make_event(etype, {"fence": True})
    post(fence_on, fence, "/v3/messages")
    for s, seen in zip(streams, seen_all):
        seen += ids_until(s, {fence["id"]})
        assert sorted(i for i in seen if i in want) == sorted(want), seen


def missed_then_resumed(on: Node, resume_on: int, submit: httpx.Client, etype: str, n: int = 3):
    """A connection on worker 0 of `on` sees one event submitted through `submit` and goes; `n` more are submitted;
    a connection on worker `resume_on` resumes from the first one's id: (the missed events, the first `n` it got)."""
    subs = [{"eventType": etype}]
    first, *missed = [make_event(etype, {"n": i}) for i in range(n + 1)]
    with streams_on(on, {0}, subs)[0][0] as s0:
        post(submit, first, "/v3/messages")
        seen = s0.next_event(timeout=2 * T)
    assert seen.data["id"] == first["id"] and seen.id
    for e in missed:
        post(submit, e, "/v3/messages")
    stream = streams_on(on, {resume_on}, subs, headers={"last-event-id": seen.id})[resume_on][0]
    return missed, [stream.next_event(timeout=2 * T) for _ in missed], stream


def test_submitted_events_reach_only_interested_workers_through_the_reader(node):
    """Connections for A on workers 0 and 1, none on 2: events posted on worker 0 (its own connection included) and
    on worker 2 reach each connection exactly once, through the reader, which sends worker 2 none of them."""
    wait_until(lambda: all_linked(node), timeout=4 * T, what="every worker linked to the reader")
    a = uid("fa")
    got = streams_on(node, {0, 1}, [{"eventType": a}])
    streams = [got[0][0], got[1][0]]
    before = node_metrics(node)
    try:
        c0, c2 = node.pinned(0), node.pinned(2)
        events = [make_event(a, {"n": i}) for i in range(10)]
        for i, e in enumerate(events):
            post(c0 if i % 2 else c2, e, "/v3/messages")
        exactly_once(streams, [e["id"] for e in events], c0, a)
        after = node_metrics(node)
        forwarded = {w: metric(after, "rig_reader_forwarded_total", worker="reader", to=str(w), source="api")
                     - metric(before, "rig_reader_forwarded_total", worker="reader", to=str(w), source="api")
                     for w in range(WORKERS)}
        assert forwarded[0] >= 10 and forwarded[1] >= 10 and forwarded[2] == 0, forwarded
        # nothing went worker to worker: the reader routed it all
        bus = [metric(t, "rig_cluster_events_out_total", via="bus") for t in (before, after)]
        assert bus[1] == bus[0], bus
        # the reader's own series are in the node's /metrics: its history holds them, all workers linked
        assert metric(after, "rig_reader_submitted_total", worker="reader", **{"from": "node"}) >= 10
        assert after.count('rig_reader_history_events{worker="reader"}') == 1
        assert 'rig_reader_workers{worker="reader"} 3' in after
    finally:
        for s in streams:
            s.close()


def test_submitted_event_resumes_on_another_worker_from_the_node_history(node):
    """An HTTP event id seen on worker 0 resumes on worker 2 (which never had a connection wanting the type): the
    events after it come from the reader's node history, no rig.history_gap; workers keep no history of their own."""
    wait_until(lambda: all_linked(node), timeout=4 * T, what="every worker linked to the reader")
    c = uid("fc")
    missed, got, s2 = missed_then_resumed(node, 2, node.pinned(1), c)
    try:
        assert [e.event for e in got] == [c] * 3, [e.data for e in got]  # no rig.history_gap
        assert [e.data["id"] for e in got] == [e["id"] for e in missed]
        assert all(e.id for e in got)  # replayed events carry their resume id
        live = make_event(c, {"n": 4})
        post(node.pinned(2), live, "/v3/messages")
        assert s2.next_event(timeout=2 * T).data["id"] == live["id"]  # then live, once
    finally:
        s2.close()
    assert all(h["cluster"]["history_events"] == 0 for h in node.healths().values())


def test_reader_killed_submitted_events_keep_flowing_once(node):
    """SIGKILL the reader while events are posted on every worker: the accepting workers serve the node themselves
    (their own connections, the others over the bus) until a new reader links, then the reader again; every
    connection of every worker gets every event exactly once, across both switches."""
    wait_until(lambda: all_linked(node), timeout=4 * T, what="every worker linked to the reader")
    d = uid("fd")
    got = streams_on(node, set(range(WORKERS)), [{"eventType": d}])
    streams = [got[w][0] for w in range(WORKERS)]
    clients = [node.pinned(w) for w in range(WORKERS)]
    before = node_metrics(node)
    old = reader_pids(node)[-1]
    events = [make_event(d, {"n": i}) for i in range(90)]
    try:
        for i, e in enumerate(events[:60]):
            if i == 10:
                os.kill(old, signal.SIGKILL)
            post(clients[i % WORKERS], e, "/v3/messages")
        wait_until(lambda: reader_pids(node)[-1] != old and all_linked(node), timeout=6 * T,
                   what="a new reader linked")
        for i, e in enumerate(events[60:]):
            post(clients[i % WORKERS], e, "/v3/messages")
        exactly_once(streams, [e["id"] for e in events], clients[0], d)
        after = node_metrics(node)
        # the way round the dead reader was taken: workers sent submitted events over the bus
        assert metric(after, "rig_cluster_events_out_total", via="bus") > metric(before, "rig_cluster_events_out_total",
                                                                                 via="bus")
        # the connections were kept: the same streams got everything
        assert all(h["connections"]["sse"] >= 1 for h in node.healths().values())
    finally:
        for s in streams:
            s.close()
        for c in clients:
            c.close()


def test_worker_killed_reader_drops_and_relearns_its_interest(node):
    """A worker killed: the reader drops its interest at once (LINKED without it) and the other workers' connections
    keep getting submitted events once; the replacement's connection gets them once when it has registered."""
    wait_until(lambda: all_linked(node), timeout=4 * T, what="every worker linked to the reader")
    e = uid("fe")
    subs = [{"eventType": e}]
    got = streams_on(node, {0, 2}, subs)
    s0, s2 = got[0][0], got[2][0]
    victim = node.healths({2})[2]["pid"]
    os.kill(victim, signal.SIGKILL)
    s2.close()
    try:
        c0 = node.pinned(0)
        ev = make_event(e, {"n": 0})
        post(c0, ev, "/v3/messages")
        assert ids_until(s0, {ev["id"]}) == [ev["id"]]
        healths = node.wait_ready()
        assert healths[2]["pid"] != victim
        wait_until(lambda: all_linked(node), timeout=4 * T, what="the replacement linked to the reader")
        s2b, _ = streams_on(node, {2}, subs)[2]
        try:
            later = [make_event(e, {"n": i}) for i in (1, 2)]
            post(c0, later[0], "/v3/messages")
            post(node.pinned(1), later[1], "/v3/messages")
            exactly_once([s0, s2b], [x["id"] for x in later], c0, e)
        finally:
            s2b.close()
    finally:
        s0.close()


# -- two nodes: the cluster topic, read once per node by its reader ----------------------------------------

def cluster_skipped(n: Node) -> int:
    """Cluster-topic records the node's reader dropped unread (key and kind: not for this node), as a worker last
    heard it from the reader."""
    return max(h["kafka"]["cluster"]["skipped"] for h in n.healths().values())


def test_cluster_topic_read_once_per_node_and_control_records_for_others_unread(two_nodes):
    """No worker consumes the cluster topic (the reader does, for the node); a PUT forwarded from node B to a
    connection on node A arrives, its request and reply records are dropped unread by the node they are not for,
    and an event submitted on B afterwards reaches the connection on A exactly once."""
    a, b = two_nodes
    for n in (a, b):
        for h in n.healths().values():
            assert h["cluster"]["kafka"]["topics"] == ["rigfast-blacklist"], h["cluster"]["kafka"]
            assert h["kafka"]["cluster"]["topics"] == ["rigfast-cluster"] and h["kafka"]["cluster"]["ready"]
    etype = uid("fk")
    s, token = streams_on(a, {1}, [])[1]
    try:
        before = {n.node_id: cluster_skipped(n) for n in (a, b)}
        r = httpx.put(f"{b.inbound}/_rig/v1/connection/sse/{token}/subscriptions",
                      json={"subscriptions": [{"eventType": etype}]}, timeout=T)
        assert r.status_code == 204, (r.status_code, r.text)
        assert s.next_event().event == "rig.subscriptions_set"
        # B's request is for A (B's reader skips it), A's reply is for B (A's reader skips it)
        wait_until(lambda: all(cluster_skipped(n) > before[n.node_id] for n in (a, b)), timeout=3 * T,
                   what="both readers skipped a control record for the other node")
        e = make_event(etype)
        b0 = b.pinned(0)
        post(b0, e, "/v3/messages")
        fence = make_event(etype)
        post(b0, fence, "/v3/messages")
        seen = ids_until(s, {e["id"], fence["id"]})
        assert seen.count(e["id"]) == 1, seen
    finally:
        s.close()


def test_event_from_another_node_resumes_from_the_node_history(two_nodes):
    """Events submitted on node B are in node A's history (its reader routed them): a connection resuming on
    another worker of A gets those it missed, no rig.history_gap."""
    a, b = two_nodes
    c = uid("fh")
    missed, got, s1 = missed_then_resumed(a, 1, b.pinned(1), c, n=2)
    s1.close()
    assert [(g.event, g.data["id"]) for g in got] == [(c, e["id"]) for e in missed]


def test_reader_killed_records_of_other_nodes_meanwhile_arrive_once(two_nodes):
    """SIGKILL node A's reader and submit events on node B while it is down: A's replacement reader resumes the
    cluster topic where the old one stopped, and A's connections (kept) get every event exactly once."""
    a, b = two_nodes
    d = uid("fr")
    got = streams_on(a, {0, 1}, [{"eventType": d}])
    streams = [got[0][0], got[1][0]]
    b0 = b.pinned(0)
    try:
        warm = make_event(d, {"n": -1})
        post(b0, warm, "/v3/messages")
        for s in streams:
            assert warm["id"] in ids_until(s, {warm["id"]})
        old = reader_pids(a)[-1]
        os.kill(old, signal.SIGKILL)
        during = [make_event(d, {"n": i}) for i in range(20)]
        for e in during:
            post(b0, e, "/v3/messages")
        wait_until(lambda: reader_pids(a)[-1] != old, timeout=3 * T, what="a new reader on node A")
        exactly_once(streams, [e["id"] for e in during], b0, d)
        assert all(h["connections"]["sse"] >= 1 for h in a.healths().values())
    finally:
        for s in streams:
            s.close()
    a.wait_ready()


def test_phoenix_rejoin_resumes_from_the_node_history(node):
    """A Phoenix channel rejoining with last_event_id gets what it missed from the node's history (the workers keep
    none while the reader is linked), after the join's reply, in order, no rig.history_gap."""
    from tests.cluster.test_phoenix_cluster import PhxLongPoll

    wait_until(lambda: all_linked(node), timeout=4 * T, what="every worker linked to the reader")
    etype = uid("fp")
    subs = {"subscriptions": [{"eventType": etype}]}

    def joined(lp: PhxLongPoll, payload: dict) -> None:
        lp.token = lp.request("GET")["token"]
        assert lp.request("POST", json.dumps(["1", "1", "rig:p", "phx_join", payload])) == {"status": 200}

    first, *missed = [make_event(etype, {"n": i}) for i in range(3)]
    lp = PhxLongPoll(node.inbound)
    joined(lp, subs)
    post(node.pinned(1), first, "/v3/messages")
    pushes = lp.messages_until(lambda out: any(m[3] == etype for m in out))
    last = next(m[1] for m in pushes if m[3] == etype)  # a push's ref is the event's resume id
    assert last
    c2 = node.pinned(2)
    for e in missed:
        post(c2, e, "/v3/messages")
    again = PhxLongPoll(node.inbound)
    joined(again, {**subs, "last_event_id": last})
    out = again.messages_until(lambda out: len([m for m in out if m[3] == etype]) >= len(missed))
    assert out[0][3] == "phx_reply", out
    assert [m[4]["id"] for m in out if m[3] in (etype, "rig.history_gap")] == [e["id"] for e in missed], out


def test_a_submitted_batch_is_split_by_interest(node):
    """One POSTed batch of two types, each wanted on one worker: each worker's connection gets only its type's events,
    in the batch's order, once."""
    wait_until(lambda: all_linked(node), timeout=4 * T, what="every worker linked to the reader")
    x, y = uid("fx"), uid("fy")
    sx = streams_on(node, {0}, [{"eventType": x}])[0][0]
    sy = streams_on(node, {1}, [{"eventType": y}])[1][0]
    try:
        batch = [make_event(x if i % 2 else y, {"n": i}) for i in range(8)]
        c2 = node.pinned(2)
        r = httpx.post(node.inbound + "/_rig/v1/events", content=json.dumps(batch).encode(), timeout=T,
                       headers={"content-type": "application/cloudevents-batch+json"})  # whatever worker takes it
        assert r.status_code == 202, (r.status_code, r.text)
        for s, etype in ((sx, x), (sy, y)):
            want = [e["id"] for e in batch if e["type"] == etype]
            fence = make_event(etype, {"fence": True})
            seen = ids_until(s, set(want))
            post(c2, fence, "/v3/messages")
            seen += ids_until(s, {fence["id"]})
            assert seen == want + [fence["id"]], (seen, want)
    finally:
        sx.close()
        sy.close()
