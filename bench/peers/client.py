"""The peer benchmark's load client: one scenario against one server, a JSON line of results.

    python bench/peers/client.py --target rig --port 4000 --pub-port 4000 --server-pid PID --scenario fanout_sse

Subscribers are raw asyncio protocols (handshakes written by hand; nothing is parsed on the hot
path): every connection counts the marker ``~PB~`` in what it reads with ``bytes.count`` (C),
carrying the last bytes of a read over to the next so a marker split by a read is still counted.
That works for SSE, WebSocket frames, chunked encoding and any envelope around the payload.
Latency: ``--probes`` connections (every connection in ``addressed``) also read the publish time
``"t":<ns>`` of each event they see (CLOCK_MONOTONIC; publisher and subscribers are this one
process) and record receive time minus publish time. The probes are the first connections made,
or with ``--probe-spread`` every (n / probes)-th one: a server that writes its subscribers in
connection order serves the first ones first, so the first connections measure the head of its
write order, the spread ones all of it.

Phases of a fan-out run: connect (``--inflight`` handshakes at a time) -> barrier (warm-up events
until every connection has seen one, so a subscription the server registers late loses nothing)
-> publish ``--k`` events over one keep-alive connection, one request in flight, at ``--rate`` or
as fast as the server answers -> wait until every open connection has all of them (stall 5 s,
limit ``--max-s``). Server CPU is utime + stime of the server's process tree between the first
measured publish and the last delivery; RSS is VmRSS summed over the tree.

Every loop is bounded in time; everything connects to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import random
import re
import resource
import statistics
import sys
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from servers import cpu_s, rss_kib, tree  # noqa: E402

MARK = b"~PB~"
WARM = b"~WU~"
T_RE = re.compile(rb'"t":\s*(\d+)\s*[,}]')
now_ns = time.perf_counter_ns
HOST = "127.0.0.1"


def payload(n: int, size: int, mark: bytes = MARK, user: str = "", t: int | None = None) -> bytes:
    """~size bytes of JSON: {"name":..., "t":<ns>, "n":n, "pad":"<mark>[<user>~]xxx"}."""
    name = b'"name":"%s",' % user.encode() if user else b""
    head = b'{%s"t":%d,"n":%d,"pad":"' % (name, now_ns() if t is None else t, n)
    tag = mark + (user.encode() + b"~" if user else b"")
    return head + tag + b"x" * max(0, size - len(head) - len(tag) - 2) + b'"}'


# -- how each server subscribes and publishes ----------------------------------------------------

def _get(path: str, port: int, ws: bool) -> bytes:
    if ws:
        key = base64.b64encode(os.urandom(16)).decode()
        return (f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode()
    return f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nAccept: text/event-stream\r\n\r\n".encode()


def _post(path: str, port: int, ctype: str, body: bytes) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


class Target:
    def __init__(self, name: str, port: int, pub_port: int):
        self.name, self.port, self.pub_port = name, port, pub_port

    def subscribe(self, ws: bool, user: str = "") -> bytes:
        if self.name == "rig":
            sub = {"eventType": "bench.addressed", "oneOf": [{"name": user}]} if user else {"eventType": "bench"}
            q = urllib.parse.quote(json.dumps([sub], separators=(",", ":")))
            return _get(f"/_rig/v1/connection/{'ws' if ws else 'sse'}?subscriptions={q}", self.port, ws)
        channel = user or "bench"
        if self.name == "nchan":
            return _get(f"/sub/{channel}", self.port, ws)
        return _get(f"/{'ws' if ws else 'sse'}/{channel}", self.port, ws)  # pushpin, via the GRIP origin

    def publish(self, body: bytes, n: int, user: str = "") -> bytes:
        if self.name == "rig":
            ev = b'{"specversion":"1.0","type":"%s","source":"peerbench","id":"%d","data":%s}' % (
                b"bench.addressed" if user else b"bench", n, body)
            return _post("/_rig/v1/events", self.pub_port, "application/cloudevents+json", ev)
        if self.name == "nchan":
            return _post(f"/pub/{user or 'bench'}", self.pub_port, "application/json", body)
        text = body.decode()
        item = {"channel": user or "bench", "formats": {"http-stream": {"content": f"event: bench\ndata: {text}\n\n"},
                                                         "ws-message": {"content": text}}}
        return _post("/publish/", self.pub_port, "application/json", json.dumps({"items": [item]}).encode())


# -- subscribers -----------------------------------------------------------------------------------

class Run:
    def __init__(self) -> None:
        self.subs: list[Sub] = []
        self.last_rx = 0
        self.latencies: list[float] = []
        self.changed = asyncio.Event()


class Sub(asyncio.Protocol):
    def __init__(self, run: Run, request: bytes, latency: bool, own: bytes = b""):
        self.run, self.request, self.latency, self.own = run, request, latency, own
        self.established = asyncio.get_running_loop().create_future()
        self.head = b""
        self.open = False
        self.count = self.own_count = 0
        self.warm = False
        self.tail = self.own_tail = self.lbuf = b""

    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        if not self.open:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            status = self.head[9:12]
            data, self.head = self.head[end + 4:], b""
            if status not in (b"200", b"101"):
                self.transport.close()
                if not self.established.done():
                    self.established.set_exception(RuntimeError(f"status {status.decode()}"))
                return
            self.open = True
            self.established.set_result(None)
        chunk = self.tail + data
        n = chunk.count(MARK)
        self.tail = chunk[-3:]
        if not self.warm and WARM in chunk:
            self.warm = True
            self.run.changed.set()
        if n:
            self.count += n
            t = now_ns()
            self.run.last_rx = t
            if self.own:
                ochunk = self.own_tail + data
                self.own_count += ochunk.count(self.own)
                self.own_tail = ochunk[-(len(self.own) - 1):]
            if self.latency:
                buf = self.lbuf + data
                end = 0
                for m in T_RE.finditer(buf):
                    sent = int(m.group(1))
                    if sent:
                        self.run.latencies.append((t - sent) / 1e6)
                    end = m.end()
                self.lbuf = buf[end:][-512:]
        elif self.latency:
            self.lbuf = (self.lbuf + data)[-512:]

    def connection_lost(self, exc) -> None:
        self.open = False
        if not self.established.done():
            self.established.set_exception(RuntimeError("closed during the handshake"))


async def connect_all(run: Run, target: Target, n: int, ws: bool, inflight: int, probes: int,
                      users: bool = False, max_s: float = 120.0, spread: bool = False) -> int:
    """n subscribers, ``inflight`` handshakes at a time; returns how many failed. The first ``probes``
    of them measure latency, or (``spread``) every (n / probes)-th one."""
    loop = asyncio.get_running_loop()
    sem = asyncio.Semaphore(inflight)
    failed = 0
    step = max(1, n // probes) if spread and probes else 1

    async def one(i: int) -> None:
        nonlocal failed
        user = f"u{i}" if users else ""
        own = MARK + user.encode() + b"~" if users else b""
        probe = users or (i % step == 0 and i // step < probes)
        async with sem:
            try:
                _, sub = await loop.create_connection(
                    lambda: Sub(run, target.subscribe(ws, user), probe, own), HOST, target.port)
                run.subs.append(sub)
                await asyncio.wait_for(sub.established, 30)
            except (OSError, RuntimeError, asyncio.TimeoutError):
                failed += 1

    await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(n))), max_s)
    return failed


# -- publishing ------------------------------------------------------------------------------------

class Publisher:
    """One HTTP/1.1 connection, one request in flight; reconnects when the server closes."""

    def __init__(self, port: int):
        self.port = port
        self.reader = self.writer = None
        self.connects = 0

    async def send(self, request: bytes) -> int:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(HOST, self.port)
            self.connects += 1
        self.writer.write(request)
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), 30)
        status = int(head[9:12])
        lower = head.lower()
        m = re.search(rb"content-length:\s*(\d+)", lower)
        if m:
            await self.reader.readexactly(int(m.group(1)))
        elif b"transfer-encoding: chunked" in lower:
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                await self.reader.readexactly(size + 2)
                if size == 0:
                    break
        if b"connection: close" in lower or not m and b"chunked" not in lower:
            self.writer.close()
            self.writer = None
        if status >= 300:
            raise RuntimeError(f"publish answered {status}")
        return status

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def barrier(run: Run, target: Target, pub: Publisher, size: int, users: bool, max_s: float = 60.0) -> float:
    """Warm-up events until every open connection has seen one; returns the seconds it took."""
    t0 = time.monotonic()
    n = 0
    while time.monotonic() - t0 < max_s:
        cold = [i for i, s in enumerate(run.subs) if s.open and not s.warm]
        if not cold:
            return time.monotonic() - t0
        if users:
            for i in cold:
                n += 1
                await pub.send(target.publish(payload(n, size, WARM, f"u{i}", t=0), n, f"u{i}"))
        else:
            n += 1
            await pub.send(target.publish(payload(n, size, WARM, t=0), n))
        run.changed.clear()
        try:
            await asyncio.wait_for(run.changed.wait(), 2.0 if users else 0.05)
        except asyncio.TimeoutError:
            pass
    raise RuntimeError(f"barrier: connections still without a warm-up event after {max_s:.0f}s")


async def wait_delivered(run: Run, want, stall_s: float = 5.0, max_s: float = 60.0) -> None:
    """Until want() is true, nothing arrived for stall_s, or max_s passed."""
    t0 = time.monotonic()
    last, seen = time.monotonic(), -1
    while not want() and time.monotonic() - t0 < max_s:
        got = sum(s.count for s in run.subs)
        if got != seen:
            seen, last = got, time.monotonic()
        elif time.monotonic() - last > stall_s:
            break
        await asyncio.sleep(0.01)


def pct(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def client_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


# -- scenarios -------------------------------------------------------------------------------------

async def fanout(a, target: Target, ws: bool) -> dict:
    run = Run()
    failed = await connect_all(run, target, a.n, ws, a.inflight, a.probes, spread=a.probe_spread)
    pub = Publisher(target.pub_port)
    warm_s = await barrier(run, target, pub, a.size, False)
    pids = tree(a.server_pid)
    base = sum(s.count for s in run.subs)
    cpu0, ccpu0, t0 = cpu_s(pids), client_cpu(), now_ns()
    gap = 1.0 / a.rate if a.rate else 0.0
    for i in range(a.k):
        if gap:
            await asyncio.sleep(max(0.0, t0 / 1e9 + i * gap - now_ns() / 1e9))
        await pub.send(target.publish(payload(i + 1, a.size), i + 1))
    opened = [s for s in run.subs if s.open]
    await wait_delivered(run, lambda: sum(s.count for s in run.subs) - base >= len(opened) * a.k, max_s=a.max_s)
    cpu1, ccpu1 = cpu_s(pids), client_cpu()
    delivered = sum(s.count for s in run.subs) - base
    span = max(1, run.last_rx - t0) / 1e9
    pub.close()
    return {
        "connections": a.n, "connect_failed": failed, "dropped_by_server": sum(1 for s in run.subs if not s.open),
        "events": a.k, "delivered": delivered, "expected": len(opened) * a.k, "barrier_s": round(warm_s, 2),
        "deliveries_per_s": round(delivered / span), "server_cpu_s": round(cpu1 - cpu0, 3),
        "server_cpu_us_per_delivery": round((cpu1 - cpu0) * 1e6 / max(1, delivered), 3),
        "client_util": round((ccpu1 - ccpu0) / span, 2),
        "latency_p50_ms": pct(run.latencies, 0.5), "latency_p99_ms": pct(run.latencies, 0.99),
        "latency_samples": len(run.latencies),
    }


async def idle_mem(a, target: Target, ws: bool = False) -> dict:
    pids = tree(a.server_pid)
    rss0 = rss_kib(pids)
    run = Run()
    failed = await connect_all(run, target, a.n, ws, a.inflight, 0)
    await asyncio.sleep(a.settle)
    rss1 = rss_kib(tree(a.server_pid))
    held = sum(1 for s in run.subs if s.open)
    return {"connections": held, "connect_failed": failed, "rss_before_kib": rss0, "rss_after_kib": rss1,
            "rss_kib_per_connection": round((rss1 - rss0) / max(1, held), 3)}


async def connect(a, target: Target) -> dict:
    pids = tree(a.server_pid)
    run = Run()
    cpu0, t0 = cpu_s(pids), time.monotonic()
    failed = await connect_all(run, target, a.n, False, a.inflight, 0)
    t1 = time.monotonic()
    cpu1 = cpu_s(tree(a.server_pid))
    ok = a.n - failed
    return {"connections": ok, "connect_failed": failed, "connects_per_s": round(ok / (t1 - t0)),
            "server_cpu_us_per_connection": round((cpu1 - cpu0) * 1e6 / max(1, ok), 2)}


async def addressed(a, target: Target) -> dict:
    run = Run()
    failed = await connect_all(run, target, a.n, False, a.inflight, 0, users=True)
    warm_pub = Publisher(target.pub_port)
    warm_s = await barrier(run, target, warm_pub, a.size, True)
    warm_pub.close()
    rng = random.Random(a.seed)
    draw = [rng.randrange(a.n) for _ in range(a.k)]
    expect = [0] * a.n
    for u in draw:
        expect[u] += 1
    for s in run.subs:
        s.count = s.own_count = 0
    run.latencies.clear()
    queue = list(enumerate(draw))
    queue.reverse()
    pubs = [Publisher(target.pub_port) for _ in range(a.pub_conns)]
    pids = tree(a.server_pid)
    cpu0, ccpu0, t0 = cpu_s(pids), client_cpu(), now_ns()

    async def work(p: Publisher) -> None:
        while queue:
            n, u = queue.pop()
            await p.send(target.publish(payload(n + 1, a.size, user=f"u{u}"), n + 1, f"u{u}"))

    await asyncio.gather(*(work(p) for p in pubs))
    # subs are in connect order, which is not user order: map them back by their own marker
    by_user = {int(s.own[len(MARK) + 1:-1]): s for s in run.subs}
    live = {u for u, s in by_user.items() if s.open}
    want_total = sum(expect[u] for u in live)
    await wait_delivered(run, lambda: sum(s.own_count for s in run.subs) >= want_total, max_s=a.max_s)
    cpu1, ccpu1 = cpu_s(pids), client_cpu()
    for p in pubs:
        p.close()
    delivered = sum(s.own_count for s in run.subs)
    span = max(1, run.last_rx - t0) / 1e9
    return {
        "connections": a.n, "connect_failed": failed, "events": a.k, "delivered": delivered, "expected": want_total,
        "misrouted": sum(s.count - s.own_count for s in run.subs),
        "users_short": sum(1 for u in live if by_user[u].own_count < expect[u]),
        "users_over": sum(1 for u in live if by_user[u].own_count > expect[u]),
        "barrier_s": round(warm_s, 2), "events_per_s": round(delivered / span),
        "server_cpu_us_per_event": round((cpu1 - cpu0) * 1e6 / max(1, delivered), 2),
        "client_util": round((ccpu1 - ccpu0) / span, 2), "publisher_connects": sum(p.connects for p in pubs),
        "latency_p50_ms": pct(run.latencies, 0.5), "latency_p99_ms": pct(run.latencies, 0.99),
        "latency_samples": len(run.latencies),
    }


SCENARIOS = {
    # name: (coroutine, defaults)
    "fanout_sse": (lambda a, t: fanout(a, t, False), {"n": 2000, "k": 500}),
    "fanout_ws": (lambda a, t: fanout(a, t, True), {"n": 2000, "k": 200}),
    "latency_sse": (lambda a, t: fanout(a, t, False), {"n": 2000, "k": 60, "rate": 20.0}),
    "idle_mem": (idle_mem, {"n": 10000}),
    "idle_mem_ws": (lambda a, t: idle_mem(a, t, True), {"n": 10000}),
    "connect": (connect, {"n": 5000}),
    "addressed": (addressed, {"n": 10000, "k": 20000}),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", choices=("rig", "nchan", "pushpin"), required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--pub-port", type=int, required=True)
    ap.add_argument("--server-pid", type=int, required=True)
    ap.add_argument("--scenario", choices=sorted(SCENARIOS), required=True)
    ap.add_argument("--n", type=int, help="connections (default per scenario)")
    ap.add_argument("--k", type=int, help="events (default per scenario)")
    ap.add_argument("--rate", type=float, default=None, help="events/s (default: as fast as the server answers)")
    ap.add_argument("--size", type=int, default=200, help="payload bytes")
    ap.add_argument("--probes", type=int, default=50, help="connections measuring latency (fan-outs)")
    ap.add_argument("--probe-spread", action="store_true",
                    help="fan-outs: the probes are every (n / probes)-th connection, not the first ones")
    ap.add_argument("--inflight", type=int, default=64, help="handshakes in flight")
    ap.add_argument("--pub-conns", type=int, default=16, help="publisher connections (addressed)")
    ap.add_argument("--seed", type=int, default=1, help="addressed: seed of the user draw")
    ap.add_argument("--settle", type=float, default=2.0, help="idle_mem: seconds before reading RSS")
    ap.add_argument("--max-s", type=float, default=60.0, help="longest wait for deliveries")
    a = ap.parse_args()
    fn, defaults = SCENARIOS[a.scenario]
    for key, value in defaults.items():
        if getattr(a, key, None) is None:
            setattr(a, key, value)
    a.rate = a.rate or 0.0
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if a.n + 200 > hard:
        raise SystemExit(f"--n {a.n} needs more open files than the limit ({hard})")
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    result = asyncio.run(fn(a, Target(a.target, a.port, a.pub_port)))
    result.update({"scenario": a.scenario, "target": a.target})
    print(json.dumps(result))


if __name__ == "__main__":
    main()
