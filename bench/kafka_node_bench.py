"""Node CPU per Kafka event: nobody subscribed by worker count, and events addressed to one user each.

Usage::

    .venv/bin/python -m bench.kafka_node_bench --events 100000 --workers 1,2,4 --repeat 3
    .venv/bin/python -m bench.kafka_node_bench addressed --users 10000 --workers 4 --rates 10000,50000 --seconds 10
    .venv/bin/python -m bench.kafka_node_bench http --events 20000 --workers 1,2,4

**Nobody subscribed** (the default). Per worker count: a Tansu broker with one
2-partition source topic; a real node (``python -m rigfast`` with
``RIGFAST_WORKERS=W``: supervisor, W workers, and with W > 1 the node's
event reader) started and ready; every process of the node stopped with
SIGSTOP (by PID), ``--events`` ~1 kB CloudEvents produced, the CPU of every
process of the node read, SIGCONT, and the node timed until its CPU stops
moving (the backlog is read and dropped: nobody is subscribed). Reported:
node CPU microseconds per event (the processes' utime+stime, idle baseline
subtracted), and the split per process kind.

``raw``: a bare confluent-kafka consumer (poll + consume(2000, 0)) reading the
same backlog in this process right after the node, events per CPU-second;
the ratio reader/raw of that pair is the issue's "reader consume-and-drop
per CPU-second". ``--repeat N`` runs every worker count N times,
interleaved (each on a fresh broker), and reports medians: the machine is
noisy, and one run's CPU is counted in 10 ms ticks.

**Addressed** (``addressed``): one node of ``--workers`` workers with the
reader, ``--users`` SSE connections (from ``--clients`` processes), each
with a JWT whose ``sub`` is its user, so an extractor on ``/data/user`` gives
it the automatic subscription to its own ``user.msg`` events; the holding
worker of each user is read from its connection token. Then, per rate of
``--rates``, a producer process writes ``--seconds`` of ~1 kB events at that
rate (paced, key = user), each for one user and carrying its produce time
(``"ts"``, ns since the epoch), twice: for random users of all of them, then
only for users held by worker 0 (the other workers must show no CPU for
those). Reported per phase: events asked/produced/delivered, Kafka-to-client
latency p50/p99 (client receive time minus ``ts``, same clock), the same for
a bare consumer of the topic (the part that is Kafka's), how often and how
long the reader held Kafka back for a worker behind, and CPU per event
and share of a core of every process: supervisor, reader, each worker, and
outside the node Tansu, the clients and the producer (what bounds the rate).

**HTTP** (``http``): per worker count, a node (with a source topic, so the
reader runs) gets ``--events`` ~1 kB events nobody subscribed, POSTed to
``/_rig/v1/events`` over ``--conns`` keep-alive connections (one by
default: one worker accepts them all); node CPU per event per process, idle
subtracted: what the accepting worker, the other workers and the reader
each pay for an HTTP event.

Every run stops by itself (bounded waits); processes are stopped by PID.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import os
import random
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import orjson  # noqa: E402

from bench.node import Node  # noqa: E402
from bench.procstat import cpu_of  # noqa: E402
from bench.sse_clients import (USER_EXTRACTORS, USER_TYPE, SseConn, ask_all, close_all, connect_all,  # noqa: E402
                               sse_request, start_clients, stop_clients)
from rigfast.kafka.tansu import TansuBroker  # noqa: E402

TOPIC = "bench-node"
TIME_LIMIT_S = 90.0
PHASE_TIMEOUT_S = 120.0
IDLE_S = 1.0


def make_events(n: int, size: int = 1000) -> list[bytes]:
    pad = "x" * max(0, size - 160)
    return [orjson.dumps({"specversion": "1.0", "type": "com.example.nobody", "source": "/bench", "id": f"e{i}",
                          "data": {"i": i, "pad": pad}}) for i in range(n)]


def produce(bootstrap: str, events: list[bytes]) -> None:
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "batch.num.messages": 10000,
                  "queue.buffering.max.messages": 1000000, "log_level": 0, "compression.type": "none"})
    for i, v in enumerate(events):
        while True:
            try:
                p.produce(TOPIC, v, partition=i % 2)
                break
            except BufferError:
                p.poll(0.05)
    assert p.flush(60) == 0


def kind(role_name: str, workers: int) -> str:
    """supervisor / reader / workers (a lone worker is the node's only process and reads itself)."""
    if workers == 1:
        return "worker (reads itself)"
    return "workers" if role_name.startswith("w") else role_name


def one_node(bootstrap: str, workers: int, events: list[bytes]) -> dict:
    with Node(workers, {"KAFKA_BROKERS": bootstrap, "KAFKA_SOURCE_TOPICS": TOPIC}, node_id=f"bench{workers}") as node:
        time.sleep(1.0)  # the reader starts reading once every worker said its interest
        pids = node.pids()
        roles = node.roles()
        c0, t0 = cpu_of(pids), time.monotonic()
        time.sleep(IDLE_S)
        c1 = cpu_of(pids)
        idle_rate = (sum(c1.values()) - sum(c0.values())) / (time.monotonic() - t0)
        for p in pids:
            os.kill(p, signal.SIGSTOP)
        try:
            produce(bootstrap, events)
        finally:
            before = cpu_of(pids)
            for p in pids:
                os.kill(p, signal.SIGCONT)
        start = time.monotonic()
        last, last_change = sum(before.values()), time.monotonic()
        while time.monotonic() - start < TIME_LIMIT_S:
            time.sleep(0.2)
            now = sum(cpu_of(pids).values())
            if now - last > 0.02 + idle_rate * 0.2:
                last, last_change = now, time.monotonic()
            elif time.monotonic() - last_change > 1.0:
                break
        after = cpu_of(pids)
        busy_s = last_change - start
        total = sum(after.values()) - sum(before.values()) - idle_rate * (time.monotonic() - start)
        split: dict[str, float] = {}
        for p in pids:
            k = kind(roles[p], workers)
            split[k] = split.get(k, 0.0) + after.get(p, 0) - before.get(p, 0)
        return {"workers": workers, "us_per_event": total / len(events) * 1e6, "busy_s": busy_s,
                "split_us": {k: v / len(events) * 1e6 for k, v in split.items()}}


RAW_WALL: list[float] = []  # events per wall-clock second of each raw read (what the broker serves one client)


def raw(bootstrap: str, n: int) -> float:
    """Events per CPU-second of a bare consumer reading the whole topic (this process's CPU); its events per
    wall-clock second go to RAW_WALL."""
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-raw-{os.getpid()}", "enable.auto.commit": False,
                  "log_level": 0})
    c.assign([TopicPartition(TOPIC, p, 0) for p in (0, 1)])
    got = 0
    t0, w0 = time.process_time(), None
    deadline = time.monotonic() + TIME_LIMIT_S
    while got < n and time.monotonic() < deadline:
        first = c.poll(0.5)
        if first is None:
            continue
        if w0 is None:
            w0 = time.monotonic()  # from the first record: not the assignment's round trips
        got += 1 + len(c.consume(1999, 0))
    cpu = time.process_time() - t0
    RAW_WALL.append(got / (time.monotonic() - (w0 or time.monotonic()) or 1e-9))
    c.close()
    return got / cpu


# --- addressed events: each for one user, delivered over SSE ---------------------------------------

JWT_SECRET = "bench-secret-of-at-least-32-bytes-long"
TS_MARK = b'"ts":'


class _Timed(SseConn):
    """Counts the events that arrive and keeps their producer-to-here latency (ns), read from ``"ts":``."""

    def __init__(self, lat: list[int]):
        super().__init__()
        self.lat = lat
        self.tail = b""

    def on_data(self, data: bytes) -> None:
        now = time.time_ns()
        buf = self.tail + data if self.tail else data
        pos, n = 0, len(buf)
        i = buf.find(TS_MARK)
        while i >= 0:
            j = end = i + len(TS_MARK)
            while end < n and 48 <= buf[end] <= 57:
                end += 1
            if end == n:  # the number may go on in the next read
                break
            self.lat.append(now - int(buf[j:end]))
            pos = end
            i = buf.find(TS_MARK, end)
        self.tail = buf[max(pos, n - 32):]


async def _addressed_client(port: int, src: str, users: list[int], conn) -> None:
    import jwt

    loop = asyncio.get_running_loop()
    lat: list[int] = []
    exp = int(time.time()) + 3600
    reqs = [sse_request(jwt=jwt.encode({"sub": f"u{u}", "exp": exp}, JWT_SECRET, algorithm="HS256")) for u in users]
    conns = await connect_all(port, src, reqs, lambda: _Timed(lat), timeout_s=PHASE_TIMEOUT_S)
    conn.send({u: c.worker for u, c in zip(users, conns)})
    while True:
        cmd = await loop.run_in_executor(None, conn.recv)
        if cmd == "count":
            conn.send(len(lat))
        elif cmd == "report":
            conn.send(array.array("q", lat).tobytes())
            lat.clear()
        else:
            break
    close_all(conns)


def addressed_client_main(port: int, src: str, users: list[int], conn) -> None:
    import uvloop

    uvloop.run(_addressed_client(port, src, users, conn))


def paced_produce(bootstrap: str, rate: int, seconds: float, targets: list[int], size: int, conn) -> None:
    """``rate`` events/s for ``seconds``, event i for user targets[i % len]; each carries its produce time (ns)."""
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 1, "queue.buffering.max.messages": 1000000,
                  "log_level": 0, "compression.type": "none"})
    pad = "x" * max(0, size - 150)
    total = int(rate * seconds)
    sent = 0
    t0 = time.monotonic()
    c0 = time.process_time()
    while sent < total:
        due = min(total, int((time.monotonic() - t0) * rate) + 1)
        while sent < due:
            user = f"u{targets[sent % len(targets)]}"
            v = orjson.dumps({"specversion": "1.0", "type": USER_TYPE, "source": "/bench", "id": f"a{sent}",
                              "data": {"user": user, "ts": time.time_ns(), "pad": pad}})
            try:
                p.produce(TOPIC, v, key=user)
            except BufferError:
                p.poll(0.01)
                continue
            sent += 1
        p.poll(0)
        time.sleep(0.001)
    produced_s = time.monotonic() - t0
    p.flush(60)
    conn.send((sent, produced_s, time.process_time() - c0))


def ts_of(value: bytes) -> int:
    i = value.find(TS_MARK) + len(TS_MARK)
    end = i
    while 48 <= value[end] <= 57:
        end += 1
    return int(value[i:end])


def probe_consumer(bootstrap: str, conn) -> None:
    """Producer-to-consumer latency of a bare consumer (librdkafka defaults, like the node's) on the same topic:
    the part of the latency that is Kafka's (producer batching, broker, fetch), reported when told to stop."""
    from confluent_kafka import OFFSET_END, Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-probe-{os.getpid()}", "enable.auto.commit": False,
                  "log_level": 0})
    c.assign([TopicPartition(TOPIC, p, OFFSET_END) for p in (0, 1)])
    lat = array.array("q")
    conn.send("ready")
    while not conn.poll(0):
        for m in c.consume(1000, 0.05):
            if m.error() is None:
                lat.append(time.time_ns() - ts_of(m.value()))
    c.close()
    conn.send(lat.tobytes())


def pct(sorted_ns: list[int], q: float) -> float:
    return sorted_ns[min(len(sorted_ns) - 1, int(q * len(sorted_ns)))] / 1e6 if sorted_ns else float("nan")


def addressed_phase(bootstrap: str, node: Node, tansu_pid: int, clients: list, rate: int, seconds: float,
                    targets: list[int], size: int, label: str) -> None:
    roles = node.roles()
    pids = list(roles)
    logged = len(node.problems())
    others = {tansu_pid: "tansu", **{c[0].pid: f"client{k}" for k, c in enumerate(clients)}}
    [(probe, probe_end)] = start_clients(probe_consumer, [(bootstrap,)])
    if not probe_end.poll(30):
        raise SystemExit("probe consumer did not start")
    probe_end.recv()
    time.sleep(1.0)  # its assignment at the end is in place (bounded; a late start only loses early samples)
    c0 = cpu_of(pids + list(others))
    t0 = time.monotonic()
    [(prod, parent)] = start_clients(paced_produce, [(bootstrap, rate, seconds, targets, size)])
    if not parent.poll(seconds * 4 + 60):
        prod.kill()
        raise SystemExit("producer did not finish in time")
    sent, produced_s, prod_cpu = parent.recv()
    prod.join(10)
    deadline = time.monotonic() + 60
    got, last, last_change = 0, -1, time.monotonic()
    while time.monotonic() < deadline and got < sent and time.monotonic() - last_change < 5:
        got = sum(ask_all(clients, "count"))
        if got != last:
            last, last_change = got, time.monotonic()
        time.sleep(0.05)
    elapsed = time.monotonic() - t0
    c1 = cpu_of(pids + list(others))
    lat = sorted(x for b in ask_all(clients, "report") for x in array.array("q", b))
    probe_end.send("stop")
    kafka_lat = sorted(array.array("q", probe_end.recv()) if probe_end.poll(30) else [])
    probe.join(10)
    if probe.is_alive():
        probe.kill()
    used = {p: c1.get(p, 0) - c0.get(p, 0) - IDLE_RATE.get(p, 0) * elapsed for p in c0}
    node_us = sum(used[p] for p in pids) / sent * 1e6
    print(f"\n{label}: {sent} events produced in {produced_s:.2f}s ({sent / produced_s:,.0f}/s asked {rate:,}/s), "
          f"{got} delivered ({got - sent:+d}); {elapsed:.2f}s until the last delivery", flush=True)
    print(f"  Kafka-to-client latency: p50 {pct(lat, 0.5):.2f} ms, p99 {pct(lat, 0.99):.2f} ms, max {pct(lat, 1.0):.2f} ms; "
          f"Kafka alone (a bare consumer of the same topic, {len(kafka_lat)} samples): p50 {pct(kafka_lat, 0.5):.2f} ms, "
          f"p99 {pct(kafka_lat, 0.99):.2f} ms; load average {os.getloadavg()[0]:.1f}")
    print(f"  node CPU {node_us:.2f} us per event (idle subtracted), per process:")
    for p in sorted(pids, key=lambda p: roles[p]):
        print(f"    {roles[p]:<11} {used[p] / sent * 1e6:6.2f} us/event  ({used[p] / elapsed * 100:5.1f}% of a core)")
    print("  outside the node:")
    for p, name in others.items():
        print(f"    {name:<11} {used[p] / sent * 1e6:6.2f} us/event  ({used[p] / elapsed * 100:5.1f}% of a core)")
    print(f"    producer    {prod_cpu / sent * 1e6:6.2f} us/event  ({prod_cpu / produced_s * 100:5.1f}% of a core)")
    held = reader_held_back(node)
    print(f"  the reader held Kafka back for workers behind {held[0]:.0f} times, {held[1]:.2f}s in all (so far in the run)")
    for line in node.problems()[logged:][:5]:
        print(f"  node log: {line}")


def reader_held_back(node: Node) -> tuple[float, float]:
    """(times, seconds) the node's reader held Kafka back because a worker was behind (its /metrics)."""
    import httpx

    times = seconds = 0.0
    for line in httpx.get(f"http://127.0.0.1:{node.api}/metrics", timeout=10).text.splitlines():
        if line.startswith("rig_reader_held_back_total{"):
            times += float(line.rsplit(" ", 1)[1])
        elif line.startswith('rig_reader_held_back_seconds_total{worker="reader"'):
            seconds += float(line.rsplit(" ", 1)[1])
    return times, seconds


IDLE_RATE: dict[int, float] = {}


def main_addressed(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="kafka_node_bench addressed")
    ap.add_argument("--users", type=int, default=10000)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--clients", type=int, default=2)
    ap.add_argument("--rates", default="10000,50000")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--size", type=int, default=1000)
    ap.add_argument("--kafka-config", default="", help="RIGFAST_KAFKA_CONFIG of the node (librdkafka properties, JSON)")
    args = ap.parse_args(argv)
    with TansuBroker() as broker:
        broker.create_topics([TOPIC], partitions=2)
        env = {"KAFKA_BROKERS": broker.bootstrap, "KAFKA_SOURCE_TOPICS": TOPIC, "EXTRACTORS": orjson.dumps(USER_EXTRACTORS).decode(),
               "JWT_SECRET_KEY": JWT_SECRET, "RIGFAST_HEARTBEAT_INTERVAL_S": "60", "RIGFAST_KAFKA_CONFIG": args.kafka_config}
        with Node(args.workers, env, node_id="addr") as node:
            clients = start_clients(addressed_client_main, [(node.port, f"127.0.0.{k + 2}", list(range(k, args.users, args.clients)))
                                                            for k in range(args.clients)])
            try:
                where: dict[int, int] = {}
                for pr, c in clients:
                    if not c.poll(PHASE_TIMEOUT_S):
                        raise SystemExit("clients did not connect in time")
                    where.update(c.recv())
                per_worker = {w: sum(1 for v in where.values() if v == w) for w in range(args.workers)}
                print(f"{len(where)} SSE users connected, per worker {per_worker}", flush=True)
                time.sleep(2.0)  # the workers' interest reaches the reader (batched per loop iteration)
                pids = node.pids() + [broker.proc.pid] + [pr.pid for pr, _ in clients]
                c0, t0 = cpu_of(pids), time.monotonic()
                time.sleep(2 * IDLE_S)
                c1, dt = cpu_of(pids), time.monotonic() - t0
                IDLE_RATE.update({p: (c1.get(p, 0) - c0.get(p, 0)) / dt for p in pids})
                everyone = list(where)
                random.Random(12).shuffle(everyone)
                on_w0 = [u for u in everyone if where[u] == 0]
                for rate in [int(x) for x in args.rates.split(",")]:
                    addressed_phase(broker.bootstrap, node, broker.proc.pid, clients, rate, args.seconds, everyone,
                                    args.size, f"{rate:,}/s, each event for one random user of all {len(everyone)}")
                    addressed_phase(broker.bootstrap, node, broker.proc.pid, clients, rate, args.seconds, on_w0,
                                    args.size, f"{rate:,}/s, each event for one random user held by worker 0")
            finally:
                stop_clients(clients)
    return 0


# --- HTTP-submitted events nobody subscribed ------------------------------------------------------


async def _post_all(port: int, bodies: list[bytes], conns: int) -> None:
    async def one(part: list[bytes]) -> None:
        r, w = await asyncio.open_connection("127.0.0.1", port)
        for body in part:
            w.write(b"POST /_rig/v1/events HTTP/1.1\r\nHost: bench\r\ncontent-type: application/cloudevents+json\r\n"
                    b"content-length: %d\r\n\r\n%s" % (len(body), body))
            head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 30)
            if not head.startswith(b"HTTP/1.1 2"):
                raise RuntimeError(head.split(b"\r\n", 1)[0].decode())
            length = int(head.lower().split(b"content-length:", 1)[1].split(b"\r\n", 1)[0])
            await asyncio.wait_for(r.readexactly(length), 30)
        w.close()

    await asyncio.gather(*(one(bodies[k::conns]) for k in range(conns)))


def http_post_main(port: int, bodies: list[bytes], conns: int, conn) -> None:
    import uvloop

    t0 = time.monotonic()
    uvloop.run(_post_all(port, bodies, conns))
    conn.send(time.monotonic() - t0)


def http_node(bootstrap: str, workers: int, events: list[bytes], conns: int) -> None:
    with Node(workers, {"KAFKA_BROKERS": bootstrap, "KAFKA_SOURCE_TOPICS": TOPIC}, node_id=f"http{workers}") as node:
        time.sleep(1.0)
        roles = node.roles()
        pids = list(roles)
        c0, t0 = cpu_of(pids), time.monotonic()
        time.sleep(IDLE_S)
        c1 = cpu_of(pids)
        idle = {p: (c1.get(p, 0) - c0.get(p, 0)) / (time.monotonic() - t0) for p in pids}
        [(poster, pipe)] = start_clients(http_post_main, [(node.port, events, conns)])
        if not pipe.poll(TIME_LIMIT_S):
            poster.kill()
            raise SystemExit("posting did not finish in time")
        took = pipe.recv()
        poster.join(10)
        time.sleep(0.5)  # relays of the last events
        c2, dt = cpu_of(pids), time.monotonic() - t0 - IDLE_S
        used = {p: c2.get(p, 0) - c1.get(p, 0) - idle[p] * dt for p in pids}
        n = len(events)
        print(f"workers={workers}: {n} HTTP events nobody subscribed posted in {took:.2f}s over {conns} connections: "
              f"node CPU {sum(used.values()) / n * 1e6:.2f} us/event; per process: "
              + ", ".join(f"{roles[p] if workers > 1 else 'worker'} {used[p] / n * 1e6:.2f}"
                          for p in sorted(pids, key=lambda p: roles[p])), flush=True)
        for line in node.problems()[:5]:
            print(f"  node log: {line}")


def main_http(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="kafka_node_bench http")
    ap.add_argument("--events", type=int, default=20000)
    ap.add_argument("--workers", default="1,2,4")
    ap.add_argument("--size", type=int, default=1000)
    ap.add_argument("--conns", type=int, default=1, help="1: one worker accepts every event, the others only relay")
    args = ap.parse_args(argv)
    events = make_events(args.events, args.size)
    with TansuBroker() as broker:
        broker.create_topics([TOPIC], partitions=2)
        for w in [int(x) for x in args.workers.split(",")]:
            http_node(broker.bootstrap, w, events, args.conns)
    return 0


def main(argv: list[str]) -> int:
    if argv[:1] == ["addressed"]:
        return main_addressed(argv[1:])
    if argv[:1] == ["http"]:
        return main_http(argv[1:])
    if argv[:1] == ["nobody"]:
        argv = argv[1:]
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=100000)
    ap.add_argument("--workers", default="1,2,4")
    ap.add_argument("--size", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=1, help="runs per worker count, interleaved; medians reported")
    args = ap.parse_args(argv)
    events = make_events(args.events, args.size)
    counts = [int(x) for x in args.workers.split(",")]
    runs: dict[int, list[dict]] = {w: [] for w in counts}
    for _ in range(args.repeat):
        for w in counts:
            with TansuBroker() as broker:  # a fresh broker per node: the topic holds exactly this run's events
                broker.create_topics([TOPIC], partitions=2)
                r = one_node(broker.bootstrap, w, events)
                r["raw"] = raw(broker.bootstrap, args.events)  # the same backlog, right after: the pair is one run
            runs[w].append(r)
            split = ", ".join(f"{k} {v:.2f}" for k, v in sorted(r["split_us"].items()))
            reader = r["split_us"].get("reader")
            print(f"workers={w}: node CPU {r['us_per_event']:.2f} us/event ({split}); backlog read in {r['busy_s']:.2f}s; "
                  f"raw confluent-kafka {r['raw']:,.0f} events per CPU-second"
                  + (f", reader {1e6 / reader:,.0f} = {1e6 / reader / r['raw']:.2f}x raw" if reader else ""), flush=True)

    def median(xs: list[float]) -> float:
        xs = sorted(xs)
        return (xs[(len(xs) - 1) // 2] + xs[len(xs) // 2]) / 2

    base = median([r["us_per_event"] for r in runs[counts[0]]])
    print(f"medians of {args.repeat} run(s):")
    for w in counts:
        us = median([r["us_per_event"] for r in runs[w]])
        line = (f"workers={w}: node CPU {us:.2f} us/event = {us / base:.2f}x the {counts[0]}-worker figure; "
                f"raw confluent-kafka {median([r['raw'] for r in runs[w]]):,.0f} events per CPU-second")
        if all("reader" in r["split_us"] for r in runs[w]):
            rates = [1e6 / r["split_us"]["reader"] for r in runs[w]]
            line += (f"; reader {median(rates):,.0f} events per CPU-second, "
                     f"{median([x / r['raw'] for x, r in zip(rates, runs[w])]):.2f}x raw (per-run ratios)")
        print(line)
    print(f"raw confluent-kafka read the backlog at {median(RAW_WALL):,.0f} events per wall-clock second (median): "
          f"what the broker serves one consumer on this machine")
    return 0

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
