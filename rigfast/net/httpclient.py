"""The one HTTP/1.1 client: pooled, streaming, on raw asyncio protocols (reverse proxy, URL checks).

How this works: one :class:`Pool` per upstream (scheme, host, port) keeps up
to ``max_conns`` connections, idle ones on a LIFO stack (the most recently
used is the likeliest to be alive and warm). A request is one
:class:`Exchange`: the request bytes plus a *sink* that receives the answer
as it arrives (a :class:`Sink`); no Task and no Future per request. The
connection's httptools ``HttpResponseParser`` checks and frames the answer and
the connection calls, in order::

    sink.head(status, head, fields, end, kind, length)  # once; kind: NO_BODY, LENGTH, CHUNKED, UNTIL_CLOSE
    sink.body(chunk)                                    # any number of times, as bytes arrive
    sink.end()                                          # the response is complete
    sink.flush()                                        # after each read from the upstream: write what was gathered

The head's fields are the lines ``head[fields:end]`` as the upstream wrote them
(found in the bytes once the parser accepted the head, rigfast._ext.heads: no
callback per field; ``field_list`` makes them a list of (name, value)).

or ``sink.error(status, message)`` (502/504, a message fit for the public:
no address, no setting's value; the details go to the log) at any point
before ``end``; a sink that already started answering must then abort.
Nothing is buffered here: the body goes to the sink chunk by chunk, and a
sink whose own output is full calls :meth:`Exchange.pause` (the upstream is
then not read until :meth:`Exchange.resume`).

- The timeout (``timeout_s``) covers connect, send and the wait for the
  response head, then each pause in the body either way (a paused exchange
  does not count); ``text/event-stream`` bodies have no idle timeout. One
  sweep per client (every tenth of the shortest timeout, at most 0.1 s)
  checks the exchanges in flight: no timer per request. When it fires the
  connection is dropped (its late answer would otherwise be taken for the
  next request's).
- ``max_response_bytes``: a larger announced ``content-length`` is 502 before
  anything is passed on; a streamed body that grows past it is cut (error
  after the head). Event streams are not capped (they are endless by design).
- Bytes after a complete response (an upstream ``204`` or ``304`` with a
  body, a ``HEAD`` answer with one) are dropped with the connection, never
  taken for a second response.
- An idle connection the upstream closes is noticed by the loop
  (``connection_lost``) and leaves the pool; one idle for longer than
  ``idle_timeout_s`` (30 s) is closed by the sweep (a peer or a middlebox
  may forget it without a word). A request on a reused
  connection that dies before any response byte arrives is sent once more
  on a fresh one, for idempotent methods with their whole body at hand only.
- When every connection is busy, requests wait in a FIFO queue (their
  timeout keeps running); a connection that frees up takes the next one.
- Request bodies may stream too: :meth:`HttpClient.request` with
  ``streaming=True`` sends the head, then :meth:`Exchange.send_body` and
  :meth:`Exchange.end_body`; the sink's ``pause_source``/``resume_source``
  tell the producer to stop and go on when the upstream's write buffer fills.
- :meth:`HttpClient.tunnel` opens a connection of its own (outside the
  pool) for an ``Upgrade`` request: after a ``101`` the sink gets
  ``upgraded(status, headers, rest)`` and then raw ``data(bytes)`` until
  ``closed()``; :meth:`Exchange.write` sends raw bytes the other way.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections import deque
from typing import Any

import httptools

from rigfast._ext import field_list, response_head
from rigfast.logs import RateLimitedLogger

log = logging.getLogger("rigfast.net.httpclient")
_rl = RateLimitedLogger(log, 10.0)

IDEMPOTENT = frozenset(("GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"))
NO_BODY, LENGTH, CHUNKED, UNTIL_CLOSE = 0, 1, 2, 3
MAX_HEADERS = 200
MAX_HEAD_BYTES = 64 << 10

# Public messages (no address, no configuration value): the log line says which upstream and why.
UNREACHABLE = "Bad gateway: the upstream service is unreachable"
INVALID = "Bad gateway: the upstream service sent an invalid HTTP response"
CLOSED_EARLY = "Bad gateway: the upstream service closed the connection before answering"
TOO_LARGE = "Bad gateway: the upstream service's response is larger than the gateway passes on"
TIMEOUT = "Gateway timeout: the upstream service did not answer in time (PROXY_RECV_TIMEOUT)"
STOPPING = "Bad gateway: the gateway is stopping"


class _Extra(Exception):
    """Bytes after a complete response: stop parsing."""


class _TooBig(Exception):
    pass


class Sink:
    """What receives an answer (see the module's docstring); these defaults do nothing. The
    compiled build makes this a C type, so the connection's calls to a sink are C calls."""

    def head(self, status: int, head: bytes, fields: int, end: int, kind: int, length: int) -> None:
        pass

    def body(self, chunk: bytes) -> None:
        pass

    def end(self) -> None:
        pass

    def flush(self) -> None:
        pass

    def error(self, status: int, message: str) -> None:
        pass

    def pause_source(self) -> None:  # the upstream does not take the request body as fast as it comes
        pass

    def resume_source(self) -> None:
        pass

    # a tunnel (HttpClient.tunnel)
    def upgraded(self, status: int, headers: list, rest: bytes) -> None:
        pass

    def data(self, data: bytes) -> None:
        pass

    def closed(self) -> None:
        pass


class Exchange:
    """One request in flight (or waiting for a connection)."""

    __slots__ = ("pool", "data", "method", "head", "sink", "timed", "done", "conn", "tries", "started",
                 "last", "streaming", "pending", "body_done", "upgrade", "timeout_s", "retry")

    def __init__(self, pool: "Pool", data: bytes, method: str, sink: Sink, timeout_s: float):
        self.pool = pool
        self.data = data
        self.method = method
        self.head = method == "HEAD"
        self.sink = sink
        self.timed = True  # watched by the client's sweep (no timer per request); off for event streams, tunnels
        self.timeout_s = timeout_s
        self.done = False
        self.conn: UpstreamConn | None = None
        self.tries = 0
        self.started = False  # the sink got the head
        self.last = pool.loop.time()  # creation, then the last bytes either way: the timeout counts from there
        self.streaming = False  # request body still coming (send_body / end_body)
        self.pending: list[bytes] | None = None  # body bytes sent before a connection was there
        self.body_done = True
        self.upgrade = False
        self.retry = method in IDEMPOTENT  # may be sent again on a fresh connection when a reused one was stale

    # -- the answer ----------------------------------------------------------------
    def fail(self, status: int, message: str, detail: str) -> None:
        if self.done:
            return
        self.done = True
        _rl.warning(f"{self.pool.name}:{status}", "upstream %s (%s %s): %s", self.pool.label, self.method,
                    "answering" if self.started else "before the answer", detail)
        try:
            self.sink.error(status, message)
        except Exception:  # noqa: BLE001 - a sink bug must not break the connection
            log.exception("upstream: error callback failed")

    def timed_out(self) -> None:
        """No answer (or no further bytes either way) within the timeout: 504, or a cut once answering."""
        if self.done:
            return
        self._detach()
        self.fail(504, TIMEOUT, f"no {'further bytes' if self.started else 'answer'} within {self.timeout_s:g} s")

    def cancel(self) -> None:
        """The requester is gone: drop the exchange (and its connection when mid-response)."""
        if self.done:
            return
        self.done = True
        self._detach()

    def _detach(self) -> None:
        """Let go of the connection (dropped mid-exchange) or of the place in the pool's waiting list."""
        conn = self.conn
        if conn is not None:
            conn.abandon()
        else:
            try:
                self.pool.waiting.remove(self)
            except ValueError:
                pass

    # -- flow control (called by the sink) -----------------------------------------
    def pause(self) -> None:
        conn = self.conn
        if conn is not None and not conn.paused and conn.transport is not None:
            conn.paused = True
            conn.transport.pause_reading()

    def resume(self) -> None:
        conn = self.conn
        if conn is not None and conn.paused:
            conn.paused = False
            if conn.transport is not None and not conn.closed:
                conn.transport.resume_reading()
            self.last = self.pool.loop.time()

    # -- a streamed request body / a tunnel ------------------------------------------
    def send_body(self, chunk: bytes) -> None:
        self.last = self.pool.loop.time()
        conn = self.conn
        if conn is None or conn.closed:
            if not self.done:
                if self.pending is None:
                    self.pending = []
                self.pending.append(chunk)
                if len(self.pending) > 16:  # still connecting: the producer waits (resumed by send)
                    self.sink.pause_source()
            return
        conn.transport.write(chunk)

    def end_body(self) -> None:
        self.body_done = True  # (streaming stays True: such a request is never sent twice)

    def write(self, data: bytes) -> None:  # a tunnel's bytes
        self.send_body(data)


class UpstreamConn:
    """An asyncio protocol (not derived from ``asyncio.Protocol``, so that the compiled build is a C type)."""

    __slots__ = (
        "pool", "transport", "parser", "ex", "status", "headers", "head", "head_at", "head_bytes", "size", "complete",
        "reused", "got_bytes", "keep", "closed", "headers_done", "paused", "tunnel", "kind", "cap", "write_paused",
        "idle_since",
    )

    def __init__(self, pool: "Pool"):
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.ex: Exchange | None = None
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []  # a 101's, for the tunnel
        self.head: bytes | None = None  # the bytes read while the head is incomplete (usually one read)
        self.head_at = 0  # where the head after an interim (1xx) answer starts in them
        self.head_bytes = 0
        self.size = 0
        self.cap = 0
        self.kind = NO_BODY
        self.complete = False
        self.reused = False
        self.got_bytes = False
        self.keep = True
        self.closed = False
        self.headers_done = False
        self.paused = False
        self.tunnel = False
        self.write_paused = False
        self.idle_since = 0.0

    # -- asyncio --------------------------------------------------------------------
    def connection_made(self, transport) -> None:
        self.transport = transport

    def pause_writing(self) -> None:
        # the upstream does not take the request body (or tunnel bytes) as fast as they come
        self.write_paused = True
        ex = self.ex
        if ex is not None:
            ex.sink.pause_source()

    def resume_writing(self) -> None:
        self.write_paused = False
        ex = self.ex
        if ex is not None:
            ex.sink.resume_source()

    def data_received(self, data: bytes) -> None:
        ex = self.ex
        if ex is None:  # bytes while idle: the upstream is confused; do not reuse
            self.close()
            return
        if self.tunnel:
            ex.sink.data(data)
            return
        self.got_bytes = True
        if ex.started:
            ex.last = self.pool.loop.time()
        else:
            self.head_bytes += len(data)
        if not self.headers_done:
            head = self.head
            self.head = data if head is None else head + data
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            if ex.upgrade and self.status == 101:
                self._upgraded(data[exc.args[0]:] if exc.args else b"")
            else:
                self._fail(502, INVALID, "switched protocols without being asked to")
            return
        except httptools.HttpParserError as exc:
            cause = exc.__context__
            if isinstance(cause, _Extra) or self.complete:
                self.keep = False  # trailing bytes after the response: ignored, the connection is not reused
            elif isinstance(cause, _TooBig):
                self._fail(502, TOO_LARGE, f"response body larger than {self.pool.max_response_bytes} bytes")
                return
            elif self.ex is None or ex.done:
                return  # the sink gave up (client gone) while we parsed
            else:
                self._fail(502, INVALID, f"invalid HTTP response ({exc})")
                return
        if self.ex is not ex:
            return
        if not self.headers_done and self.head_bytes > MAX_HEAD_BYTES:
            self._fail(502, INVALID, f"response head larger than {MAX_HEAD_BYTES} bytes")
            return
        if self.headers_done and self.kind == NO_BODY and not self.complete:
            self.complete = True  # a HEAD answer: the parser would wait for a body that does not come
        if self.complete:
            if ex.head:
                self.keep = False  # never reuse after HEAD: the parser's idea of the framing is a guess
            self._done()
        elif ex.started and not ex.done:
            ex.sink.flush()

    def eof_received(self) -> bool | None:
        return None  # close our side too; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        ex = self.ex
        self.pool.lost(self)
        if ex is None or ex.done:
            return
        if self.tunnel:
            self.ex = None
            ex.done = True
            ex.sink.closed()
            return
        if self.headers_done and not self.complete and self.kind == UNTIL_CLOSE:
            self.complete = True  # body delimited by the end of the connection
            self.keep = False
            self._done()
            return
        self.ex = None
        ex.conn = None
        if (not self.got_bytes and self.reused and ex.retry and ex.tries < 2
                and not ex.streaming and ex.pending is None):
            self.pool.submit(ex, retry=True)  # a stale keep-alive connection: once more on a fresh one
            return
        if not self.got_bytes:
            ex.fail(502, CLOSED_EARLY, "closed the connection before answering")
        else:
            ex.fail(502, INVALID, "closed the connection mid-response")

    # -- httptools (no on_header: the fields are read from the head's bytes, rigfast._ext.heads) -----
    def on_message_begin(self) -> None:
        if self.complete:
            raise _Extra
        self.size = 0

    def on_headers_complete(self) -> None:
        status = self.status = self.parser.get_status_code()
        head = self.head
        found = response_head(head, self.head_at) if head is not None else None
        if found is None:
            raise ValueError("response head not found in the bytes read")  # llhttp accepted one: cannot happen
        fields, end, count, length, transfer, sse = found
        if count > MAX_HEADERS:
            raise ValueError("too many response header fields")
        if status < 200 and status != 101:  # interim (100 Continue, 103): wait for the final response
            self.head_at = end + 2
            return
        ex = self.ex
        self.headers_done = True
        self.head = None
        kind = LENGTH
        cap = self.pool.max_response_bytes
        if ex.head or status == 204 or status == 304 or status == 101:
            kind = NO_BODY
            length = 0
        else:
            if transfer:  # (llhttp refused a Content-Length with it)
                kind = CHUNKED if transfer == 1 else UNTIL_CLOSE
                length = 0
            elif length < 0:
                kind = UNTIL_CLOSE
                length = 0
            if sse:
                cap = 0
                ex.timed = False
            if cap and kind == LENGTH and length > cap:
                raise _TooBig
        self.kind = kind
        self.cap = cap
        if status == 101:
            self.headers = field_list(head, fields, end)
            return
        ex.started = True
        ex.last = self.pool.loop.time()
        ex.sink.head(status, head, fields, end, kind, length)

    def on_body(self, body: bytes) -> None:
        if self.kind == NO_BODY:  # a HEAD answer with a body: the parser counts it, nobody gets it
            self.keep = False
            return
        self.size += len(body)
        if self.cap and self.size > self.cap:
            raise _TooBig
        ex = self.ex
        if ex is not None and not ex.done:
            ex.sink.body(body)

    def on_message_complete(self) -> None:
        if self.status < 200:
            return
        self.complete = True
        self.keep = self.parser.should_keep_alive()

    # -- ours -----------------------------------------------------------------------
    def send(self, ex: Exchange) -> None:
        self.ex = ex
        ex.conn = self
        self.complete = False
        self.headers_done = False
        self.got_bytes = False
        self.status = 0
        self.head = None
        self.head_at = 0
        self.head_bytes = 0
        self.transport.write(ex.data)
        if ex.pending is not None:
            pending, ex.pending = ex.pending, None
            self.transport.write(b"".join(pending))
            if not self.write_paused:
                ex.sink.resume_source()
        if self.write_paused:
            ex.sink.pause_source()

    def _upgraded(self, rest: bytes) -> None:
        ex = self.ex
        self.tunnel = True
        self.parser = None
        ex.timed = False
        self.pool.tunnels.discard(ex)
        ex.started = True
        ex.sink.upgraded(self.status, self.headers, rest)

    def _done(self) -> None:
        ex = self.ex
        self.ex = None
        self.head = None
        self.reused = True
        self.complete = False
        self.headers_done = False
        if ex is None:
            return
        ex.conn = None
        if self.paused:  # the sink paused us while the last bytes were parsed: a reused connection reads again
            self.paused = False
            if not self.closed:
                self.transport.resume_reading()
        if not ex.done:
            ex.done = True
            if not ex.body_done:
                self.keep = False  # the upstream answered before the request body ended
        if self.keep and not self.closed and not ex.upgrade:
            self.pool.release(self)
        else:
            self.close()
        ex.sink.end()
        ex.sink.flush()

    def _fail(self, status: int, message: str, detail: str) -> None:
        ex = self.ex
        self.ex = None
        self.close()
        if ex is not None:
            ex.conn = None
            ex.fail(status, message, detail)

    def abandon(self) -> None:
        """The exchange timed out or its requester left: drop the connection mid-exchange."""
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
                 max_idle: int, max_response_bytes: int, ssl_ctx: ssl.SSLContext | None, label: str = ""):
        self.loop = loop
        self.scheme = scheme
        self.host = host
        self.port = port
        self.name = f"{host}:{port}"
        self.label = label or self.name  # for logs only (a use_env upstream is named by its variable)
        self.max_conns = max_conns
        self.max_idle = max_idle
        self.max_response_bytes = max_response_bytes
        self.ssl = ssl_ctx
        self.idle: list[UpstreamConn] = []
        self.conns: set[UpstreamConn] = set()
        self.connecting = 0
        self.waiting: deque[Exchange] = deque()
        self.connecting_ex: set[Exchange] = set()  # waiting for their new connection (the sweep looks there too)
        self.tunnels: set[Exchange] = set()  # upgrade requests before the 101
        self.opened = 0  # connections opened so far (tests, health)
        self.idle_timeout = 30.0  # an idle connection older than this is closed (a peer may drop it silently)
        self.tick = loop.time()  # the sweep's clock (no clock call per request)

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
            self.connecting_ex.add(ex)
            self.loop.create_task(self._connect(ex))
        else:
            self.waiting.append(ex)

    async def open(self) -> UpstreamConn:
        if self.ssl is not None:
            _, conn = await self.loop.create_connection(
                lambda: UpstreamConn(self), self.host, self.port, ssl=self.ssl, server_hostname=self.host)
        else:
            _, conn = await self.loop.create_connection(lambda: UpstreamConn(self), self.host, self.port)
        return conn

    async def _connect(self, ex: Exchange) -> None:
        try:
            conn = await self.open()
        except asyncio.CancelledError:
            raise
        except (OSError, ssl.SSLError, ValueError) as exc:
            self.connecting -= 1
            self.connecting_ex.discard(ex)
            ex.fail(502, UNREACHABLE, f"unreachable: {getattr(exc, 'strerror', None) or exc}")
            self._next()
            return
        self.connecting -= 1
        self.connecting_ex.discard(ex)
        self.opened += 1
        self.conns.add(conn)
        if ex.done:  # timed out while connecting
            self.release(conn)
            return
        conn.send(ex)

    async def _tunnel(self, ex: Exchange) -> None:
        self.tunnels.add(ex)
        try:
            conn = await self.open()
        except (OSError, ssl.SSLError, ValueError) as exc:
            self.tunnels.discard(ex)
            ex.fail(502, UNREACHABLE, f"unreachable: {getattr(exc, 'strerror', None) or exc}")
            return
        if ex.done:
            conn.close()
            return
        conn.reused = False
        conn.send(ex)

    def release(self, conn: UpstreamConn) -> None:
        if self.waiting:
            while self.waiting:
                ex = self.waiting.popleft()
                if not ex.done:
                    conn.send(ex)
                    return
        if len(self.idle) < self.max_idle:
            conn.idle_since = self.tick
            self.idle.append(conn)
        else:
            conn.close()

    def lost(self, conn: UpstreamConn) -> None:
        if conn not in self.conns:
            return
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
                self.connecting_ex.add(ex)
                self.loop.create_task(self._connect(ex))

    def sweep(self, now: float) -> None:
        """Time out exchanges whose last progress (creation, bytes either way) is older than their timeout;
        close connections idle for longer than ``idle_timeout``."""
        self.tick = now
        if self.idle and now - self.idle[0].idle_since > self.idle_timeout:
            for conn in [c for c in self.idle if now - c.idle_since > self.idle_timeout]:
                conn.close()
        late = [ex for ex in self._watched() if ex.timed and not ex.done and now - ex.last >= ex.timeout_s
                and not (ex.conn is not None and ex.conn.paused)]
        for ex in late:
            ex.timed_out()

    def _watched(self):
        for conn in self.conns:
            if conn.ex is not None:
                yield conn.ex
        yield from self.waiting
        yield from self.connecting_ex
        yield from self.tunnels

    def close(self) -> None:
        for ex in list(self.waiting):
            ex.fail(502, STOPPING, "gateway stopping")
        self.waiting.clear()
        for conn in list(self.conns):
            conn.close()


class HttpClient:
    def __init__(self, loop: asyncio.AbstractEventLoop, timeout_s: float, max_conns: int = 256, max_idle: int = 64,
                 max_response_bytes: int = 64 << 20, ssl_context: ssl.SSLContext | None = None,
                 idle_timeout_s: float = 30.0):
        self.loop = loop
        self.timeout_s = timeout_s
        self.max_conns = max_conns
        self.max_idle = max_idle
        self.max_response_bytes = max_response_bytes
        self.pools: dict[tuple[str, str, int], Pool] = {}
        self._ssl = ssl_context
        self._sweeping: asyncio.TimerHandle | None = None
        self._finest = timeout_s  # the shortest timeout asked for sets the sweep's period
        self.idle_timeout_s = idle_timeout_s

    def _sweep(self) -> None:
        now = self.loop.time()
        for pool in self.pools.values():
            pool.sweep(now)
        self._sweeping = self.loop.call_later(self._interval, self._sweep)

    @property
    def _interval(self) -> float:
        return min(0.1, max(self._finest / 10, 0.01))

    def pool(self, key: tuple[str, str, int], label: str = "") -> Pool:
        pool = self.pools.get(key)
        if pool is None:
            scheme, host, port = key
            ctx = None
            if scheme == "https":
                if self._ssl is None:
                    self._ssl = ssl.create_default_context()
                ctx = self._ssl
            pool = self.pools[key] = Pool(self.loop, scheme, host, port, self.max_conns, self.max_idle,
                                          self.max_response_bytes, ctx, label)
            pool.idle_timeout = self.idle_timeout_s
        return pool

    def request(self, key: tuple[str, str, int], data: bytes, method: str, sink: Any,
                timeout_s: float | None = None, label: str = "", streaming: bool = False,
                retry: bool | None = None) -> Exchange:
        """Send ``data`` (the request, whole, or its head when ``streaming``); the sink gets the answer.

        ``retry``: may the request go out twice (a reused connection found dead before any answer
        byte)? Default: for idempotent methods.
        """
        pool = self.pools.get(key) or self.pool(key, label)
        t = self.timeout_s if timeout_s is None else timeout_s
        ex = Exchange(pool, data, method, sink, t)
        if retry is not None:
            ex.retry = retry
        if streaming:
            ex.streaming = True
            ex.body_done = False
        if self._sweeping is None or t < self._finest:
            self._start_sweep(t)
        pool.submit(ex)
        return ex

    def _start_sweep(self, t: float) -> None:
        self._finest = min(self._finest, t)
        if self._sweeping is not None:
            self._sweeping.cancel()
        self._sweeping = self.loop.call_later(self._interval, self._sweep)

    def tunnel(self, key: tuple[str, str, int], data: bytes, sink: Any, label: str = "") -> Exchange:
        """An Upgrade request on a connection of its own (see the module docstring)."""
        pool = self.pools.get(key) or self.pool(key, label)
        ex = Exchange(pool, data, "GET", sink, self.timeout_s)
        ex.upgrade = True
        if self._sweeping is None:
            self._start_sweep(self.timeout_s)
        self.loop.create_task(pool._tunnel(ex))
        return ex

    async def fetch(self, key: tuple[str, str, int], data: bytes, method: str = "GET",
                    timeout_s: float | None = None, max_body: int = 1 << 20, head_only: bool = False,
                    retry: bool | None = None) -> tuple[int, list, bytes]:
        """The answer as (status, headers, body); raises :class:`UpstreamError`.

        A body over ``max_body`` bytes is an error (502). ``head_only``: return at the head with an
        empty body; the body is still read (and dropped) so that the connection can be reused.
        """
        sink = _Collect(self.loop.create_future(), max_body, head_only)
        ex = sink.ex = self.request(key, data, method, sink, timeout_s, "", False, retry)
        try:
            return await asyncio.shield(sink.future)
        except asyncio.CancelledError:
            ex.cancel()
            raise

    def close(self) -> None:
        if self._sweeping is not None:
            self._sweeping.cancel()
            self._sweeping = None
        for pool in self.pools.values():
            pool.close()


class UpstreamError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


class _Collect(Sink):
    """A sink that gathers the whole answer (small bodies: checks, correlated acknowledgements)."""

    __slots__ = ("future", "max_body", "head_only", "status", "headers", "parts", "size", "ex")

    def __init__(self, future: asyncio.Future, max_body: int, head_only: bool = False):
        self.future = future
        self.max_body = max_body
        self.head_only = head_only
        self.status = 0
        self.headers: list = []
        self.parts: list[bytes] = []
        self.size = 0
        self.ex: Exchange | None = None

    def head(self, status: int, head: bytes, fields: int, end: int, kind: int, length: int) -> None:
        self.status = status
        headers = self.headers = field_list(head, fields, end)
        if self.head_only and not self.future.done():
            self.future.set_result((status, headers, b""))
        elif kind == LENGTH and length > self.max_body:
            self.error(502, TOO_LARGE)
            self.ex.cancel()  # type: ignore[union-attr]

    def body(self, chunk: bytes) -> None:
        if self.head_only:
            return
        self.size += len(chunk)
        if self.size > self.max_body:
            self.error(502, TOO_LARGE)
            self.ex.cancel()  # type: ignore[union-attr]
            return
        self.parts.append(chunk)

    def end(self) -> None:
        if not self.future.done():
            self.future.set_result((self.status, self.headers, b"".join(self.parts)))

    def error(self, status: int, message: str) -> None:
        if not self.future.done():
            self.future.set_exception(UpstreamError(status, message))
