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
import errno
import json
import multiprocessing as mp
import re
import resource
import socket
from collections import Counter
from typing import Callable
from urllib.parse import quote

from rigfast.net.sessions import SSE_HEARTBEAT as HEARTBEAT  # written to an idle stream every RIGFAST_HEARTBEAT_INTERVAL_S

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
    """One SSE connection; ``greeted`` resolves to the holding worker's index once the greeting was read.

    After the greeting it counts the heartbeat comments it reads (``beats``); when it ends,
    ``lost`` holds why (``server closed`` for a clean end of stream, else the error) and
    the module's :data:`LOST` tally counts it, so a run can say why connections went away."""

    def __init__(self) -> None:
        self.greeted: asyncio.Future = asyncio.get_running_loop().create_future()
        self.buf = b""
        self.worker = -1
        self.beats = 0
        self.lost: str | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self.greeted.done():
            self.beats += data.count(HEARTBEAT)
            self.on_data(data)
            return
        self.buf += data
        at = self.buf.find(GREETING)
        end = self.buf.find(b"\n\n", at) if at >= 0 else -1
        if end < 0:
            if len(self.buf) > 65536:
                self.lost = "no greeting in the first 64 KiB"
                self.transport.close()
            return
        m = _TOKEN_WORKER.search(self.buf)
        self.worker = int(m.group(1)) if m else -1
        rest, self.buf = self.buf[end + 2:], b""
        self.greeted.set_result(self.worker)
        if rest:
            self.beats += rest.count(HEARTBEAT)
            self.on_data(rest)

    def on_data(self, data: bytes) -> None:
        pass

    def connection_lost(self, exc) -> None:
        why = self.lost or (_reason(exc) if exc is not None else "server closed")
        if not self.greeted.done():
            # what the server said instead of the stream (e.g. a 503 at the connection limit)
            status = self.buf.split(b"\r\n", 1)[0].decode("latin-1")[:60] if self.buf else "nothing read"
            self.greeted.set_exception(ConnectionError(f"closed before the greeting ({why}; {status})"))
        else:
            LOST[why] += 1
        self.lost = why
        self.buf = b""


def _reason(exc: BaseException) -> str:
    """A short, countable name for why a connect or a connection failed."""
    if isinstance(exc, OSError) and exc.errno is not None:
        return errno.errorcode.get(exc.errno, str(exc.errno))
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return "timeout"
    return type(exc).__name__


LOST: Counter = Counter()  # why established connections (after their greeting) ended, in this process


def raise_fd_limit(need: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if need > hard - 100:
        raise SystemExit(f"{need} connections need more than this process's {hard} descriptors")


async def connect_all(port: int, src: str, requests: list[bytes], factory: Callable[[], SseConn],
                      concurrency: int = 200, timeout_s: float = 60.0, attempts: int = 20,
                      retries: Counter | None = None, greeting_s: float = 30.0) -> list[SseConn]:
    """Open one connection per request from ``src`` to 127.0.0.1:``port`` and wait for every greeting.

    At most ``concurrency`` handshakes at a time. A connect that fails, a connection closed before its
    greeting (e.g. 503 at a worker's connection limit) and a greeting not read within ``greeting_s`` are
    retried (``attempts`` times, 50 ms, 100 ms, ... up to 1 s apart); each such failure is counted by
    reason in ``retries``. A connection still failing after ``attempts``, or the whole call taking longer
    than ``timeout_s``, raises with the reasons counted so far."""
    raise_fd_limit(len(requests))
    loop = asyncio.get_running_loop()
    sem = asyncio.Semaphore(concurrency)
    retries = Counter() if retries is None else retries

    async def one(req: bytes) -> SseConn:
        async with sem:
            for attempt in range(attempts):
                if attempt:
                    await asyncio.sleep(min(0.05 * attempt, 1.0))
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                try:
                    s.setsockopt(socket.SOL_IP, IP_BIND_ADDRESS_NO_PORT, 1)
                    s.bind((src, 0))
                    s.setblocking(False)
                    await loop.sock_connect(s, ("127.0.0.1", port))
                except OSError as exc:
                    s.close()
                    retries["connect " + _reason(exc)] += 1
                    continue
                _, proto = await loop.create_connection(factory, sock=s)
                proto.transport.write(req)
                try:
                    await asyncio.wait_for(asyncio.shield(proto.greeted), greeting_s)
                    return proto
                except asyncio.TimeoutError:
                    retries["no greeting in %gs" % greeting_s] += 1
                    proto.greeted.cancel()
                    proto.transport.abort()
                except ConnectionError as exc:
                    retries[str(exc).split(" (", 1)[0] + " (" + str(exc).split("; ", 1)[-1]] += 1
            raise ConnectionError(f"cannot connect from {src} after {attempts} attempts: {dict(retries)}")

    try:
        return await asyncio.wait_for(asyncio.gather(*(one(r) for r in requests)), timeout_s)
    except asyncio.TimeoutError:
        raise TimeoutError(f"connections from {src} not all open in {timeout_s:g}s: {dict(retries)}") from None


def tally(conns: list[SseConn]) -> dict:
    """How the connections stand: open, lost (by reason), and the fewest/most heartbeats an open one has read."""
    alive = [c for c in conns if c.lost is None]
    beats = [c.beats for c in alive]
    return {"open": len(alive), "lost": dict(LOST), "min_beats": min(beats, default=0),
            "max_beats": max(beats, default=0), "no_beat": sum(1 for b in beats if b == 0)}


def reset_beats(conns: list[SseConn]) -> None:
    for c in conns:
        c.beats = 0


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
