"""Idle SSE connections held by one node (docs/targets.md T8), and deliveries/s of HTTP-submitted events.

Usage::

  .venv/bin/python -m bench.idle_bench idle --workers 16 --conns 250000 --clients 14
  .venv/bin/python -m bench.idle_bench rate --workers 1 --conns 4000 --clients 2 --events 300

``idle``: starts a node (``--kafka``: with a Tansu broker and a source topic,
so the node's event reader runs), opens ``--conns`` SSE connections from
``--clients`` processes, each on its own loopback source address
(127.0.0.2, .3, ...: one ephemeral port range per address) and under 19,000
descriptors, waits until every one has read its ``rig.subscriptions_set``,
and reports how memory splits: RSS and PSS of every process of the node
(supervisor, reader, each worker) idle and loaded, the load clients' RSS, and
the kernel's part (``Slab`` of /proc/meminfo, the TCP line of
/proc/net/sockstat and the biggest slab caches, before and after; both ends
of each loopback connection are on this machine, so the kernel figure counts
two sockets per connection). ``--subscription``: ``type`` (every connection
subscribes to one event type) or ``user`` (connection k to ``user.msg``
events of user ``uk``: one distinct subscription per connection, in the
worker's index and in the reader's). Also reported: the node's CPU per
connect (all its processes, during the connect phase), the connect attempts retried by reason, the
kernel's TCP counters that moved (listen overflows, memory pressure, aborts;
the sysctls that bound the run are printed, none is changed), then the
connections are held ``--hold-seconds`` (node and client CPU measured
meanwhile, heartbeats every ``--heartbeat`` s) and the run says HELD only if
every connection is still open and has read a heartbeat in that time, else
why connections were lost (counted by reason in each client).

``rate``: every connection subscribed to one type, ``--events`` events posted
over HTTP, deliveries per second until every client has read every event.

Every phase is bounded in time (``PHASE_TIMEOUT_S``); processes are stopped by PID.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections import Counter

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import httpx  # noqa: E402
import orjson  # noqa: E402

from bench.node import Node  # noqa: E402
from bench.procstat import cpu_of, meminfo_kb, memory_kb, slabinfo_kb, sockstat, sysctl, tcp_counters  # noqa: E402
from bench.sse_clients import (MAX_FDS_PER_CLIENT, USER_EXTRACTORS, SseConn, ask_all, close_all,  # noqa: E402
                               connect_all, reset_beats, sse_request, start_clients, stop_clients, tally,
                               user_subscription)
from rigfast.kafka.tansu import TansuBroker  # noqa: E402

PHASE_TIMEOUT_S = 600.0
CONNECT_TIMEOUT_S = 300.0  # the connect phase, whatever the count (the whole run must stay under ~10 min)
ETYPE = "bench"
TOPIC = "bench-idle"


class _Count(SseConn):
    """Counts ``event: bench`` markers after the greeting (a marker split across two reads is made up for by a tail)."""

    MARK = f"event: {ETYPE}\n".encode()

    def __init__(self, counter: list[int]):
        super().__init__()
        self.counter = counter
        self.tail = b""

    def on_data(self, data: bytes) -> None:
        buf = self.tail + data if self.tail else data
        self.counter[0] += buf.count(self.MARK)
        self.tail = buf[-(len(self.MARK) - 1):]


async def _client(port: int, src: str, first: int, n: int, subscription: str, conn) -> None:
    loop = asyncio.get_running_loop()
    counter = [0]
    if subscription == "user":
        reqs = [sse_request(user_subscription(k)) for k in range(first, first + n)]
    else:
        reqs = [sse_request([{"eventType": ETYPE}])] * n
    retries: Counter = Counter()
    conns = await connect_all(port, src, reqs, lambda: _Count(counter), timeout_s=CONNECT_TIMEOUT_S, retries=retries)
    del reqs
    conn.send(("ready", (dict(Counter(c.worker for c in conns)), dict(retries))))
    while True:
        cmd = await loop.run_in_executor(None, conn.recv)
        if cmd == "count":
            conn.send(counter[0])
        elif cmd == "reset":
            reset_beats(conns)
            conn.send(None)
        elif cmd == "tally":
            conn.send(tally(conns))
        else:
            break
    close_all(conns)


def client_main(port: int, src: str, first: int, n: int, subscription: str, conn) -> None:
    import uvloop

    try:
        uvloop.run(_client(port, src, first, n, subscription, conn))
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which stops the run
        conn.send(("error", f"client {src}: {exc!r}"))


def node_memory(node: Node) -> dict[str, dict[str, int]]:
    """RSS/PSS (kB) per process of the node, keyed by role."""
    return {role: memory_kb(pid) for pid, role in node.roles().items()}


def kernel_figures() -> dict[str, int]:
    m, s = meminfo_kb(), sockstat()
    return {"Slab": m["Slab"], "SUnreclaim": m["SUnreclaim"], "MemAvailable": m["MemAvailable"],
            "tcp_inuse": s.get("inuse", 0), "tcp_mem_kb": s.get("mem", 0) * 4}


def _order(role: str) -> tuple:
    return (0, 0) if role == "supervisor" else (1, 0) if role == "reader" else (2, int(role[1:]) if role[1:].isdigit() else 0)


def report_memory(idle: dict, loaded: dict, by_worker: dict[int, int]) -> None:
    conns = sum(by_worker.values())
    print("node memory, idle -> with the connections (MiB):")
    tot = {"rss": [0, 0], "pss": [0, 0]}
    for role in sorted(loaded, key=_order):
        a, b = idle.get(role, {"rss": 0, "pss": 0}), loaded[role]
        for k in tot:
            tot[k][0] += a[k]
            tot[k][1] += b[k]
        held = by_worker.get(int(role[1:]), 0) if role[1:].isdigit() else conns
        print(f"  {role:<10} RSS {a['rss'] / 1024:7.1f} -> {b['rss'] / 1024:7.1f}   PSS {a['pss'] / 1024:7.1f} -> "
              f"{b['pss'] / 1024:7.1f}   (+{(b['pss'] - a['pss']) * 1024 / max(held, 1):,.0f} B PSS per connection "
              f"{'it holds' if role[1:].isdigit() else 'of the node'})")
    print(f"  node total RSS {tot['rss'][0] / 1024:.0f} -> {tot['rss'][1] / 1024:.0f} MiB, PSS {tot['pss'][0] / 1024:.0f} -> "
          f"{tot['pss'][1] / 1024:.0f} MiB: {(tot['pss'][1] - tot['pss'][0]) * 1024 / conns:,.0f} bytes (PSS) per connection")


def report_kernel(before: dict, after: dict, slabs0: dict, slabs1: dict, conns: int) -> None:
    d = {k: after[k] - before[k] for k in before}
    print(f"kernel (both ends of every connection; other users of the machine included): Slab +{d['Slab'] / 1024:.0f} MiB "
          f"(unreclaimable +{d['SUnreclaim'] / 1024:.0f} MiB), TCP sockets in use +{d['tcp_inuse']:,}, "
          f"TCP buffer memory (sockstat mem) +{d['tcp_mem_kb'] / 1024:.1f} MiB; MemAvailable -{-d['MemAvailable'] / 1024:.0f} MiB")
    print(f"  per connection: slab {d['Slab'] * 1024 / conns:,.0f} B, TCP buffers {d['tcp_mem_kb'] * 1024 / conns:,.0f} B "
          f"(two sockets each: about half of it is the node's side)")
    if slabs1:
        top = sorted(((slabs1.get(k, 0) - slabs0.get(k, 0), k) for k in slabs1), reverse=True)[:8]
        print("  biggest slab caches grown: " + ", ".join(f"{k} +{v / 1024:.0f} MiB ({v * 1024 / conns:,.0f} B/conn)"
                                                          for v, k in top if v > 0))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=("idle", "rate"))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--conns", type=int, default=10000)
    ap.add_argument("--clients", type=int, default=2)
    ap.add_argument("--events", type=int, default=300)
    ap.add_argument("--subscription", choices=("type", "user"), default="type")
    ap.add_argument("--hold-seconds", type=float, default=35.0,
                    help="connections held this long once connected (node CPU measured meanwhile); at the end each must "
                         "be open and have read a heartbeat")
    ap.add_argument("--heartbeat", type=float, default=15.0, help="RIGFAST_HEARTBEAT_INTERVAL_S of the node")
    ap.add_argument("--kafka", action="store_true", help="a Tansu broker and a source topic: the node's reader runs")
    a = ap.parse_args()
    per = -(-a.conns // a.clients)
    if per > MAX_FDS_PER_CLIENT:
        raise SystemExit(f"{per} connections per client: use more --clients (each must stay under {MAX_FDS_PER_CLIENT})")
    with open("/proc/sys/net/ipv4/ip_local_port_range") as fh:
        lo, hi = (int(x) for x in fh.read().split())
    if per > hi - lo:
        raise SystemExit(f"{per} connections per source address, {hi - lo + 1} ephemeral ports: use more --clients")
    broker = TansuBroker().start() if a.kafka else None
    try:
        if a.mode == "idle" and a.hold_seconds <= a.heartbeat:
            raise SystemExit("--hold-seconds must be longer than --heartbeat (each connection must read one)")
        env = {"EXTRACTORS": orjson.dumps(USER_EXTRACTORS).decode(), "RIGFAST_HEARTBEAT_INTERVAL_S": str(a.heartbeat)}
        if broker is not None:
            broker.create_topics([TOPIC], partitions=2)
            env.update(KAFKA_BROKERS=broker.bootstrap, KAFKA_SOURCE_TOPICS=TOPIC)
        k0, s0 = kernel_figures(), slabinfo_kb()
        with Node(a.workers, env, node_id="bench") as node:
            run(a, node, per, k0, s0)
    finally:
        if broker is not None:
            broker.stop()


SYSCTLS = ("net.ipv4.ip_local_port_range", "net.core.somaxconn", "net.ipv4.tcp_max_syn_backlog", "net.ipv4.tcp_mem",
           "net.ipv4.tcp_rmem", "net.ipv4.tcp_wmem", "fs.file-max", "fs.nr_open", "net.netfilter.nf_conntrack_max",
           "net.netfilter.nf_conntrack_count")
# kernel counters that say a connection was refused, dropped or aborted (printed when they moved during the run)
WATCH = ("TcpAttemptFails", "TcpEstabResets", "TcpExtListenOverflows", "TcpExtListenDrops", "TcpExtTCPMemoryPressures",
         "TcpExtTCPAbortOnMemory", "TcpExtTCPAbortOnTimeout", "TcpExtTCPAbortOnData", "TcpExtTCPAbortOnClose",
         "TcpExtTCPReqQFullDrop", "TcpExtTCPReqQFullDoCookies", "TcpExtSyncookiesSent", "TcpExtTCPBacklogDrop",
         "TcpExtPruneCalled", "TcpExtTCPRcvQDrop", "TcpExtTCPTimeouts", "TcpExtTCPSynRetrans")


def report_counters(before: dict, after: dict, what: str) -> None:
    moved = {k: after[k] - before[k] for k in WATCH if k in after and after[k] != before.get(k, 0)}
    print(f"kernel TCP counters {what}: " + (", ".join(f"{k} +{v:,}" for k, v in moved.items()) or "none moved")
          + f" (watched: {len(WATCH)})", flush=True)


def run(a, node: Node, per: int, k0: dict, s0: dict) -> None:
    print("sysctls (unchanged by this benchmark): " + ", ".join(f"{n}={sysctl(n)}" for n in SYSCTLS), flush=True)
    time.sleep(1.0)  # let the workers finish starting up (imports, first allocations) before the idle figure
    idle = node_memory(node)
    roles = node.roles()
    pids = list(roles)
    c0, t0 = sum(cpu_of(pids).values()), time.monotonic()
    time.sleep(3.0)
    cpu0_by = cpu_of(pids)
    cpu0 = sum(cpu0_by.values())
    base_rate = (cpu0 - c0) / (time.monotonic() - t0)  # the node's own timers, no connection
    n0 = tcp_counters()
    t0 = time.monotonic()
    clients = start_clients(client_main, [(node.port, f"127.0.0.{i + 2}", i * per, min(per, a.conns - i * per),
                                           a.subscription) for i in range(a.clients)])
    try:
        by_worker: Counter = Counter()
        retries: Counter = Counter()
        deadline = t0 + CONNECT_TIMEOUT_S + 30
        for p, c in clients:
            if not c.poll(max(deadline - time.monotonic(), 0.1)):
                report_counters(n0, tcp_counters(), "when the connect phase timed out")
                raise SystemExit(f"clients did not connect in time; node log: {node.problems()[-5:]}")
            what, body = c.recv()
            if what == "error":
                report_counters(n0, tcp_counters(), "when a client gave up")
                raise SystemExit(f"{body}; node log: {node.problems()[-5:]}")
            by_worker.update(body[0])
            retries.update(body[1])
        t_conn = time.monotonic() - t0
        cpu1_by = cpu_of(pids)
        connect_cpu = sum(cpu1_by.values()) - cpu0
        by_kind: dict[str, float] = {}
        for p in pids:
            k = "workers" if roles[p].startswith("w") else roles[p]
            by_kind[k] = by_kind.get(k, 0.0) + cpu1_by.get(p, 0) - cpu0_by.get(p, 0)
        total = sum(by_worker.values())
        print(f"workers={a.workers} connections={total:,} ({a.subscription} subscriptions"
              f"{', reader on' if a.kafka else ''}) per worker={dict(sorted(by_worker.items()))} "
              f"connect phase {t_conn:.1f}s ({total / t_conn:,.0f}/s), node CPU {connect_cpu * 1e6 / total:.0f} us per connect ("
              + ", ".join(f"{k} {v * 1e6 / total:.1f}" for k, v in sorted(by_kind.items())) + "); "
              f"load average {os.getloadavg()[0]:.1f}", flush=True)
        print(f"connect attempts retried: {sum(retries.values()):,}" + (f" {dict(retries)}" if retries else ""))
        report_counters(n0, tcp_counters(), "during the connect phase")
        if a.mode == "idle":
            time.sleep(2.0)  # interest changes reach the reader, allocator settles
            loaded, k1, s1 = node_memory(node), kernel_figures(), slabinfo_kb()
            client_mem = [memory_kb(p.pid) for p, _ in clients]
            report_memory(idle, loaded, by_worker)
            print(f"load clients: RSS {sum(m['rss'] for m in client_mem) / 1024:.0f} MiB, PSS "
                  f"{sum(m['pss'] for m in client_mem) / 1024:.0f} MiB in {a.clients} processes")
            report_kernel(k0, k1, s0, s1, total)
            hold(a, node, clients, pids, base_rate, total, n0)
        else:
            rate(a, node, clients, total)
    finally:
        stop_clients(clients)


def hold(a, node: Node, clients: list, pids: list[int], base_rate: float, total: int, n0: dict) -> None:
    """Keep the connections open ``--hold-seconds``; at the end every one must be open and have read heartbeats."""
    cpids = [p.pid for p, _ in clients]
    ask_all(clients, "reset")
    c0, cc0, t1 = sum(cpu_of(pids).values()), sum(cpu_of(cpids).values()), time.monotonic()
    time.sleep(a.hold_seconds)
    used, cused, dt = sum(cpu_of(pids).values()) - c0, sum(cpu_of(cpids).values()) - cc0, time.monotonic() - t1
    print(f"node CPU while idle for {dt:.0f}s: {used / dt * 100:.1f}% of a core ({base_rate * 100:.1f}% with no "
          f"connection): {(used / dt - base_rate) / total * 1e6:.2f} us per connection per second "
          f"(heartbeats every RIGFAST_HEARTBEAT_INTERVAL_S={a.heartbeat:g}s: "
          f"{(used - base_rate * dt) / max(total * dt / a.heartbeat, 1) * 1e6:.1f} us per heartbeat); "
          f"load clients {cused / dt * 100:.1f}% of a core", flush=True)
    t = ask_all(clients, "tally")
    alive = sum(x["open"] for x in t)
    lost: Counter = Counter()
    for x in t:
        lost.update(x["lost"])
    least = min(x["min_beats"] for x in t)
    silent = sum(x["no_beat"] for x in t)
    ok = alive == total and silent == 0
    print(f"{'HELD' if ok else 'NOT HELD'}: {alive:,} of {total:,} connections open after {dt:.0f}s, "
          f"{silent:,} of them read no heartbeat in that time, the fewest heartbeats read by one: {least}, the most: "
          f"{max(x['max_beats'] for x in t)}; lost: {dict(lost) or 'none'}", flush=True)
    report_counters(n0, tcp_counters(), "over the whole run")
    h = node.health()
    print(f"the reader as worker {h['worker']} sees it: {(h.get('cluster') or {}).get('reader')}")
    problems = node.problems()
    if problems:
        print(f"node log: {len(problems)} error lines, the last: {problems[-3:]}")


def rate(a, node: Node, clients: list, total: int) -> None:
    body = orjson.dumps({"specversion": "1.0", "type": ETYPE, "source": "bench", "id": "x", "data": {"n": 1}}).decode()
    want = a.events * total
    t1 = time.monotonic()
    with httpx.Client(base_url=f"http://127.0.0.1:{node.port}", timeout=10) as c:
        for i in range(a.events):
            c.post("/_rig/v1/events", content=body.replace('"x"', f'"e{i}"'),
                   headers={"content-type": "application/cloudevents+json"})
    deadline = time.monotonic() + PHASE_TIMEOUT_S
    got = 0
    while got < want and time.monotonic() < deadline:
        got = sum(ask_all(clients, "count"))
        time.sleep(0.01)
    dt = time.monotonic() - t1
    print(f"{a.events} events x {total} connections: {got:,} of {want:,} deliveries in {dt:.2f}s: {got / dt:,.0f} deliveries/s")


if __name__ == "__main__":
    main()
