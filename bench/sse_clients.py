"""SSE load clients for the node benchmarks: many connections from one process, on a chosen loopback source address.

Each connection is a raw asyncio protocol (no stream reader per connection,
so a client process holds ~20,000 of them cheaply). A connection counts as
open once it has read its ``rig.subscriptions_set``; the worker that holds it
is read from the connection token in ``rig.connection.create``
(``<node>.w<i>.<random>``). What arrives after the greeting goes to
:meth:`SseConn.on_data` (nothing by default: idle connections).

The source address (127.0.0.2, .3, ...) is bound with
``IP_BIND_ADDRESS_NO_PORT``, so each address has its own ephemeral port range
(``/proc/sys/net/ipv4/ip_local_port_range``, 28,232 ports by default) towards
the node's port.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing as mp
import re
import resource
import socket
from typing import Callable
from urllib.parse import quote

IP_BIND_ADDRESS_NO_PORT = 24
GREETING = b"rig.subscriptions_set"
_TOKEN_WORKER = re.compile(rb'"connection_token":\s*"[^".]+\.w(\d+)\.')
MAX_FDS_PER_CLIENT = 19_000  # under the 20,000-descriptor hard limit, with room for the process's own files

# Per-user events: type user.msg, the user in /data/user; a connection subscribes to its user's events with a
# constraint on the field, or automatically from its JWT's "sub" (RIG's usual setup).
USER_TYPE = "user.msg"
USER_EXTRACTORS = {USER_TYPE: {"user": {"stable_field_index": 1, "event": {"json_pointer": "/data/user"},
                                        "jwt": {"json_pointer": "/sub"}}}}


def user_subscription(user: int) -> list[dict]:
    return [{"eventType": USER_TYPE, "oneOf": [{"user": f"u{user}"}]}]


def sse_request(subscriptions: list[dict] | None = None, jwt: str | None = None) -> bytes:
    """The GET of one SSE connection."""
    q = []
    if subscriptions is not None:
        q.append("subscriptions=" + quote(json.dumps(subscriptions, separators=(",", ":"))))
    if jwt is not None:
        q.append("jwt=" + jwt)
    return f"GET /_rig/v1/connection/sse?{'&'.join(q)} HTTP/1.1\r\nHost: bench\r\n\r\n".encode()


class SseConn(asyncio.Protocol):
    """One SSE connection; ``greeted`` resolves to the holding worker's index once the greeting was read."""

    def __init__(self) -> None:
        self.greeted: asyncio.Future = asyncio.get_running_loop().create_future()
        self.buf = b""
        self.worker = -1
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self.greeted.done():
            self.on_data(data)
            return
        self.buf += data
        at = self.buf.find(GREETING)
        end = self.buf.find(b"\n\n", at) if at >= 0 else -1
        if end < 0:
            if len(self.buf) > 65536:
                self.transport.close()
            return
        m = _TOKEN_WORKER.search(self.buf)
        self.worker = int(m.group(1)) if m else -1
        rest, self.buf = self.buf[end + 2:], b""
        self.greeted.set_result(self.worker)
        if rest:
            self.on_data(rest)

    def on_data(self, data: bytes) -> None:
        pass

    def connection_lost(self, exc) -> None:
        if not self.greeted.done():
            self.greeted.set_exception(ConnectionError(f"closed before the greeting: {exc!r}"))
        self.lost()

    def lost(self) -> None:
        pass


def raise_fd_limit(need: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if need > hard - 100:
        raise SystemExit(f"{need} connections need more than this process's {hard} descriptors")


async def connect_all(port: int, src: str, requests: list[bytes], factory: Callable[[], SseConn],
                      concurrency: int = 200, timeout_s: float = 60.0, attempts: int = 20) -> list[SseConn]:
    """Open one connection per request from ``src`` to 127.0.0.1:``port`` and wait for every greeting.

    At most ``concurrency`` handshakes at a time; a refused or reset connect is retried (``attempts``
    times, 50 ms apart); a greeting not read within ``timeout_s`` fails the whole call."""
    raise_fd_limit(len(requests))
    loop = asyncio.get_running_loop()
    sem = asyncio.Semaphore(concurrency)

    async def one(req: bytes) -> SseConn:
        async with sem:
            for _ in range(attempts):
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                try:
                    s.setsockopt(socket.SOL_IP, IP_BIND_ADDRESS_NO_PORT, 1)
                    s.bind((src, 0))
                    s.setblocking(False)
                    await loop.sock_connect(s, ("127.0.0.1", port))
                except OSError:
                    s.close()
                    await asyncio.sleep(0.05)
                    continue
                _, proto = await loop.create_connection(factory, sock=s)
                proto.transport.write(req)
                await asyncio.wait_for(asyncio.shield(proto.greeted), timeout_s)
                return proto
            raise ConnectionError(f"cannot connect from {src} after {attempts} attempts")

    return await asyncio.gather(*(one(r) for r in requests))


def close_all(conns: list[SseConn]) -> None:
    for c in conns:
        if c.transport is not None:
            c.transport.close()


# --- client processes, driven over a pipe by the benchmark --------------------------------------------


def start_clients(target: Callable, args_list: list[tuple]) -> list[tuple]:
    """One spawned process per argument tuple, running ``target(*args, conn)``; returns (process, parent end) pairs."""
    ctx = mp.get_context("spawn")
    out = []
    for args in args_list:
        parent, child = ctx.Pipe()
        p = ctx.Process(target=target, args=(*args, child))
        p.start()
        out.append((p, parent))
    return out


def ask_all(clients: list[tuple], cmd: str) -> list:
    """Send ``cmd`` to every client, then collect one answer from each."""
    for _, c in clients:
        c.send(cmd)
    return [c.recv() for _, c in clients]


def stop_clients(clients: list[tuple], timeout_s: float = 30.0) -> None:
    """Tell every client to close its connections and exit; kill (by PID) the ones that do not in time."""
    for _, c in clients:
        try:
            c.send("quit")
        except OSError:
            pass
    for p, _ in clients:
        p.join(timeout_s)
        if p.is_alive():
            p.kill()
