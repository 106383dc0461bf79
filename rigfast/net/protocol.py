"""HttpProtocol: one asyncio Protocol per TCP connection, parsing with httptools.

Requests are answered strictly in order (pipelining): a request is handled
only when the previous one is answered. A handler either answers at once,
returns a coroutine (e.g. an external authorization check) that answers
later, or turns the connection into a stream (SSE, WebSocket) or a parked
long-poll. Limits (head size, header count, body size, request time) are
enforced here and answered with 431/413/408; the request-time and idle
timeouts are checked by one sweeper for all connections, not a timer each.

Memory per connection is bounded whatever the client does: at most
``RIGFAST_MAX_PIPELINED`` parsed requests wait (input is parsed in slices, the
rest of a read waits as bytes with reading paused), and when the answers pile
up in the send buffer beyond ``RIGFAST_SEND_BUFFER_BYTES`` (a client that
pipelines and never reads) the connection stops reading and answering until
the buffer drains. A protocol error behind pipelined requests (or a parked
long-poll) is answered in order, after them. Public ports refuse connections
beyond ``RIGFAST_MAX_CONNECTIONS`` with 503, so file descriptors stay in
reserve for the internal API.
"""

from __future__ import annotations

import asyncio
import logging
from bisect import bisect_left
from time import monotonic
from typing import Any, Callable

import httptools

from rigfast import metrics
from rigfast._ext import request_head
from rigfast.errors import RigError
from rigfast.logs import RateLimitedLogger
from rigfast.wire.http1 import Request, chunked_end, encode_response

_access = logging.getLogger("rigfast.access")
log = logging.getLogger("rigfast.net")
_limited_log = RateLimitedLogger(log)

_INF = float("inf")
# Input is parsed at most this many bytes at a time, so a read full of pipelined
# requests queues at most RIGFAST_MAX_PIPELINED (plus one slice's worth) of them.
FEED_SLICE = 8192
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class ConnectionLimit:
    """Open connections shared by the public ports (HTTP and TLS) of one worker."""

    __slots__ = ("open", "max", "refused_answer", "lingering")

    # Refused connections whose request may still be arriving: closed after the 503 has had
    # time to be read (a close with unread input makes the kernel send a reset, which can
    # destroy the 503 before the client reads it). Few and brief, so a flood cannot eat the reserve.
    MAX_LINGERING = 64
    LINGER_S = 1.0

    def __init__(self, max_connections: int):
        self.open = 0
        self.lingering = 0
        self.max = max_connections
        self.refused_answer = encode_response(
            503,
            b"the gateway is at its connection limit (RIGFAST_MAX_CONNECTIONS=%d): retry later\n" % max_connections,
            headers=[(b"retry-after", b"1")],
            keep_alive=False,
        )


class _Stop(Exception):
    """Raised inside a parser callback to stop parsing after recording an error."""


class ServerState:
    """What every protocol of one listening port shares."""

    def __init__(self, cfg, router: Callable[["HttpProtocol", Request], Any], error_headers=(), limit: ConnectionLimit | None = None,
                 name: str = "inbound"):
        self.cfg = cfg
        self.limit = limit  # None: not counted (the internal API)
        self.name = name  # "inbound" or "internal": the request-duration metric's port label
        self.duration = metrics.REQUEST_DURATION.child(name)
        self.access_log = bool(getattr(cfg, "access_log", False))  # RIGFAST_ACCESS_LOG
        self.debug = log.isEnabledFor(logging.DEBUG)  # connection open/close lines (LOG_LEVEL=debug)
        self.router = router
        # added to every error answer (e.g. CORS on the public port): a list, or a function of the request
        self.error_headers = error_headers if callable(error_headers) else (lambda req, fixed=list(error_headers): fixed)
        self.loop = asyncio.get_event_loop()  # once per port: get_event_loop() per connection costs a getpid()
        self.http_conns: set[HttpProtocol] = set()
        self.all_conns: set[HttpProtocol] = set()
        self.max_head = cfg.max_header_bytes
        self.max_headers = cfg.max_headers
        self.max_body = cfg.max_body_bytes
        self.request_timeout = cfg.request_timeout_s
        self.keepalive_timeout = cfg.keepalive_timeout_s
        self.send_buffer = cfg.send_buffer_bytes
        # (proto, req) -> a body sink or None, asked when a request with a body has its head and nothing
        # else is in flight: a sink gets the body as it arrives (reverse proxy uploads), no size limit here
        self.early_body: Callable[["HttpProtocol", Request], Any] | None = None
        self.max_pipelined = max(cfg.max_pipelined, 1)
        self.draining = False  # set by the gateway's drain: answers close their connection
        # Protocol objects (with their parser) for new connections, taken from connections that became
        # SSE streams after one complete keep-alive request: a connect skips making both (see hand_over)
        self.spare: list[HttpProtocol] = []
        self.spare_max = cfg.spare_protocols  # RIGFAST_SPARE_PROTOCOLS

    def new_protocol(self) -> "HttpProtocol":
        """The protocol of a new connection (the listening server's factory): a spare one if there is one."""
        spare = self.spare
        return spare.pop() if spare else HttpProtocol(self)

    def busy_requests(self) -> int:
        """Requests being answered asynchronously (proxy, checks), parked long-polls not counted."""
        return sum(1 for p in self.http_conns
                   if (p.busy is not None and p.busy is not _PARKED) or p.flow is not None)  # flow: a proxied answer

    def sweep(self, now: float) -> None:
        """Answer 408 to requests that took too long; close idle keep-alive connections."""
        for proto in [p for p in self.http_conns if p.deadline < now]:
            proto.handle_timeout()


class HttpProtocol:
    """An asyncio protocol (not derived from ``asyncio.Protocol``, so that the compiled build is a C type)."""

    __slots__ = (
        "server", "loop", "transport", "parser", "req", "body_parts", "body_size", "head_size",
        "in_head", "hbuf", "hpos", "cpos", "cstate", "queue", "busy", "stream", "closing", "deadline", "error", "leftover",
        "reading_paused", "nbytes", "eof", "flow", "body_sink", "backlog", "write_blocked", "failed", "counted",
        "expect", "batch", "batch_bytes", "reusable", "keep", "peername",
    )

    def __init__(self, server: ServerState):
        self.server = server
        self.loop = server.loop
        self.parser = httptools.HttpRequestParser(self)
        self._reset()

    def _reset(self) -> None:
        """The state of a connection not yet made (all but the server and the parser)."""
        self.transport: asyncio.Transport | None = None
        self.peername: Any = None  # the client's address once asked for (peer)
        self.req: Request | None = None
        self.body_parts: list[bytes] = []
        self.body_size = 0
        self.head_size = 0
        self.in_head = False
        # The parser (llhttp) checks and frames requests; a head's request line and fields are read
        # from its bytes once the parser accepted it (no Python call per field). ``hbuf`` holds the
        # bytes being parsed (behind a head begun in the read before, if one was), ``hpos`` where in
        # them the current or next request starts (-1: inside a chunked body, whose framing is
        # followed from ``cpos`` with ``cstate``: see rigfast.wire.http1.chunked_end).
        self.hbuf: Any = b""
        self.hpos = 0
        self.cpos = 0
        self.cstate: list | None = None
        self.queue: list[Request] = []  # pipelined requests: usually 0 or 1, a list is smaller than a deque
        self.busy: asyncio.Task | None = None
        self.stream: Any = None  # SseSession / WsSession once the connection streams
        self.closing = False
        self.deadline = _INF
        self.error: tuple[int, str] | None = None
        self.leftover = b""
        self.reading_paused = False
        self.eof = False
        # while a parked request is answered piece by piece (the reverse proxy streaming an upstream's
        # answer): told when the client's send buffer fills and drains, and when the client leaves
        self.flow: Any = None
        self.body_sink: Any = None  # the current request's body goes there (see ServerState.early_body)
        self.backlog: bytes | None = None  # input not parsed yet: waits for the queue / send buffer to drain
        self.write_blocked = False  # the send buffer is over its limit: no more answers until it drains
        self.failed: tuple[int, str] | None = None  # a protocol error, answered after the requests before it
        self.counted = 0  # 1: counted in the public connection limit; 2: refused, lingering
        self.expect = 0  # 1: the current request waits for "100 Continue"
        self.batch: list[bytes] | None = None  # while one read's requests are answered: the answers (see _send)
        self.batch_bytes = 0
        self.reusable = False  # handed over to a stream with the parser between requests (see hand_over)
        self.keep = False  # the last request's head: keep-alive, no upgrade

    # -- asyncio callbacks --------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        limit = self.server.limit
        if limit is not None:
            if limit.open >= limit.max:
                self.closing = True
                metrics.CONNECTIONS_REFUSED.inc(1, "max_connections")
                metrics.REQUESTS_REJECTED.inc(1, "503")
                _limited_log.log(
                    logging.WARNING, "max-connections",
                    "refusing connections: %d open, the limit RIGFAST_MAX_CONNECTIONS is %d", limit.open, limit.max,
                )
                transport.write(limit.refused_answer)  # type: ignore[attr-defined]
                if limit.lingering < limit.MAX_LINGERING and transport.can_write_eof():  # type: ignore[attr-defined]
                    limit.lingering += 1
                    self.counted = 2
                    transport.write_eof()  # type: ignore[attr-defined]
                    self.loop.call_later(limit.LINGER_S, transport.abort)  # type: ignore[attr-defined]
                else:
                    transport.close()
                return
            limit.open += 1
            self.counted = 1
        transport.set_write_buffer_limits(high=self.server.send_buffer)  # type: ignore[attr-defined]
        if self.server.debug:
            log.debug("connection open on %s from %s", self.server.name, self.peer)
        self.server.all_conns.add(self)
        self.server.http_conns.add(self)
        self.deadline = self.loop.time() + self.server.keepalive_timeout

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        if self.server.debug:
            log.debug("connection closed on %s from %s%s", self.server.name, self.peer,
                      f" ({exc})" if exc is not None else "")
        if self.counted:
            if self.counted == 1:
                self.server.limit.open -= 1  # type: ignore[union-attr]
            else:
                self.server.limit.lingering -= 1  # type: ignore[union-attr]
            self.counted = 0
        self.server.http_conns.discard(self)
        self.server.all_conns.discard(self)
        if self.stream is not None:
            self.stream.connection_lost()
        if self.flow is not None:
            self.flow.connection_lost()
        if self.busy is not None:
            self.busy.cancel()
        self.queue.clear()
        self.backlog = None

    @property
    def peer(self):
        """The client's address (looked up once, when needed: logging, X-Forwarded-For of each proxied request)."""
        peer = self.peername
        if peer is None and self.transport is not None:
            peer = self.peername = self.transport.get_extra_info("peername")
        return peer

    def pause_writing(self) -> None:
        if self.flow is not None:
            self.flow.pause_writing()  # back-pressure: the producer of this answer waits
            return
        if self.stream is not None:
            # The client does not read: its send buffer is full. Slow-consumer policy.
            self.stream.handle_slow_consumer()
            return
        # Request/response: answers pile up unread (a client pipelining without reading).
        # Answer nothing more and read nothing more until the buffer drains.
        self.write_blocked = True
        self._pause_reading()

    def resume_writing(self) -> None:
        if self.flow is not None:
            self.flow.resume_writing()
        if self.write_blocked:
            self.write_blocked = False
            if not self.closing:
                self.run_queue()

    def _pause_reading(self) -> None:
        if not self.closing:
            # every time, not only on the first: the proxy's relay may have resumed it meanwhile
            self.reading_paused = True
            self.transport.pause_reading()  # type: ignore[union-attr]

    def data_received(self, data: bytes) -> None:
        if self.stream is not None:
            self.stream.data_received(data)
            return
        if self.closing or self.failed is not None:
            return
        if self.backlog is not None:  # arrived while reading was being paused
            self.backlog += data
            return
        # the answers to this read's requests leave in one write (pipelining: one syscall, not one each)
        self.batch = []
        try:
            self._feed(data)
            self.run_queue()
        finally:
            self._write_batch()
        if self.reusable:  # this object no longer serves its connection: it may serve a new one
            self.reusable = False
            spare = self.server.spare
            if len(spare) < self.server.spare_max:
                self._reset()
                spare.append(self)

    def _send(self, data: bytes) -> None:
        """Write ``data`` now, or with the rest of the batch while one read's requests are answered.
        A batch over RIGFAST_SEND_BUFFER_BYTES leaves at once (the send buffer's bound)."""
        batch = self.batch
        if batch is None:
            self.transport.write(data)  # type: ignore[union-attr]
            return
        batch.append(data)
        self.batch_bytes += len(data)
        if self.batch_bytes > self.server.send_buffer:
            self._write_batch()
            self.batch = []

    def _write_batch(self) -> None:
        """What waits in the batch goes out (before anything else writes to or closes the transport)."""
        batch = self.batch
        if batch is not None:
            self.batch = None
            self.batch_bytes = 0
            if batch and self.transport is not None:
                self.transport.write(batch[0] if len(batch) == 1 else b"".join(batch))  # type: ignore[union-attr]

    def _feed(self, data: bytes) -> None:
        """Parse ``data``; what does not fit in the pipelining bound waits in ``backlog``."""
        if len(data) <= FEED_SLICE:
            self._parse(data, data, 0)
            if len(self.queue) >= self.server.max_pipelined:
                self._pause_reading()  # a pipelining client far ahead of us waits
            return
        view = memoryview(data)
        off, n = 0, len(data)
        while off < n:
            if len(self.queue) >= self.server.max_pipelined or self.write_blocked:
                self.backlog = bytes(view[off:])
                self._pause_reading()
                return
            end = off + FEED_SLICE
            if not self._parse(view[off:end], view, off):
                return
            off = end
            if self.queue and self.busy is None:
                self.run_queue()  # answer what is complete before parsing further
            if self.closing or self.stream is not None:
                return

    def _parse(self, chunk, data, base: int) -> bool:
        """Feed one slice to the parser. False: stop feeding (error, upgrade)."""
        if self.in_head or self.req is None:
            self.head_size += len(chunk)
        if self.in_head:  # a head begun in the bytes before goes on here: read whole from one buffer
            self.hbuf = bytes(self.hbuf[self.hpos:]) + bytes(chunk)
            self.hpos = 0
        else:
            self.hbuf = chunk
        try:
            self.parser.feed_data(chunk)
        except httptools.HttpParserUpgrade as exc:
            offset = exc.args[0] if exc.args else len(chunk)
            self.leftover = bytes(data[base + offset:])
            if self.req is not None:  # headers done; the upgrade request carries no body
                self._finish_request()
            return False
        except (httptools.HttpParserError, _Stop):
            status, message = self.error or (400, "malformed HTTP request")
            self.error = None
            self._protocol_error(status, message)
            return False
        if self.in_head:
            if self.head_size > self.server.max_head:
                self._protocol_error(431, "request header fields too large")
                return False
            return True  # the head's start is kept for the next bytes
        # the next request starts where the last one's body ends: past these bytes now
        buf = self.hbuf
        self.hbuf = b""
        if self.hpos < 0:  # inside a chunked body
            end = chunked_end(buf if type(buf) is bytes else bytes(buf), self.cpos, self.cstate)
            if end < 0:
                self.cpos = 0
                return True
            self.hpos = end
            self.cstate = None
        self.hpos = max(self.hpos - len(buf), 0)
        return True

    def _protocol_error(self, status: int, message: str) -> None:
        """Answered and closed after the requests already queued (pipelining order)."""
        self.req = None
        self.in_head = False
        self.failed = (status, message)
        self.backlog = None
        self._pause_reading()

    def eof_received(self) -> bool | None:
        # A streaming client that closes its side is gone: end the session.
        # An HTTP client that half-closes after its requests still gets its answers.
        if self.stream is not None or (not self.queue and self.busy is None and self.backlog is None and self.failed is None):
            return None
        self.eof = True
        return True

    # -- httptools callbacks --------------------------------------------------
    def on_message_begin(self) -> None:
        if self.hpos < 0:  # after a chunked body: the request starts where that body ended
            buf = self.hbuf
            if type(buf) is not bytes:
                buf = self.hbuf = bytes(buf)
            self.hpos = chunked_end(buf, self.cpos, self.cstate)
            self.cstate = None
        self.req = Request()
        self.in_head = True
        self.body_parts = []
        self.body_size = 0
        self.expect = 0
        self.deadline = self.loop.time() + self.server.request_timeout

    def on_headers_complete(self) -> None:
        self._head(self.req)

    def _head(self, req: Request) -> None:
        """The head the parser accepted, read from its bytes (rigfast._ext.heads.request_head)."""
        self.in_head = False
        buf = self.hbuf
        if type(buf) is not bytes:
            buf = self.hbuf = bytes(buf)
        start = self.hpos
        found = request_head(buf, start) if start >= 0 else None
        if found is None:  # the parser accepted a head that is not in the bytes: cannot happen
            self.error = (500, "internal error: request head not found")
            raise _Stop
        target, headers, end, length, transfer, nhost, expect = found
        if len(headers) > self.server.max_headers:
            self.error = (431, f"too many header fields (limit {self.server.max_headers})")
            raise _Stop
        if end + 2 - start > self.server.max_head:
            self.error = (431, f"request header fields too large (limit {self.server.max_head} bytes)")
            raise _Stop
        # where the next request starts: after this one's body (a request has one only with a length or chunked)
        if transfer:
            self.hpos = -1
            self.cpos = end + 2
            self.cstate = [0, 0]
        else:
            self.hpos = end + 2 + (length if length > 0 else 0)
        req.set_url(target)
        req.headers = headers
        req.method = self.parser.get_method().decode("ascii", "replace")
        req.keep_alive = self.parser.should_keep_alive()
        req.upgrade = self.parser.should_upgrade()
        self.keep = req.keep_alive and not req.upgrade  # the parser takes another request after this one
        if nhost != 1:
            # RFC 9112 3.2: an HTTP/1.1 request without Host, or any with several, is 400
            if nhost > 1:
                self.error = (400, "more than one Host header field")
                raise _Stop
            if self.parser.get_http_version() == "1.1":
                self.error = (400, "missing Host header field (required in HTTP/1.1)")
                raise _Stop
        if expect:
            self.expect = expect
            if expect == 2:
                self.error = (417, "unsupported Expect header field: only 100-continue is known")
                raise _Stop
            if self.parser.get_http_version() == "1.0":
                expect = self.expect = 0  # RFC 9110 10.1.1: ignored in HTTP/1.0
        early = self.server.early_body
        if (early is not None and self.busy is None and not self.queue and self.stream is None
                and (length >= 0 or transfer)):
            self.body_sink = early(self, req)
            if self.body_sink is not None:
                if expect:
                    self.expect = 0
                    self._send(CONTINUE)
                return
        if length > self.server.max_body:
            self._body_too_large()  # refused before the body: no 100 Continue
        if expect and not self.queue and self.busy is None:
            self.expect = 0
            self._send(CONTINUE)
        # else: sent when the answers before this request are out (run_queue)

    def on_body(self, body: bytes) -> None:
        if self.body_sink is not None:
            self.body_sink.body(body)
            return
        self.body_size += len(body)
        if self.body_size > self.server.max_body:
            self._body_too_large()
        self.body_parts.append(body)

    def _body_too_large(self) -> None:
        self.error = (413, f"request body too large (limit {self.server.max_body} bytes)")
        raise _Stop

    def on_message_complete(self) -> None:
        sink = self.body_sink
        if sink is not None:  # handled already (at its head): not queued
            self.body_sink = None
            self.req = None
            self.in_head = False
            self.head_size = 0
            sink.end()
            return
        self._finish_request()

    def _finish_request(self) -> None:
        req = self.req
        if req is None:
            return
        self.req = None
        self.in_head = False
        self.head_size = 0
        self.expect = 0
        if self.body_parts:
            req.body = self.body_parts[0] if len(self.body_parts) == 1 else b"".join(self.body_parts)
            self.body_parts = []
        req.t0 = monotonic()
        self.queue.append(req)
        self.deadline = _INF

    # -- request processing ---------------------------------------------------
    def run_queue(self) -> None:
        while self.queue and self.busy is None and self.stream is None and not self.closing and not self.write_blocked:
            req = self.queue.pop(0)
            try:
                result = self.server.router(self, req)
            except RigError as exc:
                self.respond_error(req, exc.status, exc.message)
                continue
            except Exception:  # noqa: BLE001 - never let a handler bug escape the callback
                log.exception("handler failed for %s %s", req.method, req.path)
                self.respond_error(req, 500, "internal error")
                continue
            if result is not None:
                self.busy = self.loop.create_task(self._run_async(req, result))
                return
        if self.queue or self.busy is not None or self.stream is not None or self.closing or self.write_blocked:
            return
        # every request so far is answered
        if self.failed is not None:
            status, message = self.failed
            self.failed = None
            self.fail(status, message)
            return
        if self.backlog is not None:
            data, self.backlog = self.backlog, None
            self._feed(data)
            self.run_queue()
            return
        if self.eof:
            self.close()
            return
        if self.req is None:
            self.deadline = self.loop.time() + self.server.keepalive_timeout
        elif self.expect == 1:
            self.expect = 0
            self._send(CONTINUE)
        if self.reading_paused:
            self.reading_paused = False
            self.transport.resume_reading()  # type: ignore[union-attr]

    async def _run_async(self, req: Request, coro) -> None:
        try:
            await coro
        except RigError as exc:
            self.respond_error(req, exc.status, exc.message)
        except asyncio.CancelledError:
            return
        except Exception:  # noqa: BLE001
            log.exception("async handler failed for %s %s", req.method, req.path)
            self.respond_error(req, 500, "internal error")
        self.busy = None
        self.run_queue()

    def park(self) -> None:
        """The current request is answered later (long-poll): hold the queue, no deadline."""
        self.busy = self.busy or _PARKED
        self.deadline = _INF

    def unpark(self) -> None:
        if self.busy is _PARKED:
            self.busy = None
        if not self.closing:
            self.run_queue()

    def write(self, data: bytes) -> None:
        if not self.closing:
            self._send(data)

    def respond(
        self,
        req: Request,
        status: int,
        body: bytes = b"",
        content_type: bytes | None = b"text/plain; charset=utf-8",
        headers: list[tuple[bytes, bytes]] | tuple = (),
    ) -> None:
        if self.closing:
            return
        keep = req.keep_alive and not self.server.draining
        self._send(encode_response(status, body, content_type, headers, keep))
        d = monotonic() - req.t0
        h = self.server.duration
        h.counts[bisect_left(h.bounds, d)] += 1
        h.total += d
        if status >= 400:
            metrics.REQUESTS_REJECTED.inc(1, str(status))
        if self.server.access_log:
            p = self.peer
            peer = f"{p[0]}:{p[1]}" if isinstance(p, tuple) and len(p) >= 2 else str(p)
            _access.info("%s %s %s %d %d %.2fms", peer, req.method, req.url.decode("latin-1"), status, len(body),
                         d * 1000, extra={"peer": peer, "method": req.method, "path": req.path, "status": status,
                                          "bytes": len(body), "ms": round(d * 1000, 3), "port": self.server.name})
        if not keep:
            self.close()

    def respond_error(self, req: Request, status: int, message: str, headers=()) -> None:
        self.respond(req, status, message.encode() + b"\n", headers=list(headers) + self.server.error_headers(req))

    def fail(self, status: int, message: str) -> None:
        """A protocol-level error: answer it and close the connection."""
        if self.closing or self.transport is None:
            return
        metrics.REQUESTS_REJECTED.inc(1, str(status))
        self._send(encode_response(status, message.encode() + b"\n", keep_alive=False))
        self.close()

    def handle_timeout(self) -> None:
        if self.req is not None or self.in_head:
            self.fail(408, "request timeout: the request was not complete in time")
        else:
            self.close()

    def become_stream(self, stream: Any) -> None:
        """Hand the connection to a streaming session (SSE/WS): no more HTTP parsing.

        The parser (~0.9 KiB) and request buffers are dropped: an idle stream
        should cost as little memory as possible (docs/targets.md T3).
        """
        self._write_batch()  # the answers before this request go first
        self.stream = stream
        self.deadline = _INF
        self.server.http_conns.discard(self)
        self.queue = _EMPTY
        self.parser = None
        self.req = None
        self.body_parts = _EMPTY
        self.hbuf = b""

    def hand_over(self, stream: Any, reads: bool = True) -> "StreamConn":
        """Like :meth:`become_stream`, then the transport's protocol becomes a small
        :class:`StreamConn` and this object is dropped: an idle WebSocket stream keeps ~70 bytes
        of connection state instead of ~320 (docs/targets.md T3). ``reads=False``: the client has
        nothing to say (SSE): ``stream`` itself becomes the transport's protocol (no StreamConn)."""
        # Reused for a new connection (when this read is done, see data_received): an SSE stream's
        # protocol whose parser stands between requests (the connect was one whole keep-alive
        # request, nothing after it), so the parser starts the next connection's first request.
        parser = self.parser
        reusable = (not reads and self.req is None and not self.queue and self.backlog is None and self.failed is None
                    and self.busy is None and self.body_sink is None and not self.leftover and parser is not None
                    and self.keep)
        self.become_stream(stream)
        if reusable:
            self.parser = parser
            self.reusable = True
        # a deaf stream (SSE) is its transport's protocol itself: it drops what the client sends and
        # gives the connection limit's count back when the connection is lost (see sessions.SseSession)
        conn = StreamConn(self.transport, stream, self.server, self.counted) if reads else stream
        self.counted = 0  # the connection limit's count goes with the transport
        self.closing = True  # this object writes nothing more
        self.server.all_conns.discard(self)  # the hub ends the stream at stop (its session)
        self.transport.set_protocol(conn)  # type: ignore[union-attr]
        return conn

    def close(self) -> None:
        if not self.closing:
            self._write_batch()
            self.closing = True
            self.server.http_conns.discard(self)
            if self.transport is not None:
                self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.closing = True
            self.batch = None  # an aborted connection sends nothing more
            self.transport.abort()


_EMPTY: list = []  # shared, never appended to (streams no longer parse)


class StreamConn(asyncio.Protocol):
    """The protocol of a connection handed to a streaming session that reads (WebSocket): the
    client's bytes go to the session, the session writes and closes through this."""

    __slots__ = ("transport", "stream", "server", "counted", "closing")

    def __init__(self, transport, stream: Any, server: ServerState, counted: int):
        self.transport = transport
        self.stream = stream
        self.server = server
        self.counted = counted  # 1: counted in the public connection limit (see HttpProtocol)
        self.closing = False

    @property
    def peer(self):
        return self.transport.get_extra_info("peername")

    def data_received(self, data: bytes) -> None:
        self.stream.data_received(data)

    def eof_received(self) -> None:
        return None  # a streaming client that closes its side is gone

    def pause_writing(self) -> None:
        self.stream.handle_slow_consumer()  # the client does not read: slow-consumer policy

    def resume_writing(self) -> None:
        pass

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        server = self.server
        if server.debug:
            log.debug("connection closed on %s from %s%s", server.name, self.peer, f" ({exc})" if exc is not None else "")
        if self.counted:
            self.counted = 0
            server.limit.open -= 1  # type: ignore[union-attr]
        self.stream.connection_lost()

    def write(self, data: bytes) -> None:
        if not self.closing:
            self.transport.write(data)

    def close(self) -> None:
        if not self.closing:
            self.closing = True
            self.transport.close()

    def abort(self) -> None:
        self.closing = True
        self.transport.abort()


class _Parked:
    def cancel(self) -> None:
        pass


_PARKED: Any = _Parked()
