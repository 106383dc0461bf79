"""Frontend sessions: what the hub delivers to.

Every session is a :class:`Recipient` of the delivery loop (``kind``, an
``outbox`` list the hub appends encoded frames to, ``dirty``, ``closed``,
``transport``) and has ``slot``, ``token``, ``subscriptions`` and
``flush``/``heartbeat``/``abort``. :class:`StreamSession` is the common base
of the two that own a connection (:class:`SseSession`, :class:`WsSession`);
a :class:`LongPollSession` outlives its requests and holds a bounded buffer
between polls.
"""

from __future__ import annotations

import logging
import random
import time
from collections import deque
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import orjson
from wsproto import ConnectionType
from wsproto.connection import Connection, ConnectionState
from wsproto.events import BytesMessage, CloseConnection, Ping, TextMessage
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from rigfast import metrics
from rigfast._ext import Recipient
from rigfast.hub.hub import KIND_NAMES, LONGPOLL, SSE, WS

if TYPE_CHECKING:
    from rigfast.hub.hub import Hub
    from rigfast.net.protocol import HttpProtocol

log = logging.getLogger("rigfast.sessions")

SSE_HEARTBEAT = b": heartbeat\n\n"
WS_PING = b"\x89\x00"  # unmasked ping frame, empty payload
_NONE: tuple = ()  # shared empty value for sessions without claims or subscriptions
ONE_WAY_REASON = "This WebSocket endpoint cannot be used for two-way communication."
DRAIN_REASON = "Server is shutting down; reconnect."
# SSE reconnection delay sent before a drain closes a stream: jittered so that the clients of one
# node do not all come back in the same instant (the closes are spread over RIGFAST_DRAIN_S too)
DRAIN_RETRY_MS = (500, 2500)


class Session(Recipient):
    """``kind``, ``outbox``, ``dirty``, ``closed`` and ``transport`` live in :class:`Recipient`
    (C fields in the compiled build), the rest here."""

    __slots__ = ("hub", "slot", "token", "subscriptions", "claims", "session_ids")

    KIND = SSE
    # The gateway's drain (SIGTERM) calls drain() on every session: at once on those with
    # DRAIN_FIRST (requests waiting for an answer: long-polls), spread over RIGFAST_DRAIN_S on the
    # others. drain() ends the session the way its protocol says "this server goes away".
    DRAIN_FIRST = False
    COUNTED = True  # counted as a connection of its kind (a Phoenix channel is not)

    def __init__(self, hub: "Hub", token: str, claims: list[dict] | None = None, session_ids: tuple[str, ...] = ()):
        self.kind = self.KIND
        self.transport = None
        self.hub = hub
        self.slot = hub.new_slot()
        self.token = token
        self.subscriptions: list = _NONE
        self.outbox: list[Any] | None = None  # None while nothing waits (an idle session keeps no list)
        self.dirty = False
        self.claims = claims or _NONE
        self.session_ids = session_ids
        self.closed = False

    def enqueue(self, frame: Any) -> None:
        if self.outbox is None:
            self.outbox = [frame]
        else:
            self.outbox.append(frame)

    def indexed(self, subs: list) -> list:
        """The subscriptions the hub's index holds for this session (all of them)."""
        return subs

    def end(self) -> None:
        if not self.closed:
            self.closed = True
            self.hub.unregister(self)
            self.outbox = None

    def drain(self) -> None:
        self.abort()


class OwnsConnection:
    """What a session that owns its connection does when that connection fails (mixed into
    :class:`StreamSession` and the Phoenix WebSocket). The connection is ``proto`` (a StreamConn:
    ``write``, ``close``, ``abort``, ``peer``), reached through ``conn_*`` and ``peer``, which
    :class:`SseSession` (its own connection's protocol) implements on its transport instead."""

    __slots__ = ()

    def connection_lost(self) -> None:
        self.end()

    def handle_slow_consumer(self) -> None:
        metrics.SLOW_CONSUMER_DISCONNECTS.inc(1, KIND_NAMES[self.kind])
        log.info("slow consumer %s: send buffer full, disconnecting", self.peer)
        self.abort()

    def abort(self) -> None:
        self.end()
        self.conn_abort()

    @property
    def peer(self):
        return self.proto.peer

    def conn_write(self, data: bytes) -> None:
        self.proto.write(data)

    def conn_close(self) -> None:
        self.proto.close()

    def conn_abort(self) -> None:
        self.proto.abort()


class WsClosing:
    """The WebSocket closing handshake of a session with ``ws`` (wsproto) and ``proto``
    (mixed into :class:`WsSession` and the Phoenix WebSocket); ``protocol_error`` and
    ``close_with`` are the session's."""

    __slots__ = ()

    def close_event(self, ev: CloseConnection) -> None:
        """wsproto's CloseConnection: the client's close (answered), or a protocol error."""
        if self.ws.state is ConnectionState.OPEN:
            # not a close frame: wsproto reports a protocol error this way (1002, 1007 for bad UTF-8)
            self.protocol_error(ev.code, ev.reason)
            return
        if self.ws.state is ConnectionState.REMOTE_CLOSING:
            self.proto.write(self.ws.send(ev.response()))
        self.end()
        self.proto.close()

    def close_for_error(self, code: int, reason: str) -> None:
        """Close for a client protocol error: 1002, 1007 or 1009 (anything else becomes 1002)."""
        if code not in (1002, 1007, 1009):
            code = 1002
        self.close_with(code, (reason or "protocol error")[:120])

    def send_close(self, code: int, reason: str) -> None:
        """Write the close frame, then end the session and close the connection."""
        try:
            self.proto.write(self.ws.send(CloseConnection(code=code, reason=reason)))
        except LocalProtocolError:  # wsproto's state machine refuses: write the frame ourselves
            self.proto.write(close_frame(code, reason))
        self.end()
        self.proto.close()


class StreamSession(OwnsConnection, Session):
    """A session that owns its connection: frames go straight to the transport. The HTTP
    connection it came from hands its transport over (see :meth:`take_over`)."""

    __slots__ = ()

    def __init__(self, hub, token, proto: "HttpProtocol", claims: list[dict] | None = None,
                 session_ids: tuple[str, ...] = ()):
        # named, not super() with **kw: a connect's session is made without a keyword dict or a super object
        Session.__init__(self, hub, token, claims, session_ids)
        self.transport = proto.transport
        self.take_over(proto)

    def take_over(self, proto: "HttpProtocol") -> None:
        raise NotImplementedError

    def flush(self) -> None:
        out = self.outbox
        self.outbox = None
        if not out or self.closed:
            return
        self.transport.write(out[0] if len(out) == 1 else b"".join(out))

    def close(self, final: bytes = b"") -> None:
        """Graceful end: write what is pending (and ``final``), then close."""
        self.flush()
        if final:
            self.conn_write(final)
        self.end()
        self.conn_close()


def _drop(data: bytes) -> None:
    pass


class SseSession(StreamSession):
    """An SSE stream. The session is its connection's asyncio protocol too (no StreamConn
    between: ~80 bytes less per idle stream, docs/targets.md T3); what the client sends is
    dropped unread. ``server`` (the port's ServerState) until the connection is lost."""

    __slots__ = ("server",)
    KIND = SSE

    def take_over(self, proto: "HttpProtocol") -> None:
        self.server = proto.server
        proto.hand_over(self, False)

    # -- the connection's protocol (the transport calls these) -----------------------------------
    # a plain function, not a method: the transport keeps no bound method per connection (~64 bytes)
    data_received = staticmethod(_drop)  # type: ignore[assignment]

    def eof_received(self) -> None:
        return None  # a client that closes its side is gone: the transport closes

    def pause_writing(self) -> None:
        self.handle_slow_consumer()  # the client does not read: slow-consumer policy

    def resume_writing(self) -> None:
        pass

    def connection_lost(self, exc: Exception | None = None) -> None:
        server = self.server
        if server is not None:
            self.server = None
            if server.debug:
                log.debug("connection closed on %s from %s%s", server.name, self.peer,
                          f" ({exc})" if exc is not None else "")
            if server.limit is not None:  # a stream's connection is counted wherever the port counts
                server.limit.open -= 1
        self.end()

    # -- the connection, as the session uses it -------------------------------------------------
    @property
    def peer(self):
        return self.transport.get_extra_info("peername")

    def conn_write(self, data: bytes) -> None:
        if not self.transport.is_closing():
            self.transport.write(data)

    def conn_close(self) -> None:
        self.transport.close()

    def conn_abort(self) -> None:
        self.transport.abort()

    def heartbeat(self) -> None:
        if not self.outbox:
            self.transport.write(SSE_HEARTBEAT)

    def drain(self) -> None:
        """What is pending, a reconnection delay for EventSource, then the end of the stream."""
        self.close(b"retry: %d\n\n" % random.randint(*DRAIN_RETRY_MS))


class WsSession(WsClosing, StreamSession):
    """A WebSocket connection. Client protocol errors (unmasked or reserved-bit frames, bad
    opcodes, fragmented control frames, bad close codes, over-long lengths) are answered with
    a close frame: 1002, 1007 for text that is not UTF-8, 1009 for a message larger than
    RIGFAST_WS_MAX_MESSAGE_BYTES; then the connection closes.

    The frame parser (wsproto's Connection, ~2 KiB of objects) is made when the client first sends
    something other than pongs (docs/targets.md T3): an idle client only answers the heartbeat
    pings, and a read made of whole masked pong frames (see :func:`only_pongs`) is dropped at once.
    Those reads end on a frame boundary, so the parser, when it comes, starts on one."""

    __slots__ = ("proto", "parser", "msg_bytes", "max_message")
    KIND = WS

    def __init__(self, hub, token, proto, max_message: int = 65536, claims: list[dict] | None = None,
                 session_ids: tuple[str, ...] = ()):
        StreamSession.__init__(self, hub, token, proto, claims, session_ids)
        self.parser: Connection | None = None
        self.msg_bytes = 0  # size of the client message being received (only counted, never kept)
        self.max_message = max_message

    def take_over(self, proto: "HttpProtocol") -> None:
        self.proto = proto.hand_over(self, True)

    @property
    def ws(self) -> Connection:
        """The connection's wsproto state machine, made on first use."""
        if self.parser is None:
            self.parser = Connection(ConnectionType.SERVER)
        return self.parser

    def heartbeat(self) -> None:
        self.transport.write(WS_PING)

    def drain(self) -> None:
        self.close_with(1001, DRAIN_REASON)  # 1001 "going away"

    def data_received(self, data: bytes) -> None:
        if self.closed or (self.parser is None and only_pongs(data)):
            return
        try:
            self.ws.receive_data(data)
            for ev in self.ws.events():
                if isinstance(ev, Ping):
                    self.proto.write(self.ws.send(ev.response()))
                elif isinstance(ev, (TextMessage, BytesMessage)):
                    self.msg_bytes += len(ev.data.encode() if isinstance(ev.data, str) else ev.data)
                    if self.max_message and self.msg_bytes > self.max_message:
                        self.close_with(1009, f"message too big (limit {self.max_message} bytes)")
                        return
                    if ev.message_finished:
                        self.msg_bytes = 0
                        self.message(ev)
                        if self.closed:
                            return
                elif isinstance(ev, CloseConnection):
                    self.close_event(ev)
                    return
        except (RemoteProtocolError, LocalProtocolError) as exc:
            self.protocol_error(1002, str(exc))

    def message(self, ev) -> None:
        """A complete client message: this endpoint is one-way."""
        self.close_with(1000, ONE_WAY_REASON)

    def protocol_error(self, code: int, reason: str) -> None:
        log.debug("websocket protocol error from %s: %s", self.proto.peer, reason)
        self.close_for_error(code, reason)

    def close_with(self, code: int, reason: str) -> None:
        if self.closed:
            return
        self.flush()
        self.send_close(code, reason)


def only_pongs(data: bytes) -> bool:
    """``data`` is one or more whole pong frames from a client (FIN, no reserved bits, masked,
    payload of at most 125 bytes), nothing else: what an idle client sends (RFC 6455 5.5.3)."""
    i, n = 0, len(data)
    if n == 0:
        return False
    while i < n:
        if data[i] != 0x8A or i + 1 >= n:
            return False
        length = data[i + 1] ^ 0x80  # the mask bit must be set: a payload length then stays below 128
        if length > 125:
            return False
        i += 6 + length
    return i == n


def close_frame(code: int, reason: str = "") -> bytes:
    """An unmasked server close frame (RFC 6455 5.5.1); the reason is cut to fit 125 bytes."""
    payload = code.to_bytes(2, "big") + reason.encode("utf-8")[:123].decode("utf-8", "ignore").encode("utf-8")
    return bytes((0x88, len(payload))) + payload


FIRST_EVENT = "first_event"  # the long-polling cursor before any event


def cookie_attributes(same_site: str, secure: bool) -> bytes:
    """Attributes of the long-polling cookies: scripts cannot read them (HttpOnly), other sites
    do not send them along (SameSite), and on TLS they never travel in clear (Secure)."""
    attrs = b"; path=/; HttpOnly"
    if same_site:
        attrs += b"; SameSite=" + same_site.encode()
    if secure or same_site == "None":
        attrs += b"; Secure"
    return attrs


class LongPollSession(Session):
    """A long-polling session: the last events, read like a cursor, bounded by count
    (RIGFAST_LONGPOLL_BUFFER) and bytes (RIGFAST_LONGPOLL_BUFFER_BYTES), oldest dropped first.

    As in RIG, a poll names the newest event it has seen (the ``last_event_id`` cookie: the
    CloudEvent ``id``, gateway events included) and gets what came after it. Answering does not
    drain the buffer, so a client whose answer was lost polls again with its old cookie and gets
    the same events again; an id the buffer no longer holds (or ``"first_event"``) gets
    everything it holds. A session that never polls after the one that created it expires after
    ``first_ttl`` (RIGFAST_LONGPOLL_FIRST_POLL_TTL_S), one that polled after ``ttl``."""

    __slots__ = (
        "buffer", "buffer_bytes", "limits", "waiter", "waiter_req", "waiter_last", "timer", "last_poll",
        "ttl", "first_ttl", "polled", "poll_timeout", "cors", "cookie_attrs",
    )
    KIND = LONGPOLL
    DRAIN_FIRST = True

    def __init__(self, hub, token, buffer_size: int, ttl_s: float, poll_timeout_s: float,
                 max_bytes: int = 0, first_ttl_s: float | None = None, cookie_attrs: bytes = b"; path=/", **kw):
        super().__init__(hub, token, **kw)
        self.buffer: deque = deque()
        self.buffer_bytes = 0
        self.limits = (max_bytes, max(buffer_size, 1))  # (bytes, events); 0 bytes: no byte limit
        self.waiter: "HttpProtocol | None" = None
        self.waiter_req = None
        self.waiter_last = FIRST_EVENT
        self.timer = None
        self.last_poll = time.monotonic()
        self.ttl = ttl_s
        self.first_ttl = ttl_s if first_ttl_s is None else min(first_ttl_s, ttl_s)
        self.polled = False
        self.poll_timeout = poll_timeout_s
        self.cors: list = []
        self.cookie_attrs = cookie_attrs

    def events_after(self, last_event_id: str) -> list:
        """The buffered events after the newest one with id ``last_event_id`` (all when none has it)."""
        buf = self.buffer
        for i in range(len(buf) - 1, -1, -1):
            if buf[i].id == last_event_id:
                return list(buf)[i + 1:] if i + 1 < len(buf) else []
        return list(buf)

    def _has_news(self) -> bool:
        return bool(self.buffer) and self.buffer[-1].id != self.waiter_last

    def flush(self) -> None:
        if self.outbox:
            buf = self.buffer
            max_bytes, max_events = self.limits
            n = self.buffer_bytes
            for e in self.outbox:
                buf.append(e)
                n += len(e.json)
            self.outbox = None
            while len(buf) > 1 and (len(buf) > max_events or (max_bytes and n > max_bytes)):  # the newest always stays
                n -= len(buf.popleft().json)
            self.buffer_bytes = n
            if self.waiter is not None and self._has_news():
                self.answer()

    def poll(self, proto: "HttpProtocol", req, cors_headers: list, last_event_id: str = FIRST_EVENT) -> None:
        self.last_poll = time.monotonic()
        self.polled = True
        if self.waiter is not None:  # a second concurrent poll replaces the first
            self.answer()
        self.cors = cors_headers
        self.waiter, self.waiter_req, self.waiter_last = proto, req, last_event_id or FIRST_EVENT
        if self._has_news():
            self.answer()
            return
        proto.park()
        self.timer = proto.loop.call_later(self.poll_timeout, self.answer)

    def _take_waiter(self) -> tuple:
        """(connection, request) of the waiting poll, which no longer waits; its timer is cancelled."""
        waiting = self.waiter, self.waiter_req
        self.waiter = self.waiter_req = None
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        return waiting

    def answer(self) -> None:
        last = self.waiter_last
        proto, req = self._take_waiter()
        if proto is None or proto.closing:
            return
        events = self.events_after(last)
        if events:
            last = events[-1].id
        body = b'{"last_event_id":%s,"events":[%s]}' % (orjson.dumps(last), b",".join(e.json for e in events))
        headers = self.cors + longpoll_cookies(self.token, last, self.cookie_attrs)
        self.last_poll = time.monotonic()
        proto.respond(req, 200, body, b"application/json; charset=utf-8", headers)
        proto.unpark()

    def heartbeat(self) -> None:
        if self.waiter is None and time.monotonic() - self.last_poll > (self.ttl if self.polled else self.first_ttl):
            self.end()

    def drain(self) -> None:
        """Answer a waiting poll now, with what it has not seen (its connection then closes: the
        port drains). The session itself ends when the process stops."""
        if self.waiter is not None:
            self.answer()

    def abort(self) -> None:
        proto, _ = self._take_waiter()
        self.end()
        if proto is not None:
            proto.close()

_COOKIE_SAFE = "!#$&'()*+-./:<=>?@[]^_`{|}~\""  # cookie-octets (RFC 6265) kept as they are; the rest %-encoded


def longpoll_cookies(token: str, last_event_id: str, attrs: bytes = b"; path=/") -> list[tuple[bytes, bytes]]:
    """Both long-polling cookies, set on every answer (as RIG): the token and the JSON-encoded cursor."""
    cursor = quote(orjson.dumps(last_event_id).decode(), safe=_COOKIE_SAFE)
    return [
        (b"set-cookie", b"connection_token=%s%s" % (token.encode(), attrs)),
        (b"set-cookie", b"last_event_id=%s%s" % (cursor.encode("ascii"), attrs)),
        (b"cache-control", b"no-cache"),
    ]


def cookie_cursor(req) -> str:
    """The poll's ``last_event_id`` cookie (JSON-encoded as RIG sets it; a bare value is taken as it is)."""
    raw = req.cookies.get("last_event_id")
    if not raw:
        return FIRST_EVENT
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw
    return value if isinstance(value, str) and value else FIRST_EVENT


def apply_subscriptions(hub, session, subs, session_ids=()) -> None:
    """A PUT's result on a connection: its subscriptions, and the sessions of the PUT's tokens."""
    if session_ids:
        session.session_ids = tuple(dict.fromkeys(tuple(session.session_ids) + tuple(session_ids)))
    hub.set_subscriptions(session, subs)
