"""Benchmark: idle SSE connections held by one node, and deliveries/s with 1 vs 2 workers.

Not collected by pytest (no test_ prefix). Usage:

  python -m tests.cluster.bench_idle idle --workers 6 --conns 100000 --clients 6
  python -m tests.cluster.bench_idle rate --workers 1 --conns 2000 --events 200

``idle``: starts a node, opens ``--conns`` SSE connections from ``--clients``
processes (each under 19,000 descriptors, each on its own 127.0.0.x source
address so the ephemeral ports suffice), waits until every one has read its
``rig.subscriptions_set``, then reports the node's RSS (supervisor + workers)
per connection. ``rate``: ``--conns`` SSE connections all subscribed to one
type; ``--events`` events are posted; reports deliveries per second, the
clock stopping when every client has read every event. Every phase is bounded
in time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import signal
import socket
import subprocess
import sys
import time
from urllib.parse import quote

PHASE_TIMEOUT_S = 300.0


def rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            return [int(x) for x in fh.read().split()]
    except OSError:
        return []


async def _client(port: int, n: int, src: str, etype: str, want_events: int, ready, go, done) -> None:
    import uvloop  # noqa: F401

    path = "/_rig/v1/connection/sse?subscriptions=" + quote(json.dumps([{"eventType": etype}]))
    req = f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode()
    conns = []
    sem = asyncio.Semaphore(200)

    async def one():
        async with sem:
            for _ in range(20):
                try:
                    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                    s.setsockopt(socket.SOL_IP, 24, 1)  # IP_BIND_ADDRESS_NO_PORT
                    s.bind((src, 0))
                    s.setblocking(False)
                    await asyncio.get_running_loop().sock_connect(s, ("127.0.0.1", port))
                    r, w = await asyncio.open_connection(sock=s)
                    break
                except OSError:
                    s.close()
                    await asyncio.sleep(0.05)
            else:
                raise RuntimeError("cannot connect")
            w.write(req)
            buf = b""
            while b"rig.subscriptions_set" not in buf:
                chunk = await asyncio.wait_for(r.read(65536), 60)
                if not chunk:
                    raise RuntimeError("closed during handshake")
                buf += chunk
            conns.append((r, w))

    await asyncio.wait_for(asyncio.gather(*(one() for _ in range(n))), PHASE_TIMEOUT_S)
    ready.release()
    if want_events:
        async def drain(r):
            got = 0
            while got < want_events:
                chunk = await r.read(1 << 16)
                if not chunk:
                    return
                got += chunk.count(b"event: " + etype.encode())
        await asyncio.get_running_loop().run_in_executor(None, go.wait)
        await asyncio.wait_for(asyncio.gather(*(drain(r) for r, _ in conns)), PHASE_TIMEOUT_S)
        done.release()
    await asyncio.get_running_loop().run_in_executor(None, go.wait)
    await asyncio.get_running_loop().run_in_executor(None, done.acquire)  # hold until told to quit (see main)


def client_main(port, n, src, etype, want_events, ready, go, done):
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    import uvloop

    try:
        uvloop.run(_client(port, n, src, etype, want_events, ready, go, done))
    except Exception as exc:  # noqa: BLE001
        print(f"client {src}: {exc!r}", file=sys.stderr)
        ready.release()


def start_node(workers: int, port: int, api: int) -> subprocess.Popen:
    env = dict(os.environ, INBOUND_PORT=str(port), API_HTTP_PORT=str(api), RIGFAST_HOST="127.0.0.1",
               RIGFAST_API_HOST="127.0.0.1", RIGFAST_WORKERS=str(workers), MAX_CONNECTIONS_PER_MINUTE="0",
               RIGFAST_NODE_ID="bench", LOG_LEVEL="warning", RIGFAST_HEARTBEAT_INTERVAL_S="60")
    p = subprocess.Popen([sys.executable, "-m", "rigfast"], env=env, stdin=subprocess.DEVNULL)
    import httpx

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            seen = {httpx.get(f"http://127.0.0.1:{api}/health?detailed", timeout=2).json()["worker"] for _ in range(6 * workers)}
            if len(seen) == workers:
                return p
        except Exception:  # noqa: BLE001
            pass
        time.sleep(0.2)
    p.kill()
    raise SystemExit("node did not start")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=("idle", "rate"))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--conns", type=int, default=10000)
    ap.add_argument("--clients", type=int, default=2)
    ap.add_argument("--events", type=int, default=0)
    ap.add_argument("--port", type=int, default=24000)
    a = ap.parse_args()
    per = -(-a.conns // a.clients)
    assert per < 19000 - 100, "each client process must stay under 19,000 descriptors"
    node = start_node(a.workers, a.port, a.port + 10)
    base_rss = rss_kb(node.pid) + sum(rss_kb(c) for c in children(node.pid))
    ctx = mp.get_context("fork")
    ready, go, done = ctx.Semaphore(0), ctx.Event(), ctx.Semaphore(0)
    etype = "bench"
    want = a.events if a.mode == "rate" else 0
    procs = [ctx.Process(target=client_main, args=(a.port, per, f"127.0.0.{i + 2}", etype, want, ready, go, done))
             for i in range(a.clients)]
    t0 = time.monotonic()
    try:
        for p in procs:
            p.start()
        for _ in procs:
            if not ready.acquire(timeout=PHASE_TIMEOUT_S):
                raise SystemExit("clients did not connect in time")
        t_conn = time.monotonic() - t0
        import httpx

        counts = {}
        for _ in range(10 * a.workers):
            h = httpx.get(f"http://127.0.0.1:{a.port + 10}/health?detailed", timeout=10).json()
            counts[h["worker"]] = h["connections"]["sse"]
        total = sum(counts.values())
        rss = rss_kb(node.pid) + sum(rss_kb(c) for c in children(node.pid))
        print(f"workers={a.workers} connections={total} per worker={counts} connect time={t_conn:.1f}s")
        print(f"node RSS {rss / 1024:.0f} MiB (idle node {base_rss / 1024:.0f} MiB): "
              f"{(rss - base_rss) * 1024 / max(total, 1):.0f} bytes per connection")
        if a.mode == "rate":
            body = json.dumps({"specversion": "1.0", "type": etype, "source": "bench", "id": "x", "data": {"n": 1}})
            t1 = time.monotonic()
            with httpx.Client(base_url=f"http://127.0.0.1:{a.port}", timeout=10) as c:
                for i in range(a.events):
                    c.post("/_rig/v1/events", content=body.replace('"x"', f'"e{i}"'),
                           headers={"content-type": "application/cloudevents+json"})
            go.set()
            for _ in procs:
                if not done.acquire(timeout=PHASE_TIMEOUT_S):
                    raise SystemExit("events not delivered in time")
            dt = time.monotonic() - t1
            print(f"{a.events} events x {total} connections = {a.events * total} deliveries in {dt:.2f}s: "
                  f"{a.events * total / dt:,.0f} deliveries/s")
    finally:
        go.set()
        for _ in procs:
            done.release()
        for p in procs:
            p.join(10)
            if p.is_alive():
                p.kill()
        node.send_signal(signal.SIGTERM)
        node.wait(30)


if __name__ == "__main__":
    main()
