"""Batched publishing: server CPU per event for batches of 1, 10 and 100 events.

Run: python bench/batch_bench.py [--events 30000] [--sizes 1,10,100] [--connections 4] [--subscribers 100]

Starts one gateway worker pinned to core 1 (the client runs on core 0), with
``--subscribers`` SSE connections subscribed to the event type (each gets
every event; their reading is part of the client), then publishes
``--events`` events per batch size over ``--connections`` keep-alive
connections, each keeping 4 requests in flight: ``content-type:
application/cloudevents+json`` for size 1, ``application/cloudevents-batch+json``
otherwise. It prints the server's CPU (utime + stime from /proc) per event
and events/s. Loopback only; everything it starts is stopped by PID. The
machine is shared: compare the sizes within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from bench.procstat import proc_cpu_s  # noqa: E402
from tests.helpers import free_port  # noqa: E402

ETYPE = "bench.batch"


def event(i: int) -> dict:
    return {"specversion": "1.0", "type": ETYPE, "source": "bench", "id": f"b{i}", "data": {"n": i, "pad": "x" * 120}}


def request(events: list[dict]) -> bytes:
    if len(events) == 1:
        body, ctype = json.dumps(events[0]).encode(), b"application/cloudevents+json"
    else:
        body, ctype = json.dumps(events).encode(), b"application/cloudevents-batch+json"
    return b"POST /_rig/v1/events HTTP/1.1\r\nHost: b\r\ncontent-type: %s\r\ncontent-length: %d\r\n\r\n%s" % (
        ctype, len(body), body)


async def publisher(port: int, reqs: list[bytes], window: int = 4) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    inflight = 0
    i = 0
    while i < len(reqs) or inflight:
        while i < len(reqs) and inflight < window:
            writer.write(reqs[i])
            i += 1
            inflight += 1
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
        assert head.startswith(b"HTTP/1.1 202"), head[:80]
        n = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
        await asyncio.wait_for(reader.readexactly(n), 30)
        inflight -= 1
    writer.close()


async def subscriber(port: int, ready: asyncio.Event, counts: list, idx: int) -> None:
    subs = json.dumps([{"eventType": ETYPE}])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /_rig/v1/connection/sse?subscriptions=%s HTTP/1.1\r\nHost: b\r\n\r\n"
                 % urllib.request.quote(subs).encode())
    await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
    ready.set()
    while True:
        data = await reader.read(1 << 16)
        if not data:
            return
        counts[idx] += data.count(b"\nid: ")


async def measure(port: int, pid: int, size: int, total: int, conns: int, nsubs: int) -> tuple[float, float, int]:
    counts = [0] * nsubs
    readies = [asyncio.Event() for _ in range(nsubs)]
    subs = [asyncio.create_task(subscriber(port, readies[i], counts, i)) for i in range(nsubs)]
    for r in readies:
        await asyncio.wait_for(r.wait(), 30)
    evs = [event(i) for i in range(total)]
    batches = [request(evs[i:i + size]) for i in range(0, total, size)]
    per = [batches[i::conns] for i in range(conns)]
    cpu0, t0 = proc_cpu_s(pid), time.monotonic()
    await asyncio.gather(*(publisher(port, p) for p in per))
    deadline = time.monotonic() + 60
    while nsubs and min(counts) < total and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    cpu, wall = proc_cpu_s(pid) - cpu0, time.monotonic() - t0
    for s in subs:
        s.cancel()
    return cpu / total * 1e6, total / wall, min(counts) if nsubs else 0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=30000)
    ap.add_argument("--sizes", default="1,10,100")
    ap.add_argument("--connections", type=int, default=4)
    ap.add_argument("--subscribers", type=int, default=100)
    a = ap.parse_args()
    port, api = free_port(), free_port()
    env = dict(os.environ, RIGFAST_WORKERS="1", INBOUND_PORT=str(port), API_HTTP_PORT=str(api), LOG_LEVEL="warning",
               RIGFAST_HOST="127.0.0.1", RIGFAST_API_HOST="127.0.0.1", MAX_CONNECTIONS_PER_MINUTE="10000000",
               RIGFAST_HISTORY_SIZE="1000")
    proc = subprocess.Popen(["taskset", "-c", "1", sys.executable, "-m", "rigfast"], cwd=REPO, env=env)
    try:
        os.sched_setaffinity(0, {0})
        deadline = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{api}/health", timeout=1).read()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        print(f"{a.events} events per size, {a.connections} publisher connections, {a.subscribers} SSE subscribers")
        print(f"{'batch size':>10} {'server CPU us/event':>20} {'events/s':>10} {'delivered (min)':>16}")
        for size in (int(x) for x in a.sizes.split(",")):
            us, rate, got = asyncio.run(measure(port, proc.pid, size, a.events, a.connections, a.subscribers))
            print(f"{size:>10} {us:>20.2f} {rate:>10,.0f} {got:>16,}")
    finally:
        proc.terminate()
        proc.wait(10)


if __name__ == "__main__":
    main()
