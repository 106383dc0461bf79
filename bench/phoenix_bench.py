"""Phoenix Channels vs plain WebSocket: server CPU per delivery, same gateway, same run.

Run: python bench/phoenix_bench.py [--sockets 2000] [--events 200] [--rounds 2]

Starts one gateway worker (pinned to core 1 when ``taskset`` exists; the
client runs on core 0) and opens ``--sockets`` plain WebSockets
(``/_rig/v1/connection/ws``, subscribed to ``bench.ws``) and ``--sockets``
Phoenix sockets (``/socket/websocket?vsn=2.0.0``, each joined to
``rig:bench`` with a subscription to ``bench.phx``). Then, ``--rounds``
times each, alternating, it publishes ``--events`` events of one type and
waits until every socket of that group has them all, and reads the server's
CPU (utime + stime from /proc) over the phase. Printed: server CPU us per
delivery for each group and the ratio. Loopback only, bounded (every wait
has a timeout), everything it starts is stopped by PID. The machine is
shared: compare the two groups within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import subprocess
import sys
import time
import urllib.parse

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from bench.procstat import proc_cpu_s  # noqa: E402
from tests.helpers import free_port  # noqa: E402

MARK = b'"pad"'
WAIT_S = 60.0


def upgrade(path: str) -> bytes:
    return (b"GET %s HTTP/1.1\r\nHost: b\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n" % path.encode())


def masked_text(payload: bytes) -> bytes:
    mask = b"\x01\x02\x03\x04"
    n = len(payload)
    head = bytes((0x81, 0x80 | n)) if n < 126 else bytes((0x81, 0xFE, n >> 8, n & 0xFF))
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


class Client:
    """One socket that counts the events it receives (the marker of the bench events)."""

    def __init__(self):
        self.count = 0
        self.replies = 0
        self.tail = b""

    async def run(self, port: int, path: str, join: bytes | None, opened: asyncio.Event, counter: list) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(upgrade(path))
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT_S)
        assert head.startswith(b"HTTP/1.1 101"), head[:60]
        if join is not None:
            writer.write(masked_text(join))
        counter[0] += 1
        if counter[0] == counter[1]:
            opened.set()
        while True:
            data = await reader.read(1 << 16)
            if not data:
                return
            buf = self.tail + data
            self.count += buf.count(MARK)
            self.replies += buf.count(b"phx_reply")
            self.tail = buf[-(len(MARK) - 1):]


def publish_request(etype: str, i: int) -> bytes:
    body = json.dumps({"specversion": "1.0", "type": etype, "source": "bench", "id": f"{etype}-{i}",
                       "data": {"n": i, "pad": "x" * 100}}).encode()
    return b"POST /_rig/v1/events HTTP/1.1\r\nHost: b\r\ncontent-type: application/cloudevents+json\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)


async def publish(port: int, etype: str, start: int, n: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for i in range(start, start + n):
        writer.write(publish_request(etype, i))
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT_S)
        assert head.startswith(b"HTTP/1.1 202"), head[:80]
        length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
        await asyncio.wait_for(reader.readexactly(length), WAIT_S)
    writer.close()


async def wait_for(pred, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not pred():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def bench(port: int, pid: int, sockets: int, events: int, rounds: int) -> dict:
    ws_path = "/_rig/v1/connection/ws?subscriptions=" + urllib.parse.quote(json.dumps([{"eventType": "bench.ws"}]))
    join = json.dumps(["1", "1", "rig:bench", "phx_join", {"subscriptions": [{"eventType": "bench.phx"}]}]).encode()
    groups = {"ws": [Client() for _ in range(sockets)], "phoenix": [Client() for _ in range(sockets)]}
    opened = asyncio.Event()
    counter = [0, 2 * sockets]
    tasks = []
    for i in range(sockets):
        tasks.append(asyncio.create_task(groups["ws"][i].run(port, ws_path, None, opened, counter)))
        tasks.append(asyncio.create_task(groups["phoenix"][i].run(port, "/socket/websocket?vsn=2.0.0", join, opened, counter)))
        if i % 100 == 99:
            await asyncio.sleep(0.01)
    await asyncio.wait_for(opened.wait(), WAIT_S)
    await wait_for(lambda: all(c.replies >= 1 for c in groups["phoenix"]), "every Phoenix join reply")
    cpu = {"ws": 0.0, "phoenix": 0.0}
    sent = {"ws": 0, "phoenix": 0}
    for _ in range(rounds):
        for name, etype in (("ws", "bench.ws"), ("phoenix", "bench.phx")):
            clients = groups[name]
            want = sent[name] + events
            c0 = proc_cpu_s(pid)
            await publish(port, etype, sent[name], events)
            await wait_for(lambda: all(c.count >= want for c in clients), f"{name} deliveries")
            cpu[name] += proc_cpu_s(pid) - c0
            sent[name] = want
    for name, clients in groups.items():
        extra = sum(c.count for c in clients) - sent[name] * sockets
        assert extra == 0, f"{name}: {extra} unexpected deliveries"
    for t in tasks:
        t.cancel()
    return {name: cpu[name] / (sent[name] * sockets) * 1e6 for name in cpu}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sockets", type=int, default=2000)
    ap.add_argument("--events", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 4 * args.sockets + 256)), hard))
    port, api = free_port(), free_port()
    env = dict(os.environ, INBOUND_PORT=str(port), API_HTTP_PORT=str(api), RIGFAST_HOST="127.0.0.1", RIGFAST_API_HOST="127.0.0.1",
               RIGFAST_WORKERS="1", MAX_CONNECTIONS_PER_MINUTE="1000000", LOG_LEVEL="warning", RIGFAST_HEARTBEAT_INTERVAL_S="600")
    cmd = [sys.executable, "-m", "rigfast"]
    if shutil.which("taskset") and (os.cpu_count() or 1) > 1:
        cmd = ["taskset", "-c", "1"] + cmd
        os.sched_setaffinity(0, {0})
    proc = subprocess.Popen(cmd, env=env, cwd=REPO)
    try:
        deadline = time.monotonic() + 30
        import urllib.request

        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{api}/health", timeout=1).read()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise SystemExit("gateway did not start")
                time.sleep(0.1)
        res = asyncio.run(asyncio.wait_for(bench(port, proc.pid, args.sockets, args.events, args.rounds), 5 * WAIT_S))
        print(f"{args.sockets} sockets per group, {args.events} events x {args.rounds} rounds per group")
        print(f"plain WebSocket : {res['ws']:.3f} us server CPU per delivery")
        print(f"Phoenix channel : {res['phoenix']:.3f} us server CPU per delivery")
        print(f"ratio phoenix/ws: {res['phoenix'] / res['ws']:.2f}")
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


if __name__ == "__main__":
    main()
