"""Kafka consume-and-drop benchmark (docs/targets.md T6): events/s and events per CPU-second.

Starts its own Tansu on loopback, fills a topic with ~1 kB CloudEvents from a
child process (so producing costs nothing here), then reads the same records
from the beginning in several variants, each measured on its own:

  rawdefault confluent-kafka poll()+consume() only, librdkafka defaults, no decode
  raw        the same with the gateway's librdkafka settings (the ceiling here)
  nodecode   KafkaSource handing over m.value() only (thread + hand-off cost)
  source     KafkaSource with the real decode path (msgspec strict decode, lazy obj),
             publish_batch a counter
  hub        as source, into a real Hub with nobody subscribed (history on): T6 as
             the gateway runs it
  fullparse  KafkaSource decoding with cloudevents.parse_structured (orjson full parse)

CPU is this process's (all threads: consumer thread and event loop); Tansu's
CPU is reported apart. Usage:

    /tmp/rfvenv/bin/python bench/kafka_bench.py [--events 200000] [--reps 3] [--variants raw,source]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import orjson  # noqa: E402

from bench.procstat import proc_cpu_s  # noqa: E402
from rigfast import config  # noqa: E402
from rigfast.kafka import clients  # noqa: E402
from rigfast.cloudevents import parse_structured  # noqa: E402
from rigfast.hub.hub import Hub  # noqa: E402
from rigfast.sources import kafka  # noqa: E402
from rigfast.subscriptions import Extractors  # noqa: E402
from tests.tansu import TansuBroker  # noqa: E402

TOPIC = "bench"
TIME_LIMIT_S = 60.0


def make_event(i: int, size: int) -> bytes:
    base = {"specversion": "1.0", "type": f"com.example.bench.t{i % 10}", "source": "/bench", "id": f"e-{i}",
            "time": "2026-11-28T00:00:00.000Z", "data": {"user": f"u{i % 1000}", "pad": ""}}
    pad = max(0, size - len(orjson.dumps(base)))
    base["data"]["pad"] = "x" * pad
    return orjson.dumps(base)


def produce(bootstrap: str, n: int, size: int) -> None:
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "batch.size": 1 << 20,
                  "queue.buffering.max.messages": 1_000_000, "log_level": 0})
    for i in range(n):
        while True:
            try:
                p.produce(TOPIC, make_event(i, size))
                break
            except BufferError:
                p.poll(0.05)
    p.flush(120)


def run_raw(bootstrap: str, n: int, gateway_conf: bool = True) -> tuple[float, float]:
    """poll() + consume(BATCH, 0) like the source's thread, nothing else; all partitions from the start."""
    from confluent_kafka import Consumer, TopicPartition

    if gateway_conf:
        conf = clients.consumer_config(config.load({"KAFKA_BROKERS": bootstrap, "KAFKA_SOURCE_TOPICS": TOPIC}))
    else:
        conf = {"bootstrap.servers": bootstrap, "group.id": f"bench-{os.getpid()}", "enable.auto.commit": False}
    conf["log_level"] = 0
    c = Consumer(conf)
    parts = c.list_topics(TOPIC, timeout=10).topics[TOPIC].partitions
    c.assign([TopicPartition(TOPIC, p, -2) for p in parts])
    first = c.poll(10)
    assert first is not None, "no records"
    got = 1
    rest = kafka.BATCH_MAX_MESSAGES - 1
    t0, c0 = time.perf_counter(), time.process_time()
    deadline = time.monotonic() + TIME_LIMIT_S
    while got < n and time.monotonic() < deadline:
        if c.poll(0.2) is not None:
            got += 1 + len(c.consume(rest, 0))
    t1, c1 = time.perf_counter(), time.process_time()
    c.close()
    return (got - 1) / (t1 - t0), (got - 1) / (c1 - c0)


def run_source(bootstrap: str, n: int, variant: str) -> tuple[float, float]:
    import uvloop

    saved = kafka.KafkaSource._decode_batch
    if variant == "nodecode":
        kafka.KafkaSource._decode_batch = lambda self, msgs: ([m.value() for m in msgs], 0)  # type: ignore[method-assign]
    elif variant == "fullparse":
        kafka.KafkaSource._decode_batch = lambda self, msgs: ([parse_structured(m.value()) for m in msgs], 0)  # type: ignore

    async def main() -> tuple[float, float]:
        loop = asyncio.get_running_loop()
        done = asyncio.Event()
        state = {"got": 0, "t0": 0.0, "c0": 0.0}

        hub = Hub(Extractors({}), loop) if variant == "hub" else None

        def publish_batch(events: list) -> None:
            if state["got"] == 0:
                state["t0"], state["c0"] = time.perf_counter(), time.process_time()
            state["got"] += len(events)
            if hub is not None:
                hub.publish_batch(events)
            if state["got"] >= n:
                done.set()

        cfg = config.load({"KAFKA_BROKERS": bootstrap, "KAFKA_SOURCE_TOPICS": TOPIC})
        src = kafka.KafkaSource(cfg, loop, publish_batch, from_beginning=True)
        src.start()
        try:
            await asyncio.wait_for(done.wait(), TIME_LIMIT_S)
        finally:
            t1, c1 = time.perf_counter(), time.process_time()
            await src.stop()
        got = state["got"]
        return got / (t1 - state["t0"]), got / (c1 - state["c0"])

    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as r:
            return r.run(main())
    finally:
        kafka.KafkaSource._decode_batch = saved  # type: ignore[method-assign]


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--size", type=int, default=1000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--variants", default="rawdefault,raw,nodecode,source,hub,fullparse")
    ap.add_argument("--partitions", type=int, default=1)
    args = ap.parse_args(argv)
    variants = args.variants.split(",")

    with TansuBroker() as broker:
        broker.create_topics([TOPIC], partitions=args.partitions)
        t0 = time.perf_counter()
        child = mp.get_context("spawn").Process(target=produce, args=(broker.bootstrap, args.events, args.size))
        child.start()
        child.join(300)
        print(f"produced {args.events} x {len(make_event(0, args.size))} B in {time.perf_counter() - t0:.1f}s", flush=True)
        results: dict[str, list[tuple[float, float, float]]] = {v: [] for v in variants}
        for rep in range(args.reps):
            for v in variants:
                b0 = proc_cpu_s(broker.proc.pid)
                w0 = time.perf_counter()
                if v in ("raw", "rawdefault"):
                    rate, per_cpu = run_raw(broker.bootstrap, args.events, v == "raw")
                else:
                    rate, per_cpu = run_source(broker.bootstrap, args.events, v)
                tansu_share = (proc_cpu_s(broker.proc.pid) - b0) / (time.perf_counter() - w0)
                results[v].append((rate, per_cpu, tansu_share))
                print(f"rep {rep} {v:9s} {rate / 1e3:8.0f}k ev/s  {per_cpu / 1e3:8.0f}k ev/CPU-s  tansu CPU {tansu_share:.2f} cores", flush=True)
    print("\nmedians (T6 target: >= 500k ev/s, >= 700k ev/CPU-s)")
    for v, rs in results.items():
        print(f"  {v:9s} {statistics.median(r[0] for r in rs) / 1e3:8.0f}k ev/s  "
              f"{statistics.median(r[1] for r in rs) / 1e3:8.0f}k ev/CPU-s  "
              f"tansu {statistics.median(r[2] for r in rs):.2f} cores")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
