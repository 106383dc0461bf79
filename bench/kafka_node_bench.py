"""Node CPU per Kafka event nobody subscribed, by worker count; the reader's consume-and-drop against raw confluent-kafka.

Usage::

    .venv/bin/python -m bench.kafka_node_bench --events 100000 --workers 1,2,4 --runs 1

Per worker count: a Tansu broker with one 2-partition source topic; a real
node (``python -m rigfast`` with ``RIGFAST_WORKERS=W``: supervisor, W
workers, and with W > 1 the node's event reader) started and ready; every
process of the node stopped with SIGSTOP (by PID), ``--events`` ~1 kB
CloudEvents produced, the CPU of every process of the node read, SIGCONT,
and the node timed until its CPU stops moving (the backlog is read and
dropped: nobody is subscribed). Reported: node CPU microseconds per event
(the processes' utime+stime, idle baseline subtracted), and the split per
process kind.

``raw``: a bare confluent-kafka consumer (poll + consume(2000, 0)) reading the
same backlog in this process, events per CPU-second, in the same run; the
ratio reader/raw is the issue's "reader consume-and-drop per CPU-second".
Every run stops by itself (``TIME_LIMIT_S``); processes are stopped by PID.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import httpx  # noqa: E402
import orjson  # noqa: E402

from bench.procstat import proc_cpu_s  # noqa: E402
from rigfast.kafka.tansu import TansuBroker, free_port  # noqa: E402

TOPIC = "bench-node"
TIME_LIMIT_S = 90.0
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


def children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def tree(pid: int) -> list[int]:
    out = [pid]
    for c in children(pid):
        out.extend(tree(c))
    return out


def role(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            env = f.read().split(b"\0")
    except OSError:
        return "?"
    if b"RIGFAST_ROLE=reader" in env:
        return "reader"
    if any(e.startswith(b"RIGFAST_WORKER_COUNT=") for e in env):
        return "worker"
    return "supervisor"


def cpu_of(pids: list[int]) -> dict[int, float]:
    out = {}
    for p in pids:
        try:
            out[p] = proc_cpu_s(p)
        except OSError:
            pass
    return out


def wait_ready(api: int, workers: int, proc: subprocess.Popen, timeout: float = 40.0) -> None:
    deadline = time.monotonic() + timeout
    seen = set()
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"node exited with {proc.returncode}")
        try:
            h = httpx.get(f"http://127.0.0.1:{api}/health?detailed", timeout=2).json()
            c = h.get("cluster") or {}
            if workers == 1 and (h.get("kafka") or {}).get("state") == "connected":
                return
            if workers > 1 and c.get("ready"):
                seen.add(h["worker"])
                if len(seen) == workers:
                    return
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(0.05)
    raise TimeoutError("node not ready")


def one_node(bootstrap: str, workers: int, events: list[bytes]) -> dict:
    port, api = free_port(), free_port()
    env = dict(os.environ, KAFKA_BROKERS=bootstrap, KAFKA_SOURCE_TOPICS=TOPIC, RIGFAST_WORKERS=str(workers),
               INBOUND_PORT=str(port), API_HTTP_PORT=str(api), RIGFAST_HOST="127.0.0.1", RIGFAST_API_HOST="127.0.0.1",
               RIGFAST_CLUSTER_TOPIC="", LOG_LEVEL="warning", RIGFAST_NODE_ID=f"bench{workers}",
               RIGFAST_CLUSTER_DIR=tempfile.mkdtemp(prefix="rigfast-bench-"))
    proc = subprocess.Popen([sys.executable, "-m", "rigfast"], env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_ready(api, workers, proc)
        time.sleep(1.0)  # the reader starts reading once every worker said its interest
        pids = tree(proc.pid)
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
            split[role(p)] = split.get(role(p), 0.0) + after.get(p, 0) - before.get(p, 0)
        return {"workers": workers, "us_per_event": total / len(events) * 1e6, "busy_s": busy_s,
                "split_us": {k: v / len(events) * 1e6 for k, v in split.items()}}
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def raw(bootstrap: str, n: int) -> float:
    """Events per CPU-second of a bare consumer reading the whole topic (this process's CPU)."""
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-raw-{os.getpid()}", "enable.auto.commit": False,
                  "log_level": 0})
    c.assign([TopicPartition(TOPIC, p, 0) for p in (0, 1)])
    got = 0
    t0 = time.process_time()
    deadline = time.monotonic() + TIME_LIMIT_S
    while got < n and time.monotonic() < deadline:
        first = c.poll(0.5)
        if first is None:
            continue
        got += 1 + len(c.consume(1999, 0))
    cpu = time.process_time() - t0
    c.close()
    return got / cpu


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=100000)
    ap.add_argument("--workers", default="1,2,4")
    ap.add_argument("--size", type=int, default=1000)
    args = ap.parse_args(argv)
    events = make_events(args.events, args.size)
    results = []
    raw_rate = None
    for w in [int(x) for x in args.workers.split(",")]:
        with TansuBroker() as broker:  # a fresh broker per node: the topic holds exactly this run's events
            broker.create_topics([TOPIC], partitions=2)
            r = one_node(broker.bootstrap, w, events)
            if raw_rate is None:
                raw_rate = raw(broker.bootstrap, args.events)
            results.append(r)
            split = ", ".join(f"{k} {v:.2f}" for k, v in sorted(r["split_us"].items()))
            print(f"workers={w}: node CPU {r['us_per_event']:.2f} us/event ({split}); backlog read in {r['busy_s']:.2f}s",
                  flush=True)
    base = results[0]["us_per_event"]
    for r in results:
        print(f"workers={r['workers']}: {r['us_per_event'] / base:.2f}x the {results[0]['workers']}-worker figure")
    print(f"raw confluent-kafka: {raw_rate:,.0f} events per CPU-second")
    for r in results:
        if "reader" in r["split_us"]:
            rate = 1e6 / r["split_us"]["reader"]
            print(f"workers={r['workers']}: reader {rate:,.0f} events per CPU-second = {rate / raw_rate:.2f}x raw")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
