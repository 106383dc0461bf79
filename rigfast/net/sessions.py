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

    __slots__ = ("hub", "slot", "token", "subscriptions", "manual", "claims", "session_ids")

    KIND = SSE
    # The gateway's drain (SIGTERM) calls drain() on every session: at once on those with
    # DRAIN_FIRST (requests waiting for an answer: long-polls), spread over RIGFAST_DRAIN_S on the
    # others. drain() ends the session the way its protocol says "this server goes away".
    DRAIN_FIRST = False

    def __init__(self, hub: "Hub", token: str, claims: list[dict] | None = None, session_ids: tuple[str, ...] = ()):
        self.kind = self.KIND
        self.transport = None
        self.hub = hub
        self.slot = hub.new_slot()
        self.token = token
        self.subscriptions: list = _NONE
        self.manual: list = _NONE
        self.outbox: list[Any] = []
        self.dirty = False
        self.claims = claims or _NONE
        self.session_ids = session_ids
        self.closed = False

    def enqueue(self, frame: Any) -> None:
        self.outbox.append(frame)

    def end(self) -> None:
        if not self.closed:
            self.closed = True
            self.hub.unregister(self)
            self.outbox.clear()

    def drain(self) -> None:
        self.abort()


class StreamSession(Session):
    """A session that owns its connection (``proto``): frames go straight to the transport."""

    __slots__ = ("proto",)

    def __init__(self, hub, token, proto: "HttpProtocol", **kw):
        super().__init__(hub, token, **kw)
        self.proto = proto
        self.transport = proto.transport

    def flush(self) -> None:
        out = self.outbox
        if not out or self.closed:
            out.clear()
            return
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        self.transport.write(data)

    def connection_lost(self) -> None:
        self.end()

    def handle_slow_consumer(self) -> None:
        metrics.SLOW_CONSUMER_DISCONNECTS.inc(1, KIND_NAMES[self.kind])
        log.info("slow consumer %s: send buffer full, disconnecting", self.proto.peer)
        self.abort()

    def abort(self) -> None:
        self.end()
        self.proto.abort()

    def close(self, final: bytes = b"") -> None:
        """Graceful end: write what is pending (and ``final``), then close."""
        self.flush()
        if final:
            self.proto.write(final)
        self.end()
        self.proto.close()


class SseSession(StreamSession):
    __slots__ = ()
    KIND = SSE

    def heartbeat(self) -> None:
        if not self.outbox:
            self.transport.write(SSE_HEARTBEAT)

    def drain(self) -> None:
        """What is pending, a reconnection delay for EventSource, then the end of the stream."""
        self.close(b"retry: %d\n\n" % random.randint(*DRAIN_RETRY_MS))

    def data_received(self, data: bytes) -> None:
        pass  # an SSE client has nothing to say; ignore anything it sends


class WsSession(StreamSession):
    __slots__ = ("ws",)
    KIND = WS

    def __init__(self, hub, token, proto, **kw):
        super().__init__(hub, token, proto, **kw)
        self.ws = Connection(ConnectionType.SERVER)

    def heartbeat(self) -> None:
        self.transport.write(WS_PING)

    def drain(self) -> None:
        self.close_with(1001, DRAIN_REASON)  # 1001 "going away"

    def data_received(self, data: bytes) -> None:
        try:
            self.ws.receive_data(data)
            for ev in self.ws.events():
                if isinstance(ev, Ping):
                    self.proto.write(self.ws.send(ev.response()))
                elif isinstance(ev, (TextMessage, BytesMessage)):
                    self.close_with(1000, ONE_WAY_REASON)
                    return
                elif isinstance(ev, CloseConnection):
                    if self.ws.state is ConnectionState.REMOTE_CLOSING:
                        self.proto.write(self.ws.send(ev.response()))
                    self.end()
                    self.proto.close()
                    return
        except (RemoteProtocolError, LocalProtocolError) as exc:
            log.debug("websocket protocol error from %s: %s", self.proto.peer, exc)
            self.close_with(1002, "protocol error")

    def close_with(self, code: int, reason: str) -> None:
        if self.closed:
            return
        self.flush()
        try:
            self.proto.write(self.ws.send(CloseConnection(code=code, reason=reason)))
        except LocalProtocolError:
            pass
        self.end()
        self.proto.close()


class LongPollSession(Session):
    """A long-polling session: events wait in a bounded buffer for the next poll."""

    __slots__ = ("buffer", "waiter", "waiter_req", "timer", "last_poll", "last_event_id", "ttl", "poll_timeout", "cors")
    KIND = LONGPOLL
    DRAIN_FIRST = True

    def __init__(self, hub, token, buffer_size: int, ttl_s: float, poll_timeout_s: float, **kw):
        super().__init__(hub, token, **kw)
        self.buffer: deque = deque(maxlen=buffer_size)
        self.waiter: "HttpProtocol | None" = None
        self.waiter_req = None
        self.timer = None
        self.last_poll = time.monotonic()
        self.last_event_id = "first_event"
        self.ttl = ttl_s
        self.poll_timeout = poll_timeout_s
        self.cors: list = []

    def flush(self) -> None:
        if self.outbox:
            self.buffer.extend(self.outbox)
            self.outbox.clear()
        if self.waiter is not None and self.buffer:
            self.answer()

    def poll(self, proto: "HttpProtocol", req, cors_headers: list) -> None:
        self.last_poll = time.monotonic()
        if self.waiter is not None:  # a second concurrent poll replaces the first
            self.answer()
        self.cors = cors_headers
        self.waiter, self.waiter_req = proto, req
        if self.buffer:
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
        proto, req = self._take_waiter()
        if proto is None or proto.closing:
            return
        events = list(self.buffer)
        self.buffer.clear()
        for e in reversed(events):
            if e.seq:
                self.last_event_id = self.hub.event_id(e)
                break
        body = b'{"last_event_id":%s,"events":[%s]}' % (
            orjson.dumps(self.last_event_id),
            b",".join(e.json for e in events),
        )
        headers = self.cors + [
            (b"set-cookie", b"last_event_id=%s; path=/" % orjson.dumps(self.last_event_id)),
            (b"cache-control", b"no-cache"),
        ]
        self.last_poll = time.monotonic()
        proto.respond(req, 200, body, b"application/json; charset=utf-8", headers)
        proto.unpark()

    def heartbeat(self) -> None:
        if self.waiter is None and time.monotonic() - self.last_poll > self.ttl:
            self.end()

    def drain(self) -> None:
        """Answer a waiting poll now, with what is buffered (its connection then closes: the
        port drains). The session itself ends when the process stops."""
        if self.waiter is not None:
            self.answer()

    def abort(self) -> None:
        proto, _ = self._take_waiter()
        self.end()
        if proto is not None:
            proto.close()
