"""Kafka consume-match-deliver benchmark (docs/targets.md T7) against a real gateway process.

Starts its own Tansu and one gateway (``python -m rigfast``, RIGFAST_WORKERS=1,
reading the topic), opens ``--subs`` SSE connections from a client process
(raw asyncio protocols that only count a marker with ``bytes.count``), then:

1. stops the gateway with SIGSTOP (by PID),
2. produces ``--events`` ~1 kB CloudEvents from a child process, a fraction
   ``--match`` of them of a subscribed type,
3. resumes the gateway (SIGCONT) and times it until every subscriber has read
   every event meant for it.

So the gateway reads a backlog as fast as it can, and the rate does not
depend on how fast the producer writes. Reported: events/s consumed by the
worker (wall and per CPU-second of the gateway process), deliveries/s.

Fan-out shapes (``--fanout``):

  all     every subscriber subscribes to the one hit type: a matching event
          goes to all ``--subs`` connections (100 deliveries per event on
          average at --match 0.1)
  spread  subscriber k subscribes to type ``...hit.k``; a matching event goes
          to one connection (the consume/match path dominates)

Every wait is bounded; Tansu and the gateway are stopped by PID. Usage:

    .venv/bin/python bench/kafka_deliver_bench.py [--events 100000] [--subs 1000] \\
        [--match 0.1] [--fanout all|spread] [--reps 3] [--pin]

``--pin`` runs the gateway on core 1 and producer/clients on core 0 (taskset).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from urllib.parse import quote

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import orjson  # noqa: E402

from bench.procstat import proc_cpu_s  # noqa: E402
from tests.tansu import TansuBroker, free_port  # noqa: E402

TOPIC = "rigbench"
HIT = "com.example.bench.hit"
MISS = "com.example.bench.miss"
PHASE_TIMEOUT_S = 120.0


def hit_type(k: int, fanout: str) -> str:
    return HIT if fanout == "all" else f"{HIT}.{k}"


def make_events(n: int, size: int, match: float, subs: int, fanout: str) -> list[bytes]:
    every = max(1, round(1 / match)) if match > 0 else 0
    out = []
    hits = 0
    for i in range(n):
        if every and i % every == 0:
            etype = hit_type(hits % subs, fanout)
            hits += 1
        else:
            etype = f"{MISS}.t{i % 10}"
        base = {"specversion": "1.0", "type": etype, "source": "/bench", "id": f"e-{i}",
                "time": "2026-11-28T00:00:00.000Z", "data": {"user": f"u{i % 1000}", "pad": ""}}
        base["data"]["pad"] = "x" * max(0, size - len(orjson.dumps(base)))
        out.append(orjson.dumps(base))
    return out


def expected_per_sub(n: int, match: float, subs: int, fanout: str) -> list[int]:
    every = max(1, round(1 / match)) if match > 0 else 0
    hits = len(range(0, n, every)) if every else 0
    if fanout == "all":
        return [hits] * subs
    return [hits // subs + (1 if k < hits % subs else 0) for k in range(subs)]


def produce(bootstrap: str, events: list[bytes]) -> None:
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "batch.size": 1 << 20,
                  "queue.buffering.max.messages": 1_000_000, "log_level": 0})
    for v in events:
        while True:
            try:
                p.produce(TOPIC, v)
                break
            except BufferError:
                p.poll(0.05)
    p.flush(120)


# --- subscriber client (its own process) -----------------------------------------------------


class _Counter(asyncio.Protocol):
    """Counts the ``event: <type>`` marker in whatever arrives; a marker split across reads is rare
    and made up for by keeping the tail of the previous chunk."""

    def __init__(self, marker: bytes, state: dict):
        self.marker = marker
        self.tail = b""
        self.got = 0
        self.greeted = False
        self.state = state

    def data_received(self, data: bytes) -> None:
        buf = self.tail + data if self.tail else data
        if not self.greeted:
            if b"rig.subscriptions_set" not in buf:
                self.tail = buf[-4096:]
                return
            self.greeted = True
            self.state["greeted"] += 1
        n = buf.count(self.marker)
        self.tail = buf[-(len(self.marker) - 1):]
        if n:
            self.got += n
            self.state["got"] += n

    def connection_lost(self, exc) -> None:
        self.state["lost"] += 1


async def _clients(port: int, subs: int, fanout: str, conn, want_total: int) -> None:
    loop = asyncio.get_running_loop()
    state = {"greeted": 0, "got": 0, "lost": 0}
    sem = asyncio.Semaphore(100)

    protos = []

    async def open_one(k: int) -> None:
        etype = hit_type(k, fanout)
        marker = f"event: {etype}\n".encode()
        path = "/_rig/v1/connection/sse?subscriptions=" + quote(json.dumps([{"eventType": etype}]))
        async with sem:
            tr, pr = await loop.create_connection(lambda: _Counter(marker, state), "127.0.0.1", port)
            tr.write(f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
            protos.append((tr, pr))

    await asyncio.wait_for(asyncio.gather(*(open_one(k) for k in range(subs))), PHASE_TIMEOUT_S)
    deadline = time.monotonic() + PHASE_TIMEOUT_S
    while state["greeted"] < subs and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    conn.send(("ready", state["greeted"]))
    # wait for the go, then until everything arrived
    await loop.run_in_executor(None, conn.recv)
    t_first = None
    deadline = time.monotonic() + PHASE_TIMEOUT_S
    while state["got"] < want_total and time.monotonic() < deadline and not state["lost"]:
        await asyncio.sleep(0.002)
        if t_first is None and state["got"]:
            t_first = time.monotonic()
    conn.send(("done", time.monotonic(), state["got"], state["lost"]))
    await loop.run_in_executor(None, conn.recv)
    for tr, _ in protos:
        tr.close()


def client_main(port: int, subs: int, fanout: str, conn, want_total: int) -> None:
    import uvloop

    uvloop.run(_clients(port, subs, fanout, conn, want_total))


# --- gateway -------------------------------------------------------------------------------------


def http_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def metric(api: int, name: str, **labels: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{api}/metrics", timeout=5) as r:
        text = r.read().decode()
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and (not want or want in line):
            total += float(line.rsplit(" ", 1)[1])
    return total


def start_gateway(bootstrap: str, port: int, api: int, pin: bool) -> subprocess.Popen:
    env = dict(os.environ, INBOUND_PORT=str(port), API_HTTP_PORT=str(api), RIGFAST_HOST="127.0.0.1",
               RIGFAST_API_HOST="127.0.0.1", RIGFAST_WORKERS="1", MAX_CONNECTIONS_PER_MINUTE="0",
               RIGFAST_NODE_ID="kbench", LOG_LEVEL="warning", RIGFAST_HEARTBEAT_INTERVAL_S="60",
               KAFKA_BROKERS=bootstrap, KAFKA_SOURCE_TOPICS=TOPIC)
    cmd = [sys.executable, "-m", "rigfast"]
    if pin:
        cmd = ["taskset", "-c", "1", *cmd]
    p = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            h = http_json(f"http://127.0.0.1:{api}/health?detailed")
            if h.get("kafka", {}).get("state") == "connected" and h["kafka"].get("partitions"):
                return p
        except Exception:  # noqa: BLE001 - not up yet
            pass
        if p.poll() is not None:
            raise SystemExit("gateway exited")
        time.sleep(0.2)
    p.kill()
    raise SystemExit("gateway did not connect to Kafka in time")


def one_run(args, bootstrap: str, events: list[bytes], want: list[int]) -> tuple[float, float, float]:
    port = free_port()
    api = free_port()
    gw = start_gateway(bootstrap, port, api, args.pin)
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    want_total = sum(want)
    cl = ctx.Process(target=client_main, args=(port, args.subs, args.fanout, child, want_total))
    try:
        cl.start()
        if args.pin:
            subprocess.run(["taskset", "-pc", "0", str(cl.pid)], stdout=subprocess.DEVNULL, check=False)
        if not parent.poll(PHASE_TIMEOUT_S):
            raise SystemExit("subscribers did not connect in time")
        _, greeted = parent.recv()
        assert greeted == args.subs, f"only {greeted} of {args.subs} subscribers greeted"
        received0 = metric(api, "rig_events_received_total", source="kafka")
        os.kill(gw.pid, signal.SIGSTOP)
        try:
            pr = ctx.Process(target=produce, args=(bootstrap, events))
            pr.start()
            if args.pin:
                subprocess.run(["taskset", "-pc", "0", str(pr.pid)], stdout=subprocess.DEVNULL, check=False)
            pr.join(PHASE_TIMEOUT_S)
            if pr.is_alive():
                pr.kill()
                raise SystemExit("producer did not finish in time")
        finally:
            c0 = proc_cpu_s(gw.pid)
            parent.send("go")
            t0 = time.monotonic()
            os.kill(gw.pid, signal.SIGCONT)
        if not parent.poll(PHASE_TIMEOUT_S + 5):
            raise SystemExit("deliveries did not finish in time")
        _, t1, got, lost = parent.recv()
        c1 = proc_cpu_s(gw.pid)
        consumed = metric(api, "rig_events_received_total", source="kafka") - received0
        if got < want_total or lost:
            print(f"  incomplete: {got} of {want_total} deliveries, {lost} connections lost", flush=True)
        dt = t1 - t0
        n = min(consumed, len(events))
        return n / dt, n / max(c1 - c0, 1e-9), got / dt
    finally:
        parent.send("quit")
        cl.join(10)
        if cl.is_alive():
            cl.kill()
        gw.send_signal(signal.SIGCONT)
        gw.send_signal(signal.SIGTERM)
        try:
            gw.wait(20)
        except subprocess.TimeoutExpired:
            gw.kill()
            gw.wait(5)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--size", type=int, default=1000)
    ap.add_argument("--subs", type=int, default=1000)
    ap.add_argument("--match", type=float, default=0.1)
    ap.add_argument("--fanout", choices=("all", "spread"), default="all")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--pin", action="store_true")
    args = ap.parse_args(argv)
    events = make_events(args.events, args.size, args.match, args.subs, args.fanout)
    want = expected_per_sub(args.events, args.match, args.subs, args.fanout)
    rs = []
    with TansuBroker() as broker:
        broker.create_topics([TOPIC])
        for rep in range(args.reps):
            r = one_run(args, broker.bootstrap, events, want)
            rs.append(r)
            print(f"rep {rep}: {r[0] / 1e3:7.1f}k events/s  {r[1] / 1e3:7.1f}k events/CPU-s (gateway)  "
                  f"{r[2] / 1e6:6.2f}M deliveries/s", flush=True)
    print(f"\nmedian ({args.fanout}, {args.subs} SSE subscribers, {args.match:.0%} match, "
          f"{len(events[0])} B events; T7 target >= 100k events/s per worker):")
    print(f"  {statistics.median(r[0] for r in rs) / 1e3:.1f}k events/s  "
          f"{statistics.median(r[1] for r in rs) / 1e3:.1f}k events/CPU-s  "
          f"{statistics.median(r[2] for r in rs) / 1e6:.2f}M deliveries/s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
