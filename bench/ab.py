"""A/B of two git revisions of this repository: the same workload against both, in one run.

    python bench/ab.py count [--old 272b250] [--new main] [--n 200] [--units connect,submit,addressed,fanout]
    python bench/ab.py peer  [--old 272b250] [--new main] [--scenarios connect,addressed,fanout_sse,latency_sse]
                             [--reps 1] [--servers ...] [-- extra load-client flags]
    python bench/ab.py micro [--old 272b250] [--new main]

Each revision runs from its own tree (bench/revtree.py: ``git worktree add --detach`` under
``$RIGFAST_AB_DIR``, extensions built in place with this Python; ``rigfast.__file__`` and every
loaded rigfast module checked to be the tree's), with this checkout's venv, so only the code differs.

``count``: the gateway (one worker, ``python -m rigfast`` from the tree) runs under
``valgrind --tool=callgrind`` (instructions executed: deterministic, whatever else the machine
does) while this script, outside valgrind, drives one unit of work over real loopback sockets, one
request at a time, each waited for (so every revision gets the same reads and writes, not whatever
batching its speed allows):

- ``connect``: SSE connects (subscription ``[{"eventType":"bench"}]``), each read up to its greeting,
  all held until the end, then closed;
- ``submit``: ``POST /_rig/v1/events`` (structured CloudEvent, ~200 B of data) that nobody subscribed to,
  over one keep-alive connection, each waited for its 202;
- ``addressed``: the same with type ``bench.addressed`` to user ``u<i % users>`` of ``--users``
  connected SSE users (one ``oneOf`` name each, the peer benchmark's extractor), each waited for its 202
  and its delivery;
- ``fanout``: events of type ``bench`` to ``--subscribers`` SSE subscribers, each waited for until all have it.

Every unit is run twice, with n and 2n units of work, each in a fresh server, and the figure is
(instructions(2n) - instructions(n)) / n: start-up, the fixed set-up (the subscribers of ``addressed``
and ``fanout``) and shut-down cancel out. PYTHONHASHSEED=0 and heartbeats of an hour keep the
runs repeatable. The callgrind files stay in ``--out`` for ``callgrind_annotate``.

``peer``: bench/peers/run.py with servers ``rig@<old>`` and ``rig@<new>`` (each from its tree) and
nchan, interleaved per repetition (bench/peers: each server fresh per run, pinned to core 1, the load
client on core 0); installs nginx + nchan with apt when missing, as bench/peerbench.sh does.

``micro``: each tree's own pytest-benchmark micro benchmarks (bench/test_micro_*.py) run in that tree,
then old/new per benchmark that exists in both (median and min).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "peers"))
import revtree  # noqa: E402
from servers import free_port, wait_port  # noqa: E402

HOST = "127.0.0.1"
EXTRACTORS = '{"bench.addressed":{"name":{"stable_field_index":1,"event":{"json_pointer":"/data/name"}}}}'
MARK = b"~AB~"
GREETING = b"connection_token"  # in the greeting event of an SSE connect
UNITS = ("connect", "submit", "addressed", "fanout")
TIMEOUT = 120.0  # longest wait for one answer or delivery (the server runs ~50x slower under valgrind)


def server_env(path: str, port: int, api_port: int) -> dict:
    e = revtree.env(path)
    e.update({
        "EXTRACTORS": EXTRACTORS, "RIGFAST_WORKERS": "1", "LOG_LEVEL": "warning", "RIGFAST_HOST": HOST,
        "RIGFAST_API_HOST": HOST, "INBOUND_PORT": str(port), "API_HTTP_PORT": str(api_port),
        "MAX_CONNECTIONS_PER_MINUTE": "100000000", "RIGFAST_HEARTBEAT_INTERVAL_S": "3600",
        "RIGFAST_DRAIN_S": "0", "PYTHONHASHSEED": "0",
    })
    return e


# -- the client side of one count run --------------------------------------------------------------

class Sub(asyncio.Protocol):
    """An SSE connection: counts MARK in what it reads (a marker split over two reads still counts)."""

    def __init__(self, request: bytes):
        self.request, self.buf, self.count, self.greeted = request, b"", 0, False
        self.changed = asyncio.Event()

    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        # the tails kept are shorter than their marker: a marker split over two reads counts, none twice
        self.count += (self.buf[-(len(MARK) - 1):] + data).count(MARK)
        self.greeted = self.greeted or GREETING in self.buf + data
        self.buf = (self.buf + data)[-(len(GREETING) - 1):]
        self.changed.set()

    def connection_lost(self, exc) -> None:
        self.changed.set()

    async def wait(self, cond) -> None:
        deadline = time.monotonic() + TIMEOUT
        while not cond(self):
            self.changed.clear()
            left = deadline - time.monotonic()
            if left <= 0 or self.transport.is_closing():
                raise RuntimeError("subscriber: no greeting or delivery in time (or closed)")
            try:
                await asyncio.wait_for(self.changed.wait(), left)
            except asyncio.TimeoutError:
                pass


def sse_request(port: int, user: str = "") -> bytes:
    sub = {"eventType": "bench.addressed", "oneOf": [{"name": user}]} if user else {"eventType": "bench"}
    q = urllib.parse.quote(json.dumps([sub], separators=(",", ":")))
    return (f"GET /_rig/v1/connection/sse?subscriptions={q} HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
            f"Accept: text/event-stream\r\n\r\n").encode()


def event_request(port: int, n: int, etype: str, user: str = "") -> bytes:
    name = f'"name":"{user}",' if user else ""
    data = f'{{{name}"n":{n},"pad":"{MARK.decode()}{"x" * 160}"}}'
    body = (f'{{"specversion":"1.0","type":"{etype}","source":"ab","id":"{n}","data":{data}}}').encode()
    return (f"POST /_rig/v1/events HTTP/1.1\r\nHost: {HOST}:{port}\r\nContent-Type: application/cloudevents+json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


async def subscribe(port: int, user: str = "") -> Sub:
    loop = asyncio.get_running_loop()
    _, sub = await loop.create_connection(lambda: Sub(sse_request(port, user)), HOST, port)
    await sub.wait(lambda s: s.greeted)
    return sub


class Publisher:
    """One keep-alive connection, one request in flight."""

    def __init__(self, reader, writer):
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> "Publisher":
        return cls(*await asyncio.open_connection(HOST, port))

    async def send(self, request: bytes) -> int:
        self.writer.write(request)
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), TIMEOUT)
        m = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
        if m:
            await asyncio.wait_for(self.reader.readexactly(int(m.group(1))), TIMEOUT)
        status = int(head.split(b" ", 2)[1])
        if status != 202:
            raise RuntimeError(f"submission answered {status}: {head[:200]!r}")
        return status


async def workload(unit: str, n: int, port: int, users: int, subscribers: int) -> None:
    held: list[Sub] = []
    try:
        if unit == "connect":
            for _ in range(n):
                held.append(await subscribe(port))
            return
        pub = await Publisher.open(port)
        if unit == "submit":
            for i in range(n):
                await pub.send(event_request(port, i, "bench"))
        elif unit == "addressed":
            held = [await subscribe(port, f"u{u}") for u in range(users)]
            for i in range(n):
                s = held[i % users]
                want = s.count + 1
                await pub.send(event_request(port, i, "bench.addressed", f"u{i % users}"))
                await s.wait(lambda s: s.count >= want)
            misrouted = sum(s.count for s in held) - n
            if misrouted:
                raise RuntimeError(f"addressed: {misrouted} deliveries to the wrong user")
        elif unit == "fanout":
            held = [await subscribe(port) for _ in range(subscribers)]
            for i in range(n):
                await pub.send(event_request(port, i, "bench"))
                for s in held:
                    await s.wait(lambda s: s.count >= i + 1)
        pub.writer.close()
    finally:
        for s in held:
            s.transport.close()


def stop(proc: subprocess.Popen, sig=signal.SIGINT, timeout: float = 300.0) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def callgrind_total(path: str) -> int:
    with open(path) as fh:
        for line in fh:
            if line.startswith(("summary:", "totals:")):
                return int(line.split()[1])
    raise RuntimeError(f"{path}: no summary line")


def count_run(path: str, label: str, unit: str, n: int, a) -> int:
    """Instructions the server executed for start-up + set-up + n units of work + shut-down."""
    port, api_port = free_port(), free_port()
    out = os.path.join(a.out, f"callgrind.{label}.{unit}.{n}")
    log = open(out + ".log", "wb")
    cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "--trace-children=no",
           sys.executable, "-m", "rigfast"]
    proc = subprocess.Popen(cmd, cwd=path, env=server_env(path, port, api_port), stdout=log,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_port(port, proc, 300.0)
        wait_port(api_port, proc, 300.0)
        asyncio.run(workload(unit, n, port, a.users, a.subscribers))
        # the closes of the held connections reach the server before the answer to this request
        with socket.create_connection((HOST, api_port), timeout=TIMEOUT) as s:
            s.sendall(f"GET /health HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode())
            s.settimeout(TIMEOUT)
            while s.recv(65536):
                pass
    finally:
        stop(proc)
        log.close()
    return callgrind_total(out)


def count(a) -> int:
    trees = {label: revtree.tree(rev) for label, rev in (("old", a.old), ("new", a.new))}
    os.makedirs(a.out, exist_ok=True)
    units = [u for u in a.units.split(",") if u]
    sizes = {"connect": a.n, "submit": a.n, "addressed": a.n, "fanout": a.fanout_n}
    rows, raw = [], {}
    for unit in units:
        n = sizes[unit]
        per = {}
        for label, path in trees.items():
            lo = count_run(path, label, unit, n, a)
            hi = count_run(path, label, unit, 2 * n, a)
            per[label] = (hi - lo) / n
            raw[f"{label}.{unit}"] = {"n": n, "instructions_n": lo, "instructions_2n": hi}
            print(f"[ab] {unit} {label}: {lo:,} ({n}) {hi:,} ({2 * n}) -> {per[label]:,.0f} per unit",
                  file=sys.stderr, flush=True)
        div = a.subscribers if unit == "fanout" else 1
        rows.append((unit, per["old"], per["new"], div))
    info = {label: revtree.describe(path) for label, path in trees.items()}
    lines = [f"old = {a.old} ({info['old']['commit'][:12]}), new = {a.new} ({info['new']['commit'][:12]}); "
             f"instructions per unit of work, server under callgrind, (I(2n) - I(n)) / n",
             "", "| unit | old | new | new/old |", "| --- | --- | --- | --- |"]
    label = {"connect": "SSE connect (greeting, held, closed)", "submit": "HTTP event, nobody subscribed",
             "addressed": f"addressed event, 1 of {a.users} users", "fanout": f"broadcast event to {a.subscribers}"}
    for unit, old, new, div in rows:
        lines.append(f"| {label[unit]} | {old:,.0f} | {new:,.0f} | {new / old:.3f} |")
        if div > 1:
            lines.append(f"| … per delivery | {old / div:,.0f} | {new / div:,.0f} | {new / old:.3f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    with open(os.path.join(a.out, "count.json"), "w") as fh:
        json.dump({"old": info["old"], "new": info["new"], "raw": raw}, fh, indent=1)
    with open(os.path.join(a.out, "count.md"), "w") as fh:
        fh.write(text)
    return 0


# -- peer ------------------------------------------------------------------------------------------

def ensure_nchan() -> None:
    pkgs = ["nginx", "libnginx-mod-nchan"]
    missing = [p for p in pkgs if subprocess.run(["dpkg-query", "-W", "-f=${Status}", p], capture_output=True,
                                                  text=True).stdout.find("install ok installed") < 0]
    if missing:
        print(f"[ab] installing {' '.join(missing)} with apt", file=sys.stderr, flush=True)
        subprocess.run(["apt-get", "update", "-q"], check=True)
        subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing], check=True,
                       env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))


def peer(a) -> int:
    old, new = revtree.tree(a.old), revtree.tree(a.new)
    servers = a.servers or f"rig@{a.old},rig@{a.new},nchan"
    if "nchan" in servers.split(","):
        ensure_nchan()
    cmd = [sys.executable, os.path.join(HERE, "peers", "run.py"), "--servers", servers, "--scenarios", a.scenarios,
           "--reps", str(a.reps), "--out", a.out, "--python", sys.executable,
           "--tree", f"{a.old}={old}", "--tree", f"{a.new}={new}"] + a.rest
    print("[ab] " + " ".join(cmd), file=sys.stderr, flush=True)
    return subprocess.call(cmd)


# -- micro -----------------------------------------------------------------------------------------

def micro_run(path: str, out: str, a) -> dict:
    files = sorted(f for f in os.listdir(os.path.join(path, "bench")) if re.fullmatch(r"test_micro_\w+\.py", f))
    files = [os.path.join("bench", f) for f in files if not a.files or f in a.files.split(",")]
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--benchmark-enable",
           "--benchmark-only", f"--benchmark-json={out}", f"--benchmark-max-time={a.max_time}",
           "--benchmark-min-rounds=20", *files]
    r = subprocess.run(cmd, cwd=path, env=revtree.env(path), capture_output=True, text=True)
    if not os.path.exists(out):
        raise SystemExit(f"{path}: micro benchmarks failed:\n{r.stdout[-3000:]}{r.stderr[-3000:]}")
    with open(out) as fh:
        return {b["fullname"]: b["stats"] for b in json.load(fh)["benchmarks"]}


def micro(a) -> int:
    os.makedirs(a.out, exist_ok=True)
    trees = {label: revtree.tree(rev) for label, rev in (("old", a.old), ("new", a.new))}
    got = {label: micro_run(path, os.path.join(a.out, f"micro.{label}.json"), a) for label, path in trees.items()}
    lines = [f"old = {a.old}, new = {a.new}: pytest-benchmark, each tree's own bench/test_micro_*.py, "
             "benchmarks present in both", "", "| benchmark | old median µs | new median µs | new/old | "
             "old min µs | new min µs | new/old (min) |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for name in sorted(set(got["old"]) & set(got["new"])):
        o, n = got["old"][name], got["new"][name]
        lines.append(f"| {name} | {o['median'] * 1e6:.3f} | {n['median'] * 1e6:.3f} | {n['median'] / o['median']:.3f}"
                     f" | {o['min'] * 1e6:.3f} | {n['min'] * 1e6:.3f} | {n['min'] / o['min']:.3f} |")
    only = sorted(set(got["old"]) ^ set(got["new"]))
    text = "\n".join(lines) + ("\n\nin one revision only: " + ", ".join(only) if only else "") + "\n"
    print(text)
    with open(os.path.join(a.out, "micro.md"), "w") as fh:
        fh.write(text)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=("count", "peer", "micro"))
    ap.add_argument("--old", default="272b250")
    ap.add_argument("--new", default="main")
    ap.add_argument("--out", default="/tmp/rigfast-ab-out")
    ap.add_argument("--units", default=",".join(UNITS), help="count: units of work")
    ap.add_argument("--n", type=int, default=200, help="count: n of connect, submit and addressed")
    ap.add_argument("--fanout-n", type=int, default=20, help="count: n of fanout (events)")
    ap.add_argument("--users", type=int, default=100, help="count: connected users of addressed")
    ap.add_argument("--subscribers", type=int, default=200, help="count: subscribers of fanout")
    ap.add_argument("--scenarios", default="connect,addressed,fanout_sse,latency_sse", help="peer: scenarios")
    ap.add_argument("--servers", default="", help="peer: default rig@OLD,rig@NEW,nchan")
    ap.add_argument("--reps", type=int, default=1, help="peer: repetitions")
    ap.add_argument("--files", default="", help="micro: only these bench/test_micro_*.py (comma-separated)")
    ap.add_argument("--max-time", type=float, default=0.5, help="micro: pytest-benchmark max time per benchmark")
    a, a.rest = ap.parse_known_args()
    if a.rest[:1] == ["--"]:
        a.rest = a.rest[1:]
    if a.mode == "count" and not shutil.which("valgrind"):
        raise SystemExit("count needs valgrind (apt-get install valgrind)")
    return {"count": count, "peer": peer, "micro": micro}[a.mode](a)


if __name__ == "__main__":
    sys.exit(main())
