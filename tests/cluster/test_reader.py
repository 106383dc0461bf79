"""One event reader per node (rigfast/cluster/reader.py): source topics read once, events sent only to the workers
that want them, node-level history, the reader and workers killed."""

from __future__ import annotations

import json
import os
import re
import signal

import pytest

from tests.cluster.conftest import Node
from tests.cluster.test_cluster import ids_until, post, streams_on
from tests.cluster.test_flow import metric
from tests.helpers import T, make_event, uid, wait_until

pytestmark = pytest.mark.kafka

TOPIC = "rig-src-nr"


@pytest.fixture(scope="module")
def node(tansu):
    tansu.create_topics(["rigfast-cluster", "rigfast-blacklist", TOPIC], partitions=2)
    n = Node("nr", kafka=tansu.bootstrap)
    try:
        yield n.start()
    finally:
        n.stop()


@pytest.fixture(scope="module")
def producer(tansu):
    from confluent_kafka import Producer

    return Producer({"bootstrap.servers": tansu.bootstrap, "linger.ms": 2, "log_level": 0})


def produce(producer, events: list[dict]) -> None:
    for i, ev in enumerate(events):
        producer.produce(TOPIC, json.dumps(ev).encode(), partition=i % 2)
    assert producer.flush(T) == 0


def events_in(node: Node) -> dict[int, int]:
    return {w: h["cluster"]["reader"]["events_in"] for w, h in node.healths().items()}


def reader_pids(node: Node) -> list[int]:
    return [int(p) for p in re.findall(r"reader started, pid (\d+)", node.log(tail=1 << 20))]


def test_one_reader_and_no_worker_consumer(node):
    """The node runs one reader process; workers report no event consumer of their own."""
    assert len(reader_pids(node)) == 1
    for h in node.healths().values():
        assert h["cluster"]["reader"]["connected"] is True
        assert h["kafka"]["via"] == "reader"  # no event source of its own: the reader's state, over the link


def test_events_reach_only_interested_workers_exactly_once(node, producer):
    """Two connections for type A on worker 0, none on worker 1: each A event arrives exactly once on each,
    in order per partition; type B (nobody) and A cost worker 1 nothing: the reader sent it no event."""
    a, b = uid("ra"), uid("rb")
    s1, _ = streams_on(node, {0}, [{"eventType": a}])[0]
    s2, _ = streams_on(node, {0}, [{"eventType": a}])[0]
    before = events_in(node)
    try:
        evs_a = [make_event(a, {"n": i}) for i in range(20)]
        evs_b = [make_event(b, {"n": i}) for i in range(20)]
        produce(producer, [e for pair in zip(evs_a, evs_b) for e in pair])
        want = [e["id"] for e in evs_a]
        for s in (s1, s2):
            got = ids_until(s, set(want))
            assert sorted(got) == sorted(want)  # exactly once each
            for part in (0, 1):  # every A went to one partition in order
                sub = [i for i in got if i in want[part::2]]
                assert sub == want[part::2]
        wait_until(lambda: events_in(node)[0] - before[0] >= 20, what="worker 0 counted its events")
        after = events_in(node)
        assert after[0] - before[0] == 20  # one copy per event for the worker, however many connections
        assert after[1] == before[1]
    finally:
        s1.close()
        s2.close()


def test_resume_on_another_worker_from_the_node_history(node, producer):
    """An event worker 1 never wanted is replayed there from the reader's history after a Last-Event-ID."""
    c = uid("rc")
    subs = [{"eventType": c}]
    s0, _ = streams_on(node, {0}, subs)[0]
    try:
        first = make_event(c, {"n": 0})
        produce(producer, [first])
        seen = s0.next_event(timeout=2 * T)
        assert seen.data["id"] == first["id"]
        last_id = seen.id
    finally:
        s0.close()
    missed = [make_event(c, {"n": i}) for i in (1, 2, 3)]
    produce(producer, [missed[0]])  # partition 0, like the first: per-partition order is checked below
    producer.produce(TOPIC, json.dumps(missed[1]).encode(), partition=0)
    producer.produce(TOPIC, json.dumps(missed[2]).encode(), partition=0)
    assert producer.flush(T) == 0

    s1, _ = streams_on(node, {1}, subs, headers={"last-event-id": last_id})[1]
    try:
        got = [s1.next_event(timeout=2 * T) for _ in missed]
        assert [e.event for e in got] == [c] * 3  # no rig.history_gap
        assert [e.data["id"] for e in got] == [e["id"] for e in missed], ([e.data for e in got], missed, last_id)
        live = make_event(c, {"n": 4})
        produce(producer, [live])
        nxt = s1.next_event(timeout=2 * T)
        assert nxt.data["id"] == live["id"], (nxt.id, nxt.data, [g.id for g in got], last_id)  # then live, once
    finally:
        s1.close()


def test_reader_killed_restarts_and_loses_nothing(node, producer):
    """SIGKILL the reader: the supervisor starts another, the workers keep their connections, HTTP events
    still flow between the workers, and records produced while no reader ran arrive (it resumes where
    the old one stopped, not at the end)."""
    d = uid("rd")
    subs = [{"eventType": d}]
    got = streams_on(node, {0, 1}, subs)
    (s0, _), (s1, _) = got[0], got[1]
    try:
        warm = make_event(d, {"n": -1})
        produce(producer, [warm])
        assert warm["id"] in ids_until(s0, {warm["id"]})
        assert warm["id"] in ids_until(s1, {warm["id"]})
        old = reader_pids(node)[-1]
        os.kill(old, signal.SIGKILL)
        during = [make_event(d, {"n": i}) for i in range(30)]
        produce(producer, during)  # while the reader is down or starting
        http_ev = make_event(d, {"via": "http"})
        post(node.pinned(1), http_ev, "/v3/messages")  # worker 1 -> worker 0 over the bus, reader or not
        want = {e["id"] for e in during} | {http_ev["id"]}
        for s in (s0, s1):
            seen = ids_until(s, want, timeout=6 * T)
            assert want <= set(seen)
            assert len([i for i in seen if i in want]) == len(want)  # nothing twice on a connection
        new = reader_pids(node)
        assert len(new) >= 2 and new[-1] != old
    finally:
        s0.close()
        s1.close()


def test_reader_restart_keeps_a_reached_node_ready(node):
    """The workers carry the reader's Kafka state; a killed reader's replacement (not connected yet) does not
    make a node that had reached Kafka not-ready: /health/ready stays 200 through the restart gap."""
    import httpx

    wait_until(lambda: all(h["kafka"]["reached"] and h["kafka"]["state"] == "connected"
                           for h in node.healths().values()), timeout=4 * T, what="the reader's Kafka state reached")
    old = reader_pids(node)[-1]
    os.kill(old, signal.SIGKILL)
    answers = []

    def back() -> bool:
        r = httpx.get(node.api + "/health/ready", timeout=T)
        answers.append((r.status_code, r.json()["checks"]))
        assert r.status_code == 200, answers[-1]
        pids = reader_pids(node)
        return pids[-1] != old and all(h["kafka"]["reader_connected"] and h["kafka"]["state"] == "connected"
                                       for h in node.healths().values())

    wait_until(back, timeout=6 * T, what="a new reader linked and connected")
    assert answers and all(code == 200 and checks["kafka_reached"] for code, checks in answers)


def test_worker_killed_interest_dropped_and_relearned(node, producer):
    """A worker killed: the reader drops its interest at once (log) and learns the replacement's."""
    e = uid("re")
    subs = [{"eventType": e}]
    s1, _ = streams_on(node, {1}, subs)[1]
    victim = node.healths({1})[1]["pid"]
    os.kill(victim, signal.SIGKILL)
    s1.close()
    wait_until(lambda: "worker 1 disconnected" in node.log(tail=1 << 20), timeout=2 * T, what="interest dropped")
    healths = node.wait_ready()
    assert healths[1]["pid"] != victim
    before = events_in(node)
    produce(producer, [make_event(e, {"n": 0})])  # nobody wants it now
    s1b, _ = streams_on(node, {1}, subs)[1]
    try:
        ev = make_event(e, {"n": 1})
        produce(producer, [ev])
        assert s1b.next_event(timeout=2 * T).data["id"] == ev["id"]
        after = events_in(node)
        assert after[0] == before[0]
    finally:
        s1b.close()


SLOW_TOPIC = "rig-src-nslow"


@pytest.fixture(scope="module")
def small_link_node(tansu):
    """A node whose reader holds back past 16 KiB unsent to a worker (and cuts a worker only after 60 s)."""
    tansu.create_topics(["rigfast-cluster", "rigfast-blacklist", SLOW_TOPIC], partitions=2)
    n = Node("nslow", kafka=tansu.bootstrap, KAFKA_SOURCE_TOPICS=SLOW_TOPIC, RIGFAST_READER_LINK_BYTES=16384,
             RIGFAST_READER_STALL_S=60, RIGFAST_SEND_BUFFER_BYTES=64 << 20)
    try:
        yield n.start()
    finally:
        n.stop()


def test_a_stopped_worker_holds_the_reader_back_and_loses_nothing(small_link_node, tansu):
    """Worker 1 stopped (SIGSTOP) while 10,000 ~450 B records for its connection are produced, over 250 times
    what the reader may hold unsent for it: the reader stops taking records (counted) and leaves most of them
    in Kafka while the worker does not read (what it took: the kernel's socket buffer, the 16 KiB and the
    batch that crossed them); after SIGCONT every record arrives, once, in order per
    partition, and the worker's link was never dropped (the 60 s stall bound is not reached)."""
    from confluent_kafka import Producer

    node = small_link_node
    t = uid("slow")
    n = 10000
    s1, _ = streams_on(node, {1}, [{"eventType": t}])[1]
    victim = node.healths({1})[1]["pid"]
    w0 = node.pinned(0)  # fresh connections may land on the stopped worker: this one stays on worker 0
    seen = w0.get("/metrics").text
    held0 = metric(seen, "rig_reader_held_back_total", to="1")
    read0 = metric(seen, "rig_events_received_total", source="kafka", worker="reader")
    producer = Producer({"bootstrap.servers": tansu.bootstrap, "linger.ms": 2, "log_level": 0})
    evs = [make_event(t, {"n": i, "pad": "x" * 300}) for i in range(n)]
    os.kill(victim, signal.SIGSTOP)
    try:
        for i, ev in enumerate(evs):
            producer.produce(SLOW_TOPIC, json.dumps(ev).encode(), partition=i % 2)
        assert producer.flush(T) == 0
        text = wait_until(lambda: (lambda x: x if metric(x, "rig_reader_held_back_total", to="1") > held0 else "")(
            w0.get("/metrics").text), timeout=4 * T, what="the reader holding back for worker 1")
        # asked after the records were all in Kafka and a peer's metrics timeout (1 s) later: a reader that
        # did not hold back would have read (nearly) all of them by now
        assert metric(text, "rig_events_received_total", source="kafka", worker="reader") - read0 < n / 2
    finally:
        os.kill(victim, signal.SIGCONT)
    try:
        want = [e["id"] for e in evs]
        got = ids_until(s1, set(want), timeout=6 * T)
        assert sorted(got) == sorted(want)  # every record, exactly once
        for part in (0, 1):
            assert [i for i in got if i in set(want[part::2])] == want[part::2]  # in order per partition
        log = node.log(tail=1 << 20)
        assert "dropping its connection" not in log and "worker 1 disconnected" not in log
        assert node.healths({1})[1]["pid"] == victim
    finally:
        s1.close()
        w0.close()
