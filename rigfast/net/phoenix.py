"""Phoenix Channels: the wire protocol of the official Phoenix JS client (npm ``phoenix``).

How this works: a Phoenix socket (one WebSocket, or one long-polling session)
is a hub session of kind PHOENIX that never subscribes to anything; it is
counted as the connection, answers heartbeats, joins and leaves, and closes
when idle. Each joined ``rig:<name>`` topic is a :class:`PhxChannel`, a hub
session of its own (same kind, not counted as a connection) with its own
connection token and subscriptions. The delivery loop encodes one push per
event per ``wire`` key (serializer + transport + topic name) and appends the
same bytes to every channel of that key. Over WebSocket a channel's
``transport`` is its socket's, so the compiled flush writes it directly; over
long-polling it has none, and its ``flush`` hands the frames to the socket's
bounded message buffer, which the next poll takes.

Messages: serializer ``2.0.0`` sends ``[join_ref, ref, topic, event, payload]``,
``1.0.0`` an object with those keys. Control replies are written at once;
pushes go through the hub, so a join's reply always precedes its replay.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import orjson
from wsproto import ConnectionType
from wsproto.connection import Connection
from wsproto.events import BytesMessage, CloseConnection, Ping, TextMessage
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from rigfast import metrics
from rigfast._ext import encode_ws_text
from rigfast.cloudevents import make_event
from rigfast.errors import RigError
from rigfast.hub.hub import PHOENIX
from rigfast.net.sessions import DRAIN_REASON, OwnsConnection, Session, WsClosing
from rigfast.subscriptions import merge, parse_subscriptions

if TYPE_CHECKING:
    from rigfast.api.phoenix import PhoenixApi

log = logging.getLogger("rigfast.phoenix")

V1, V2 = "1", "2"  # serializers 1.0.0 (objects) and 2.0.0 (arrays)
TOPIC_PREFIX = "rig:"
_EMPTY = b"{}"
_dumps = orjson.dumps


def encode_message(fmt: str, join_ref, ref, topic: str, event: str, payload_json: bytes) -> bytes:
    """One Phoenix message as JSON text; ``payload_json`` is already encoded."""
    if fmt == V2:
        return b"[%s,%s,%s,%s,%s]" % (_dumps(join_ref), _dumps(ref), _dumps(topic), _dumps(event), payload_json)
    return b'{"join_ref":%s,"ref":%s,"topic":%s,"event":%s,"payload":%s}' % (
        _dumps(join_ref), _dumps(ref), _dumps(topic), _dumps(event), payload_json)


class BadMessage(Exception):
    """A client message that is not a Phoenix message (Phoenix closes the socket)."""


def decode_message(fmt: str, raw: bytes | str) -> tuple[Any, Any, str, str, Any]:
    try:
        msg = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadMessage(f"message is not JSON: {exc}") from None
    if fmt == V2:
        if not isinstance(msg, list) or len(msg) != 5:
            raise BadMessage("message must be a JSON array [join_ref, ref, topic, event, payload] (serializer 2.0.0)")
        join_ref, ref, topic, event, payload = msg
    else:
        if not isinstance(msg, dict):
            raise BadMessage('message must be a JSON object {"topic", "event", "payload", "ref"} (serializer 1.0.0)')
        join_ref, ref, topic, event, payload = (msg.get(k) for k in ("join_ref", "ref", "topic", "event", "payload"))
    if not isinstance(topic, str) or not isinstance(event, str):
        raise BadMessage("topic and event must be strings")
    for r in (join_ref, ref):
        if r is not None and not isinstance(r, (str, int)):
            raise BadMessage("join_ref and ref must be strings or null")
    return join_ref, ref, topic, event, payload


class PhxChannel(Session):
    """One joined topic of a Phoenix socket: a hub session with its own subscriptions."""

    __slots__ = ("socket", "topic", "join_ref")
    KIND = PHOENIX
    COUNTED = False

    def __init__(self, socket: "PhxSocket", topic: str, join_ref, token: str):
        super().__init__(socket.hub, token, claims=list(socket.claims), session_ids=socket.session_ids)
        self.socket = socket
        self.topic = topic
        self.join_ref = join_ref
        self.wire = socket.wire_prefix + topic  # channels with the same key share each push's bytes
        self.transport = socket.transport  # WebSocket: the flush writes straight to the socket

    def indexed(self, subs: list) -> list:
        # the client would read phx_* events as control messages: never pushed (counted as dropped)
        return [s for s in subs if not s.event_type.startswith("phx_")]

    def push_frame(self, event) -> bytes:
        """The push of ``event`` on this channel's topic, framed for its socket (once per wire key)."""
        rid = self.hub.event_id(event) or None
        return self.socket.frame(encode_message(self.socket.fmt, None, rid, self.topic, event.type, event.json))

    def flush(self) -> None:
        """WebSocket: one write (what the compiled flush does); long-polling: to the socket's message buffer."""
        out = self.outbox
        if not out:
            return
        self.outbox = None
        if not self.closed:
            if self.transport is not None:
                self.transport.write(out[0] if len(out) == 1 else b"".join(out))
            else:
                self.socket.take(out)

    def write_pending(self) -> None:
        """Write queued pushes now (before a reply that must follow them)."""
        self.flush()

    def heartbeat(self) -> None:
        pass  # the socket keeps time

    def kill(self) -> None:
        self.socket.kill()

    def drain(self) -> None:
        self.socket.drain()

    def abort(self) -> None:
        self.socket.abort()


class PhxSocket(Session):
    """What both transports share: message handling, channels, idle time, blacklist."""

    __slots__ = ("api", "fmt", "channels", "tokens", "last_seen", "idle_s", "wire_prefix", "pending")
    KIND = PHOENIX
    WIRE = "w"

    def __init__(self, api: "PhoenixApi", token: str, fmt: str, tokens: list[str], claims: list[dict], session_ids):
        super().__init__(api.hub, token, claims=claims, session_ids=session_ids)
        self.api = api
        self.fmt = fmt
        self.channels: dict[str, PhxChannel] = {}
        self.pending: set[str] = set()  # topics whose join waits for an external check
        self.tokens = tokens
        self.last_seen = time.monotonic()
        self.idle_s = api.cfg.phoenix_idle_s
        self.wire_prefix = fmt + self.WIRE

    # -- transport hooks ------------------------------------------------------
    def frame(self, msg: bytes) -> bytes:
        raise NotImplementedError

    def take(self, frames: list, bounded: bool = True) -> None:
        raise NotImplementedError

    def send(self, msg: bytes) -> None:
        raise NotImplementedError

    def close_bad(self, reason: str) -> None:
        raise NotImplementedError

    def push_frame(self, event) -> bytes:  # a socket subscribes to nothing; only gateway events
        return self.frame(encode_message(self.fmt, None, None, "phoenix", event.type, event.json))

    # -- messages ---------------------------------------------------------------
    def reply(self, join_ref, ref, topic: str, status: str, response: Any) -> None:
        payload = b'{"status":"%s","response":%s}' % (status.encode(), _dumps(response))
        self.send(encode_message(self.fmt, join_ref, ref, topic, "phx_reply", payload))

    def control(self, join_ref, topic: str, event: str) -> None:
        """phx_close / phx_error: Phoenix sends them with the join ref in both ref positions."""
        self.send(encode_message(self.fmt, join_ref, join_ref, topic, event, _EMPTY))

    def handle(self, raw: bytes | str) -> None:
        """One client message. A bad one closes the socket, as Phoenix does; nothing else is hurt."""
        if self.closed:
            return
        self.last_seen = time.monotonic()
        try:
            join_ref, ref, topic, event, payload = decode_message(self.fmt, raw)
        except BadMessage as exc:
            log.info("phoenix socket %s: %s; closing it", self.token, exc)
            self.close_bad(str(exc))
            return
        try:
            self.dispatch(join_ref, ref, topic, event, payload)
        except Exception:  # noqa: BLE001 - one message never takes the gateway down
            log.exception("phoenix socket %s: handling %s on %s failed", self.token, event, topic)
            self.reply(join_ref, ref, topic, "error", {"reason": "internal error"})

    def dispatch(self, join_ref, ref, topic: str, event: str, payload: Any) -> None:
        if topic == "phoenix" and event == "heartbeat":
            self.reply(None, ref, topic, "ok", {})
            return
        ch = self.channels.get(topic)
        if event == "phx_join":
            if ch is not None:  # a second join replaces the first (Phoenix closes the old channel)
                self._close_channel(ch)
                self.control(ch.join_ref, topic, "phx_close")
            self.join(join_ref, ref, topic, payload)
            return
        if ch is None:
            if event == "phx_leave":
                self.reply(join_ref, ref, topic, "ok", {})
            else:  # as Phoenix: a message to a topic that is not joined
                self.reply(None, ref, topic, "error", {"reason": "unmatched topic"})
            return
        if event == "phx_leave":
            self._close_channel(ch)
            self.reply(join_ref, ref, topic, "ok", {})
            self.control(ch.join_ref, topic, "phx_close")
        elif event == "subscriptions":
            self.change_subscriptions(ch, join_ref, ref, payload)
        else:
            self.reply(join_ref, ref, topic, "error", {
                "reason": f"unknown event {event!r}: a rig channel takes \"subscriptions\" and \"phx_leave\""})

    # -- channels ---------------------------------------------------------------
    def join(self, join_ref, ref, topic: str, payload: Any) -> None:
        def refuse(reason: str) -> None:
            self.reply(join_ref, ref, topic, "error", {"reason": reason})

        if not topic.startswith(TOPIC_PREFIX):
            refuse("unmatched topic")
            return
        if topic in self.pending:
            refuse("join already in progress")
            return
        if len(self.channels) >= self.api.cfg.phoenix_max_channels:
            refuse(f"too many topics joined on this socket (RIGFAST_PHOENIX_MAX_CHANNELS={self.api.cfg.phoenix_max_channels})")
            return
        if payload is None:
            payload = {}
        if not isinstance(payload, dict):
            refuse('join payload must be an object like {"subscriptions": [...], "last_event_id": "..."}')
            return
        last = payload.get("last_event_id")
        if last is not None and not isinstance(last, str):
            refuse("last_event_id must be a string")
            return
        api = self.api
        try:
            manual = parse_subscriptions(payload.get("subscriptions") or [], api.extractors, api.limits)
            subs = merge(manual, api.extractors.automatic(self.claims))
            # as on connect: the check runs when the join names subscriptions
            check = api.auth.check_subscription(self.tokens, subs) if manual else None
        except RigError as exc:
            refuse(exc.message)
            return

        def joined() -> None:
            if self.closed:
                return
            ch = PhxChannel(self, topic, join_ref, api.new_token())
            self.hub.register(ch)
            self.channels[topic] = ch
            self.hub.set_subscriptions(ch, subs)
            self.reply(join_ref, ref, topic, "ok", {"connection_token": ch.token, "subscriptions": [s.to_json() for s in subs]})
            if last:
                self.replay(ch, last)

        if check is None:
            joined()
            return
        self.pending.add(topic)

        async def checked() -> None:
            try:
                await check
            except RigError as exc:
                if not self.closed:
                    refuse(exc.message)
                return
            finally:
                self.pending.discard(topic)
            joined()

        self.api.spawn(checked())

    def replay(self, ch: PhxChannel, last: str) -> None:
        """What the channel missed since ``last`` (its resume id), after the join's reply.

        Bounded by the history, not by the long-polling buffer: a client that comes back
        after being dropped as a slow consumer must be able to catch up. On a node with a reader
        the node's history answers (as for SSE, see ``Hub.resume``)."""
        self.hub.resume(ch, last.strip(), ch.indexed(ch.subscriptions), self.api.owners,
                        lambda result: self._push_missed(ch, last, result))

    def _push_missed(self, ch: PhxChannel, last: str, result: tuple) -> None:
        if ch.closed:
            return
        gap, events = result
        frames = [ch.push_frame(make_event("rig.history_gap", {"last_event_id": last}))] if gap else []
        frames += [ch.push_frame(e) for e in events]
        if not frames:
            return
        if ch.transport is None:
            self.take(frames, bounded=False)
        else:
            for frame in frames:
                ch.enqueue(frame)
            self.hub._touch(ch)

    def change_subscriptions(self, ch: PhxChannel, join_ref, ref, payload: Any) -> None:
        api = self.api
        topic = ch.topic
        if not isinstance(payload, dict) or "subscriptions" not in payload:
            self.reply(join_ref, ref, topic, "error", {"reason": 'payload must be an object like {"subscriptions": [...]}'})
            return
        try:
            manual = parse_subscriptions(payload["subscriptions"], api.extractors, api.limits)
            subs = merge(manual, api.extractors.automatic(self.claims))
            check = api.auth.check_subscription(self.tokens, subs)  # always checked, as a PUT
        except RigError as exc:
            self.reply(join_ref, ref, topic, "error", {"reason": exc.message})
            return

        def apply() -> None:
            if ch.closed:
                return
            self.hub.set_subscriptions(ch, subs)
            self.reply(join_ref, ref, topic, "ok", {"subscriptions": [s.to_json() for s in subs]})

        if check is None:
            apply()
            return

        async def checked() -> None:
            try:
                await check
            except RigError as exc:
                if not ch.closed:
                    self.reply(join_ref, ref, topic, "error", {"reason": exc.message})
                return
            apply()

        self.api.spawn(checked())

    def _close_channel(self, ch: PhxChannel) -> None:
        ch.write_pending()
        ch.end()
        if self.channels.get(ch.topic) is ch:
            del self.channels[ch.topic]

    # -- lifecycle ----------------------------------------------------------------
    def idle(self) -> bool:
        return time.monotonic() - self.last_seen > self.idle_s

    def end(self) -> None:
        for ch in list(self.channels.values()):
            ch.end()
        self.channels.clear()
        super().end()

    def kill(self) -> None:
        """Session blacklisted: phx_error on every joined topic, then the socket closes."""
        if self.closed:
            return
        for ch in list(self.channels.values()):
            self._close_channel(ch)
            self.control(ch.join_ref, ch.topic, "phx_error")
        self.close_killed()

    def close_killed(self) -> None:
        raise NotImplementedError


class PhxWsSocket(WsClosing, OwnsConnection, PhxSocket):
    """A Phoenix socket over WebSocket."""

    __slots__ = ("proto", "ws", "partial")
    WIRE = "w"

    def __init__(self, api, token, fmt, tokens, claims, session_ids, proto):
        self.proto = proto
        super().__init__(api, token, fmt, tokens, claims, session_ids)
        self.transport = proto.transport
        self.ws = Connection(ConnectionType.SERVER)
        self.partial: list = []

    def frame(self, msg: bytes) -> bytes:
        return encode_ws_text(msg)

    def send(self, msg: bytes) -> None:
        if not self.closed:
            self.proto.write(encode_ws_text(msg))

    def flush(self) -> None:
        out = self.outbox
        self.outbox = None
        if out and not self.closed:
            self.proto.write(b"".join(out))

    def heartbeat(self) -> None:
        if self.idle():
            log.info("phoenix socket %s idle for %.0f s: closing it", self.token, self.idle_s)
            self.close_with(1000, "idle timeout")

    def data_received(self, data: bytes) -> None:
        try:
            self.ws.receive_data(data)
            for ev in self.ws.events():
                if isinstance(ev, TextMessage):
                    limit = self.api.cfg.ws_max_message_bytes
                    if limit and sum(map(len, self.partial)) + len(ev.data) > limit:
                        self.close_with(1009, f"message too big (limit {limit} bytes)")
                        return
                    if not ev.message_finished:
                        self.partial.append(ev.data)
                        continue
                    text = "".join(self.partial) + ev.data if self.partial else ev.data
                    self.partial.clear()
                    self.handle(text.encode())
                    if self.closed:
                        return
                elif isinstance(ev, BytesMessage):
                    self.close_with(1003, "binary messages are not supported")
                    return
                elif isinstance(ev, Ping):
                    self.proto.write(self.ws.send(ev.response()))
                elif isinstance(ev, CloseConnection):
                    self.close_event(ev)
                    return
        except (RemoteProtocolError, LocalProtocolError) as exc:
            log.debug("phoenix websocket protocol error from %s: %s", self.proto.peer, exc)
            self.close_with(1002, "protocol error")

    def protocol_error(self, code: int, reason: str) -> None:
        log.debug("phoenix websocket protocol error from %s: %s", self.proto.peer, reason)
        self.close_for_error(code, reason)

    def close_bad(self, reason: str) -> None:
        self.close_with(1011, reason[:120])  # Phoenix's socket process dies: the server closes

    def close_killed(self) -> None:
        self.close_with(1000, "Session killed.")

    def drain(self) -> None:
        self.close_with(1001, DRAIN_REASON)  # the client reconnects (elsewhere) and rejoins with its last id

    def close_with(self, code: int, reason: str) -> None:
        if self.closed:
            return
        self.send_close(code, reason)

    def close(self, final: bytes = b"") -> None:
        self.close_with(1000, "")


class PhxLpSocket(PhxSocket):
    """A Phoenix socket over the client's long-polling fallback: messages wait for the next poll."""

    __slots__ = ("messages", "limit", "waiter", "waiter_req", "timer", "cors", "poll_timeout", "dying")
    WIRE = "l"
    JSON = b"application/json; charset=utf-8"
    DRAIN_FIRST = True  # a waiting poll is answered at once

    def __init__(self, api, token, fmt, tokens, claims, session_ids):
        super().__init__(api, token, fmt, tokens, claims, session_ids)
        self.messages: list[bytes] = []  # each an encoded frame as a JSON string literal
        self.limit = api.cfg.phoenix_longpoll_buffer
        self.waiter = self.waiter_req = self.timer = None
        self.cors: list = []
        self.poll_timeout = api.cfg.phoenix_poll_timeout_s
        self.dying = False  # killed: the next poll takes the phx_error messages, then the session is gone
        api.lp_sessions += 1

    def frame(self, msg: bytes) -> bytes:
        return _dumps(msg.decode())  # a poll answer lists the messages as strings

    def send(self, msg: bytes) -> None:
        self.take([self.frame(msg)])

    def take(self, frames: list, bounded: bool = True) -> None:
        if self.closed:
            return
        self.messages.extend(frames)
        if bounded and len(self.messages) > self.limit:
            metrics.SLOW_CONSUMER_DISCONNECTS.inc(1, "phoenix")
            log.info("slow consumer %s (phoenix long-polling): %d messages waiting, dropping the session", self.token, len(self.messages))
            self.abort()
            return
        if self.waiter is not None:
            self.api.loop.call_soon(self._answer_if_waiting)  # after this batch: one answer, many messages

    def flush(self) -> None:
        if self.outbox:
            out, self.outbox = self.outbox, None
            self.take(out)

    # -- requests -----------------------------------------------------------------------
    def lp_request(self, proto, req, method: str, body: bytes, cors: list) -> None:
        """A GET (poll) or POST (messages) of the client, arrived here or forwarded by another worker or node."""
        if method == "GET":
            self.poll(proto, req, cors)
        else:
            self.post(proto, req, body, cors)

    def poll(self, proto, req, cors: list) -> None:
        self.last_seen = time.monotonic()
        if self.waiter is not None:  # a newer poll replaces a waiting one
            self.answer()
        self.cors = cors
        self.waiter, self.waiter_req = proto, req
        if self.messages or self.dying:
            self.answer()
            return
        proto.park()
        self.timer = proto.loop.call_later(self.poll_timeout, self.answer)

    def post(self, proto, req, body: bytes, cors: list) -> None:
        """Client messages, one frame per line (``application/x-ndjson``, or one JSON message)."""
        self.last_seen = time.monotonic()
        lines = [ln for ln in body.split(b"\n") if ln.strip()]
        if len(lines) > 100:
            proto.respond(req, 200, b'{"status":400,"error":"at most 100 messages per POST"}', self.JSON, cors)
            return
        for line in lines:
            self.handle(line)
            if self.closed:
                break
        proto.respond(req, 200, b'{"status":200}' if not self.closed or self.dying else b'{"status":410}', self.JSON, cors)

    def _answer_if_waiting(self) -> None:
        if self.waiter is not None and (self.messages or self.dying):
            self.answer()

    def answer(self) -> None:
        proto, req = self.waiter, self.waiter_req
        self.waiter = self.waiter_req = None
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if proto is None or proto.closing:
            return
        token = _dumps(self.token)
        if self.messages:
            body = b'{"status":200,"token":%s,"messages":[%s]}' % (token, b",".join(self.messages))
            self.messages = []
        else:
            body = b'{"status":204,"token":%s}' % token
        self.last_seen = time.monotonic()
        proto.respond(req, 200, body, self.JSON, self.cors + [(b"cache-control", b"no-cache")])
        proto.unpark()
        if self.dying:
            self.end()

    # -- lifecycle ----------------------------------------------------------------------
    def end(self) -> None:
        if not self.closed:
            self.api.lp_sessions -= 1
        super().end()

    def heartbeat(self) -> None:
        if self.waiter is None and self.idle():
            log.info("phoenix long-poll session %s idle for %.0f s: dropped", self.token, self.idle_s)
            self.end()

    def close_bad(self, reason: str) -> None:
        self.abort()

    def drain(self) -> None:
        """What is waiting goes to the waiting poll; then the session is gone (the next poll: 410)."""
        if self.waiter is not None:
            self.answer()
        self.end()

    def close_killed(self) -> None:
        # the channels are gone; the phx_error messages wait for the next poll, then 410
        self.dying = True
        if self.waiter is not None:
            self.answer()

    def abort(self) -> None:
        proto = self.waiter
        self.waiter = self.waiter_req = None
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.end()
        if proto is not None:
            proto.close()

    def connection_lost(self) -> None:
        pass
