"""A small pooled HTTP/1.1 client for the reverse proxy, on raw asyncio protocols.

How this works: one :class:`Pool` per upstream (scheme, host, port) keeps up
to ``max_conns`` connections, idle ones on a LIFO stack (the most recently
used is the likeliest to be alive and warm). A request is one
:class:`Exchange`: complete request bytes plus a callback; no Task and no
Future per request. The connection's httptools ``HttpResponseParser``
collects status, headers and body (content-length, chunked, or until the
upstream closes) and calls the callback once, with either
``(status, headers, body)`` or an error status (502/504) and a message.

- The timeout (``PROXY_RECV_TIMEOUT``) covers connect, send and the whole
  response; when it fires the connection is dropped (its late answer would
  otherwise be taken for the next request's).
- An idle connection the upstream closes is noticed by the loop
  (``connection_lost``) and leaves the pool. A request on a reused
  connection that dies before any response byte arrives is sent once more
  on a fresh one, for idempotent methods only.
- When every connection is busy, requests wait in a FIFO queue (their
  timeout keeps running); a connection that frees up takes the next one.
- Responses are buffered whole (up to ``max_response_bytes``; beyond that
  502): the proxy answers with content-length, one write.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections import deque
from typing import Callable

import httptools

log = logging.getLogger("rigfast.proxy")

IDEMPOTENT = frozenset(("GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"))
# Callback: (status, headers, body, error_message). error_message is None on success.
Callback = Callable[[int, list, bytes, "str | None"], None]


class Exchange:
    """One request in flight (or waiting for a connection)."""

    __slots__ = ("data", "head", "method", "callback", "timer", "done", "conn", "tries", "pool")

    def __init__(self, pool: "Pool", data: bytes, method: str, callback: Callback):
        self.pool = pool
        self.data = data
        self.method = method
        self.head = method == "HEAD"
        self.callback = callback
        self.timer: asyncio.TimerHandle | None = None
        self.done = False
        self.conn: UpstreamConn | None = None
        self.tries = 0

    def finish(self, status: int, headers: list, body: bytes, error: str | None) -> None:
        if self.done:
            return
        self.done = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        try:
            self.callback(status, headers, body, error)
        except Exception:  # noqa: BLE001 - a callback bug must not break the connection
            log.exception("proxy: response callback failed")

    def timed_out(self) -> None:
        self.timer = None
        if self.done:
            return
        conn = self.conn
        if conn is not None:
            conn.abandon()
        else:
            try:
                self.pool.waiting.remove(self)
            except ValueError:
                pass
        self.finish(504, [], b"", f"upstream {self.pool.name} did not answer within the timeout (PROXY_RECV_TIMEOUT)")


class UpstreamConn(asyncio.Protocol):
    __slots__ = (
        "pool", "transport", "parser", "ex", "status", "headers", "parts", "size", "complete", "reused",
        "got_bytes", "keep", "closed", "headers_done",
    )

    def __init__(self, pool: "Pool"):
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.ex: Exchange | None = None
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.parts: list[bytes] = []
        self.size = 0
        self.complete = False
        self.reused = False
        self.got_bytes = False
        self.keep = True
        self.closed = False
        self.headers_done = False

    # -- asyncio --------------------------------------------------------------------
    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        ex = self.ex
        if ex is None:  # bytes while idle: the upstream is confused; do not reuse
            self.close()
            return
        self.got_bytes = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(502, f"upstream {self.pool.name} switched protocols; not supported through the proxy")
            return
        except httptools.HttpParserError as exc:
            self._fail(502, f"upstream {self.pool.name} sent an invalid HTTP response ({exc})")
            return
        if self.headers_done and ex.head and not self.complete:
            self.complete = True
            self.keep = False  # the parser expects a body that will not come: never reuse after HEAD
        if self.complete:
            self._done()

    def eof_received(self) -> bool | None:
        return None  # close our side too; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        ex = self.ex
        self.pool.lost(self)
        if ex is None or ex.done:
            return
        self.ex = None
        if self.headers_done and not self.complete and not self._has_length():
            # body delimited by the end of the connection
            self.complete = True
            self.keep = False
            self.ex = ex
            self._done()
            return
        if not self.got_bytes and self.reused and ex.method in IDEMPOTENT and ex.tries < 2:
            ex.conn = None
            self.pool.submit(ex, retry=True)  # a stale keep-alive connection: once more on a fresh one
            return
        what = "closed the connection before answering" if not self.got_bytes else "closed the connection mid-response"
        ex.finish(502, [], b"", f"upstream {self.pool.name} {what}")

    # -- httptools --------------------------------------------------------------------
    def on_message_begin(self) -> None:
        self.headers = []
        self.parts = []
        self.size = 0

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        if self.status < 200:  # interim (100 Continue, 103): wait for the final response
            return
        self.headers_done = True

    def on_body(self, body: bytes) -> None:
        self.size += len(body)
        if self.size > self.pool.max_response_bytes:
            raise httptools.HttpParserError(f"response body larger than {self.pool.max_response_bytes} bytes")
        self.parts.append(body)

    def on_message_complete(self) -> None:
        if self.status < 200:
            return
        self.complete = True
        self.keep = self.parser.should_keep_alive()

    # -- ours -----------------------------------------------------------------------
    def _has_length(self) -> bool:
        for k, _ in self.headers:
            if k == b"content-length" or k == b"transfer-encoding":
                return True
        return False

    def send(self, ex: Exchange) -> None:
        self.ex = ex
        ex.conn = self
        self.complete = False
        self.headers_done = False
        self.got_bytes = False
        self.transport.write(ex.data)

    def _done(self) -> None:
        ex = self.ex
        self.ex = None
        parts = self.parts
        body = parts[0] if len(parts) == 1 else b"".join(parts)
        headers = self.headers
        self.parts = []
        self.headers = []
        self.reused = True
        if ex is not None:
            ex.conn = None
            if self.keep and not self.closed:
                self.pool.release(self)
            else:
                self.close()
            ex.finish(self.status, headers, body, None)

    def _fail(self, status: int, message: str) -> None:
        ex = self.ex
        self.ex = None
        self.close()
        if ex is not None:
            ex.finish(status, [], b"", message)

    def abandon(self) -> None:
        """The exchange timed out: drop the connection (a late answer must not meet the next request)."""
        self.ex = None
        self.close()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.pool.lost(self)
            if self.transport is not None:
                self.transport.abort()


class Pool:
    """Connections to one upstream (scheme, host, port)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, scheme: str, host: str, port: int, max_conns: int,
                 max_idle: int, max_response_bytes: int, ssl_ctx: ssl.SSLContext | None):
        self.loop = loop
        self.scheme = scheme
        self.host = host
        self.port = port
        self.name = f"{host}:{port}"
        self.max_conns = max_conns
        self.max_idle = max_idle
        self.max_response_bytes = max_response_bytes
        self.ssl = ssl_ctx
        self.idle: list[UpstreamConn] = []
        self.conns: set[UpstreamConn] = set()
        self.connecting = 0
        self.waiting: deque[Exchange] = deque()
        self.opened = 0  # connections opened so far (tests, health)

    def submit(self, ex: Exchange, retry: bool = False) -> None:
        ex.tries += 1
        idle = self.idle
        while idle and not retry:
            conn = idle.pop()
            if not conn.closed:
                conn.send(ex)
                return
        if len(self.conns) + self.connecting < self.max_conns:
            self.connecting += 1
            self.loop.create_task(self._connect(ex))
        else:
            self.waiting.append(ex)

    async def _connect(self, ex: Exchange) -> None:
        try:
            if self.ssl is not None:
                _, conn = await self.loop.create_connection(
                    lambda: UpstreamConn(self), self.host, self.port, ssl=self.ssl, server_hostname=self.host)
            else:
                _, conn = await self.loop.create_connection(lambda: UpstreamConn(self), self.host, self.port)
        except asyncio.CancelledError:
            raise
        except (OSError, ssl.SSLError, ValueError) as exc:
            self.connecting -= 1
            ex.finish(502, [], b"", f"upstream {self.name} unreachable: {getattr(exc, 'strerror', None) or exc}")
            self._next()
            return
        self.connecting -= 1
        self.opened += 1
        self.conns.add(conn)
        if ex.done:  # timed out while connecting
            self.release(conn)
            return
        conn.send(ex)

    def release(self, conn: UpstreamConn) -> None:
        if self.waiting:
            while self.waiting:
                ex = self.waiting.popleft()
                if not ex.done:
                    conn.send(ex)
                    return
        if len(self.idle) < self.max_idle:
            self.idle.append(conn)
        else:
            conn.close()

    def lost(self, conn: UpstreamConn) -> None:
        self.conns.discard(conn)
        try:
            self.idle.remove(conn)
        except ValueError:
            pass
        self._next()

    def _next(self) -> None:
        """A connection slot is free: open a connection for the next waiting request."""
        while self.waiting and len(self.conns) + self.connecting < self.max_conns:
            ex = self.waiting.popleft()
            if not ex.done:
                self.connecting += 1
                self.loop.create_task(self._connect(ex))

    def close(self) -> None:
        for ex in list(self.waiting):
            ex.finish(502, [], b"", "gateway stopping")
        self.waiting.clear()
        for conn in list(self.conns):
            conn.close()


class HttpClient:
    def __init__(self, loop: asyncio.AbstractEventLoop, timeout_s: float, max_conns: int = 256, max_idle: int = 64,
                 max_response_bytes: int = 64 << 20):
        self.loop = loop
        self.timeout_s = timeout_s
        self.max_conns = max_conns
        self.max_idle = max_idle
        self.max_response_bytes = max_response_bytes
        self.pools: dict[tuple[str, str, int], Pool] = {}
        self._ssl: ssl.SSLContext | None = None

    def pool(self, key: tuple[str, str, int]) -> Pool:
        pool = self.pools.get(key)
        if pool is None:
            scheme, host, port = key
            ctx = None
            if scheme == "https":
                if self._ssl is None:
                    self._ssl = ssl.create_default_context()
                ctx = self._ssl
            pool = self.pools[key] = Pool(self.loop, scheme, host, port, self.max_conns, self.max_idle,
                                          self.max_response_bytes, ctx)
        return pool

    def request(self, key: tuple[str, str, int], data: bytes, method: str, callback: Callback,
                timeout_s: float | None = None) -> Exchange:
        """Send complete request bytes; ``callback`` is called exactly once."""
        pool = self.pool(key)
        ex = Exchange(pool, data, method, callback)
        ex.timer = self.loop.call_later(self.timeout_s if timeout_s is None else timeout_s, ex.timed_out)
        pool.submit(ex)
        return ex

    def close(self) -> None:
        for pool in self.pools.values():
            pool.close()
