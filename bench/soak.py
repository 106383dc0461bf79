"""Soak: mixed load plus hostile input against a multi-worker node, for a bounded duration.

    .venv/bin/python bench/soak.py --minutes 30      # or: make soak SOAK_MINUTES=30

Starts ``python -m rigfast`` (RIGFAST_WORKERS, default 2) on free loopback ports and drives,
from one asyncio client process:

- counted subscribers that stay connected (SSE, WebSocket, long-polling) in 10 groups
  (``oneOf`` on ``name``): every published event of type ``soak`` names a group, so the
  deliveries expected per minute are known exactly;
- churn: short-lived SSE/WS/long-poll connects, each with a ``PUT`` of its subscriptions,
  and a blacklisted JWT session every few seconds (its connection must be ended);
- hostile input each few seconds: a 1,500-value ``oneOf`` connect and a 536 KB ``PUT`` (both
  400), WebSocket protocol errors (close 1002), an unknown ``Last-Event-ID``, 1 MB events
  nobody subscribes to (the history's byte bound), abandoned long-poll sessions, pipelined
  garbage.

Every minute it prints RSS (supervisor + workers), open fds, ``/health`` latency on the
internal port (event-loop lag: p50 / max of probes every 0.25 s) and delivered/expected for
the counted subscribers; at the end a markdown table. Loopback only; stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

import httpx
import jwt as pyjwt
import websockets

ROOT = Path(__file__).resolve().parent.parent
SECRET = "soak-secret-0123456789abcdef0123456789"
EXTRACTORS = {"soak": {"name": {"stable_field_index": 1, "event": {"json_pointer": "/data/name"}}},
              "churn": {"name": {"stable_field_index": 1, "event": {"json_pointer": "/data/name"}}}}
GROUPS = 10
PROBER = """
import socket, sys, time
port = int(sys.argv[1])
while True:
    t0 = time.perf_counter()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"GET /health HTTP/1.1\\r\\nhost: p\\r\\nconnection: close\\r\\n\\r\\n")
            while s.recv(4096):
                pass
        print(time.perf_counter() - t0, flush=True)
    except OSError:
        print("err", flush=True)
    time.sleep(0.25)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tree_pids(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for t in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{t}/children") as fh:
                    todo.extend(int(c) for c in fh.read().split())
        except OSError:
            pass
    return out


def rss_and_fds(pid: int) -> tuple[int, int]:
    rss = fds = 0
    for p in tree_pids(pid):
        try:
            with open(f"/proc/{p}/status") as fh:
                for line in fh:
                    if line.startswith("VmRSS:"):
                        rss += int(line.split()[1]) * 1024
            fds += len(os.listdir(f"/proc/{p}/fd"))
        except OSError:
            pass
    return rss, fds


class Stats:
    def __init__(self) -> None:
        self.minutes: list[dict] = []
        self.new_minute(0)

    def new_minute(self, i: int) -> None:
        self.cur = {"minute": i, "published": 0, "expected": 0, "lag": [], "hostile": 0, "hostile_ok": 0,
                    "churn": 0, "blacklisted": 0, "killed": 0, "errors": 0}
        self.minutes.append(self.cur)


class Soak:
    def __init__(self, args) -> None:
        self.args = args
        self.port, self.api = free_port(), free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.api_base = f"http://127.0.0.1:{self.api}"
        self.stats = Stats()
        self.delivered: dict[int, int] = {}
        self.members = [0] * GROUPS  # counted subscribers per group
        self.stop = False
        self.minute = 0
        self.tasks: list[asyncio.Task] = []

    # -- gateway ------------------------------------------------------------------------
    def start_gateway(self) -> None:
        env = dict(os.environ, INBOUND_PORT=str(self.port), API_HTTP_PORT=str(self.api), RIGFAST_HOST="127.0.0.1",
                   RIGFAST_API_HOST="127.0.0.1", RIGFAST_WORKERS=str(self.args.workers), EXTRACTORS=json.dumps(EXTRACTORS),
                   JWT_SECRET_KEY=SECRET, MAX_CONNECTIONS_PER_MINUTE="0", RIGFAST_LONGPOLL_TIMEOUT_S="2",
                   RIGFAST_LONGPOLL_FIRST_POLL_TTL_S="20", RIGFAST_HEARTBEAT_INTERVAL_S="5", LOG_LEVEL="warning",
                   RIGFAST_MAX_BODY_BYTES=str(2 << 20))
        self.log = tempfile.NamedTemporaryFile(prefix="rigfast-soak-", suffix=".log", delete=False)
        self.proc = subprocess.Popen([sys.executable, "-m", "rigfast"], cwd=ROOT, env=env, stdout=self.log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.api_base + "/health/ready", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None:
                raise SystemExit(f"gateway exited: see {self.log.name}")
            time.sleep(0.2)
        raise SystemExit("gateway not ready after 30 s")

    def stop_gateway(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    # -- counted subscribers --------------------------------------------------------------
    def count(self, data: dict) -> None:
        m = data.get("data", {}).get("minute")
        if m is not None:
            self.delivered[m] = self.delivered.get(m, 0) + 1

    @staticmethod
    def subs(group: int, etype: str = "soak") -> str:
        return json.dumps([{"eventType": etype, "oneOf": [{"name": f"g{group}"}]}])

    async def sse_counted(self, group: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        writer.write(f"GET /_rig/v1/connection/sse?subscriptions={quote(self.subs(group))} HTTP/1.1\r\nhost: s\r\n\r\n".encode())
        await reader.readuntil(b"\r\n\r\n")
        self.members[group] += 1
        try:
            while not self.stop:
                line = await reader.readline()
                if not line:
                    raise ConnectionError("counted SSE connection closed")
                if line.startswith(b"data: ") and b"soak" in line:
                    ev = json.loads(line[6:])
                    if ev.get("type") == "soak":
                        self.count(ev)
        finally:
            self.members[group] -= 1
            writer.close()

    async def ws_counted(self, group: int) -> None:
        url = f"ws://127.0.0.1:{self.port}/_rig/v1/connection/ws?subscriptions={quote(self.subs(group))}"
        async with websockets.connect(url, ping_interval=None, max_size=None) as ws:
            for _ in range(2):
                await ws.recv()
            self.members[group] += 1
            try:
                while not self.stop:
                    msg = json.loads(await ws.recv())
                    if msg.get("type") == "soak":
                        self.count(msg)
            finally:
                self.members[group] -= 1

    async def lp_counted(self, group: int) -> None:
        async with httpx.AsyncClient(base_url=self.base, timeout=10) as c:
            r = await c.get("/_rig/v1/connection/longpolling", params={"subscriptions": self.subs(group)})
            r.raise_for_status()
            await c.get("/_rig/v1/connection/longpolling")  # the greeting
            self.members[group] += 1
            try:
                while not self.stop:
                    r = await c.get("/_rig/v1/connection/longpolling")
                    r.raise_for_status()
                    for e in r.json()["events"]:
                        if e.get("type") == "soak":
                            self.count(e)
            finally:
                self.members[group] -= 1

    async def guarded(self, coro_fn, *args) -> None:
        """A counted subscriber that is reconnected (and counted as an error) if it ever drops."""
        while not self.stop:
            try:
                await coro_fn(*args)
            except Exception as exc:  # noqa: BLE001
                if self.stop:
                    return
                self.stats.cur["errors"] += 1
                print(f"  counted subscriber dropped: {exc!r}", flush=True)
                await asyncio.sleep(0.5)

    # -- publishing -----------------------------------------------------------------------
    async def publisher(self) -> None:
        n = 0
        interval = 1.0 / self.args.rate
        async with httpx.AsyncClient(base_url=self.base, timeout=10) as c:
            nxt = time.monotonic()
            while not self.stop:
                g = n % GROUPS
                ev = {"specversion": "1.0", "type": "soak", "source": "soak", "id": f"s{n}",
                      "data": {"name": f"g{g}", "minute": self.minute, "pad": "x" * 200}}
                expected = self.members[g]
                try:
                    r = await c.post("/_rig/v1/events", content=json.dumps(ev), headers={"content-type": "application/cloudevents+json"})
                    if r.status_code == 202:
                        self.stats.cur["published"] += 1
                        self.stats.cur["expected"] += expected
                    else:
                        self.stats.cur["errors"] += 1
                except httpx.HTTPError:
                    self.stats.cur["errors"] += 1
                n += 1
                nxt += interval
                await asyncio.sleep(max(0.0, nxt - time.monotonic()))

    # -- churn, blacklist -------------------------------------------------------------------
    async def churn(self) -> None:
        async with httpx.AsyncClient(base_url=self.base, timeout=10) as c:
            i = 0
            while not self.stop:
                i += 1
                try:
                    kind = ("sse", "ws", "longpolling")[i % 3]
                    if kind == "ws":
                        url = f"ws://127.0.0.1:{self.port}/_rig/v1/connection/ws?subscriptions={quote(self.subs(i % GROUPS, 'churn'))}"
                        async with websockets.connect(url, ping_interval=None) as ws:
                            token = json.loads(await ws.recv())["data"]["connection_token"]
                            r = await c.put(f"/_rig/v1/connection/ws/{token}/subscriptions",
                                            json={"subscriptions": json.loads(self.subs(i % GROUPS + 1, "churn"))})
                            assert r.status_code == 204, ("ws", r.status_code, r.text)
                    elif kind == "sse":
                        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
                        q = quote(self.subs(i % GROUPS, "churn"))
                        writer.write(f"GET /_rig/v1/connection/sse?subscriptions={q} HTTP/1.1\r\nhost: s\r\n\r\n".encode())
                        await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
                        while True:
                            line = await asyncio.wait_for(reader.readline(), 5)
                            if line.startswith(b"data: "):
                                token = json.loads(line[6:])["data"]["connection_token"]
                                break
                        r = await c.put(f"/_rig/v1/connection/sse/{token}/subscriptions", json={"subscriptions": []})
                        writer.close()
                        assert r.status_code == 204, ("sse", r.status_code, r.text)
                    else:
                        async with httpx.AsyncClient(base_url=self.base, timeout=10) as lp:
                            await lp.get("/_rig/v1/connection/longpolling")
                            await lp.get("/_rig/v1/connection/longpolling")
                    self.stats.cur["churn"] += 1
                except Exception as exc:  # noqa: BLE001
                    self.stats.cur["errors"] += 1
                    print(f"  churn error: {exc!r}", flush=True)
                await asyncio.sleep(1.0 / self.args.churn)

    async def blacklister(self) -> None:
        async with httpx.AsyncClient(timeout=10) as c:
            i = 0
            while not self.stop:
                i += 1
                jti = f"soak-{os.getpid()}-{i}"
                token = pyjwt.encode({"jti": jti, "exp": int(time.time()) + 600}, SECRET, algorithm="HS256")
                try:
                    reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
                    writer.write(f"GET /_rig/v1/connection/sse?jwt={token} HTTP/1.1\r\nhost: s\r\n\r\n".encode())
                    await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
                    await asyncio.wait_for(reader.readuntil(b"rig.subscriptions_set"), 5)
                    r = await c.post(self.api_base + "/v3/session-blacklist", json={"sessionId": jti, "validityInSeconds": 60})
                    assert r.status_code in (200, 201), r.text
                    self.stats.cur["blacklisted"] += 1
                    rest = await asyncio.wait_for(reader.read(), 5)  # ends after rig.session_killed
                    if b"rig.session_killed" in rest:
                        self.stats.cur["killed"] += 1
                    writer.close()
                except Exception as exc:  # noqa: BLE001
                    self.stats.cur["errors"] += 1
                    print(f"  blacklist error: {exc!r}", flush=True)
                await asyncio.sleep(5)

    # -- hostile input ----------------------------------------------------------------------
    async def hostile(self) -> None:
        bomb = json.dumps([{"eventType": "soak", "oneOf": [{"name": f"{i:04d}"} for i in range(1500)]}])
        put = json.dumps({"subscriptions": [{"eventType": "soak", "oneOf": [{"name": f"v{i:07d}"} for i in range(40_000)]}]})
        big = json.dumps({"specversion": "1.0", "type": "nobody", "source": "soak", "id": "big", "data": "b" * 1_000_000})
        async with httpx.AsyncClient(base_url=self.base, timeout=10) as c:
            step = 0
            while not self.stop:
                step += 1
                try:
                    checks = []
                    r = await c.get("/_rig/v1/connection/sse", params={"subscriptions": bomb})
                    checks.append(r.status_code in (400, 431))
                    r = await c.put("/_rig/v1/connection/sse/abcdefghijklmnop/subscriptions", content=put,
                                    headers={"content-type": "application/json"})
                    checks.append(r.status_code == 400)
                    checks.append(await self.ws_protocol_error())
                    reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
                    writer.write(b"GET /_rig/v1/connection/sse HTTP/1.1\r\nhost: s\r\nlast-event-id: nope-1\r\n\r\n")
                    checks.append(b"rig.history_gap" in await asyncio.wait_for(reader.readuntil(b"rig.history_gap"), 5))
                    writer.close()
                    r = await c.post("/_rig/v1/events", content=big, headers={"content-type": "application/cloudevents+json"})
                    checks.append(r.status_code == 202)
                    for _ in range(10):  # abandoned long-poll sessions
                        async with httpx.AsyncClient(base_url=self.base, timeout=10) as lp:
                            checks.append((await lp.get("/_rig/v1/connection/longpolling")).status_code in (200, 503))
                    reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
                    writer.write(b"GET /_rig/health HTTP/1.1\r\nhost: s\r\n\r\n\x00\x01garbage\r\n\r\n")
                    data = await asyncio.wait_for(reader.read(), 5)
                    checks.append(data.startswith(b"HTTP/1.1 200") and b"HTTP/1.1 400" in data)
                    writer.close()
                    self.stats.cur["hostile"] += len(checks)
                    self.stats.cur["hostile_ok"] += sum(checks)
                except Exception as exc:  # noqa: BLE001
                    self.stats.cur["errors"] += 1
                    print(f"  hostile step error: {exc!r}", flush=True)
                await asyncio.sleep(self.args.hostile_every)

    async def ws_protocol_error(self) -> bool:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write((f"GET /_rig/v1/connection/ws HTTP/1.1\r\nhost: s\r\nupgrade: websocket\r\nconnection: Upgrade\r\n"
                      f"sec-websocket-key: {key}\r\nsec-websocket-version: 13\r\n\r\n").encode())
        await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        writer.write(b"\x81\x02hi")  # unmasked
        data = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        i = data.find(b"\x88")
        return i >= 0 and struct.unpack("!H", data[i + 2:i + 4])[0] == 1002

    # -- monitoring ---------------------------------------------------------------------------
    async def prober(self) -> None:
        """GET /health every 0.25 s from a process of its own (so this client's own load does not
        show up as the gateway's lag); one latency in seconds per line, or "err"."""
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", PROBER, str(self.api), stdout=asyncio.subprocess.PIPE)
        try:
            while not self.stop:
                line = await proc.stdout.readline()
                if not line:
                    break
                if line.strip() == b"err":
                    self.stats.cur["errors"] += 1
                else:
                    self.stats.cur["lag"].append(float(line))
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()

    def report(self, m: dict, final: bool = False) -> dict:
        rss, fds = rss_and_fds(self.proc.pid)
        lag = sorted(m["lag"]) or [0.0]
        row = {
            "minute": m["minute"] + 1, "rss_mb": rss / 2**20, "fds": fds,
            "lag_p50_ms": lag[len(lag) // 2] * 1000, "lag_max_ms": lag[-1] * 1000,
            "published": m["published"], "delivered": self.delivered.get(m["minute"], 0), "expected": m["expected"],
            "churn": m["churn"], "killed": f"{m['killed']}/{m['blacklisted']}",
            "hostile": f"{m['hostile_ok']}/{m['hostile']}", "errors": m["errors"],
        }
        m["row"] = row
        return row

    async def run(self) -> None:
        per_kind = self.args.subscribers
        for i in range(per_kind):
            self.tasks.append(asyncio.create_task(self.guarded(self.sse_counted, i % GROUPS)))
            self.tasks.append(asyncio.create_task(self.guarded(self.ws_counted, i % GROUPS)))
        for i in range(max(1, per_kind // 5)):
            self.tasks.append(asyncio.create_task(self.guarded(self.lp_counted, i % GROUPS)))
        deadline = time.monotonic() + 20
        while sum(self.members) < 2 * per_kind + max(1, per_kind // 5) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        for fn in (self.publisher, self.churn, self.blacklister, self.hostile, self.prober):
            self.tasks.append(asyncio.create_task(fn()))
        end = time.monotonic() + self.args.minutes * 60
        print("| min | RSS MB | fds | /health p50 ms | max ms | published | delivered/expected | churn | killed | hostile ok | errors |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |", flush=True)
        pending: list[dict] = []
        while time.monotonic() < end:
            await asyncio.sleep(min(60.0, max(0.0, end - time.monotonic())))
            done = self.stats.cur
            self.minute += 1
            self.stats.new_minute(self.minute)
            pending.append(done)
            await asyncio.sleep(3)  # deliveries of the minute just ended arrive
            for m in pending:
                r = self.report(m)
                print(f"| {r['minute']} | {r['rss_mb']:.0f} | {r['fds']} | {r['lag_p50_ms']:.1f} | {r['lag_max_ms']:.0f} | "
                      f"{r['published']} | {r['delivered']}/{r['expected']} | {r['churn']} | {r['killed']} | {r['hostile']} | "
                      f"{r['errors']} |", flush=True)
            pending.clear()
        self.stop = True
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rate", type=float, default=20.0, help="counted events published per second")
    ap.add_argument("--subscribers", type=int, default=50, help="counted SSE and WS subscribers each (long-poll: a fifth)")
    ap.add_argument("--churn", type=float, default=3.0, help="churn connects per second")
    ap.add_argument("--hostile-every", type=float, default=5.0, help="seconds between rounds of hostile input")
    args = ap.parse_args()
    soak = Soak(args)
    soak.start_gateway()
    print(f"rigfast pid {soak.proc.pid}, {args.workers} workers, log {soak.log.name}; {args.minutes} min", flush=True)
    try:
        asyncio.run(soak.run())
    finally:
        soak.stop_gateway()


if __name__ == "__main__":
    main()
