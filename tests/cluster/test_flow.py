"""The flow of a submitted event on a node (docs/cluster.md): through the node's reader to the workers that want it,
kept once in the node's history, served by the accepting worker itself while the reader is down, never twice."""

from __future__ import annotations

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
    finally:
        for s in streams:
            s.close()


def test_submitted_event_resumes_on_another_worker_from_the_node_history(node):
    """An HTTP event id seen on worker 0 resumes on worker 2 (which never had a connection wanting the type): the
    events after it come from the reader's node history, no rig.history_gap; workers keep no history of their own."""
    wait_until(lambda: all_linked(node), timeout=4 * T, what="every worker linked to the reader")
    c = uid("fc")
    subs = [{"eventType": c}]
    first, *missed = [make_event(c, {"n": i}) for i in range(4)]
    c1 = node.pinned(1)
    with streams_on(node, {0}, subs)[0][0] as s0:
        post(c1, first, "/v3/messages")
        seen = s0.next_event(timeout=2 * T)
    assert seen.data["id"] == first["id"] and seen.id
    last_id = seen.id
    for e in missed:
        post(c1, e, "/v3/messages")
    s2, _ = streams_on(node, {2}, subs, headers={"last-event-id": last_id})[2]
    try:
        got = [s2.next_event(timeout=2 * T) for _ in missed]
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
