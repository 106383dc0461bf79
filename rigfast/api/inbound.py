"""Routes of the public port: the three transports, subscriptions, event submission."""

from __future__ import annotations

import base64
import binascii
import inspect
import logging
import math
import re
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Protocol, Sequence

import orjson

from rigfast.auth.authorizer import Authorizer
from rigfast._ext import encode_sse, encode_ws_text
from rigfast.cloudevents import Event, gateway_json, make_event, now_rfc3339, parse_http_event, random_uuid4
from rigfast.errors import BadRequest, Gone, RigError, TooManyRequests
from rigfast.hub.hub import LONGPOLL, SSE, WS, Hub
from rigfast.api.phoenix import PhoenixApi
from rigfast.ids import TokenIssuer
from rigfast.net.sessions import (
    FIRST_EVENT,
    LongPollSession,
    SseSession,
    WsSession,
    apply_subscriptions,
    cookie_attributes,
    cookie_cursor,
    longpoll_cookies,
)
from rigfast.subscriptions import (Limits, Subscription, SubscriptionTexts, merge, parse_subscriptions,
                                   subscriptions_json)
from rigfast.wire.http1 import encode_stream_head, encode_ws_accept, header_has_token

if TYPE_CHECKING:
    from rigfast.net.protocol import HttpProtocol
    from rigfast.wire.http1 import Request

log = logging.getLogger("rigfast.inbound")

CONNECTION_PREFIX = "/_rig/v1/connection/"
WS_BAD_REQUEST = "Bad request."  # RIG's close reason for every refused WebSocket setup; details go to the log
WS_VERSIONS = (b"13", b"8", b"7")  # what RIG's Cowboy accepts
JSON_UTF8 = b"application/json; charset=utf-8"
SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]
TOKEN_RE = re.compile(r"^[A-Za-z0-9_.~-]{8,256}$")
PREFLIGHT_MAX_AGE = b"86400"


class Owners(Protocol):
    """Where a connection held by another worker or node lives (``rigfast.cluster.node.Cluster``)."""

    def route(self, token: str) -> tuple[str, int] | None: ...

    def apply_subscriptions_at(self, route: tuple[str, int], token: str, manual: list, subs: list,
                               session_ids: tuple[str, ...] = ()) -> Awaitable[dict | None]: ...

    def forward_poll(self, proto, req, token: str, cors: list, fallback: Callable[[], Any],
                     last_event_id: str = "first_event") -> Any: ...

    def forward_phoenix(self, proto, req, token: str, method: str, body: bytes, cors: list) -> Any: ...

    def replay(self, last: str, subs: list, done: Callable[[tuple[bool, list] | None], None]) -> bool: ...


class InboundApi:
    """``tokens`` issues connection tokens; ``fallback`` answers what no route takes (the reverse
    proxy); ``owners`` (None on a lone worker) reaches connections held elsewhere; ``ready`` answers
    ``GET /_rig/health/ready`` (the gateway's readiness)."""

    def __init__(self, cfg: Any, hub: Hub, auth: Authorizer, tokens: TokenIssuer,
                 fallback: Callable[["HttpProtocol", "Request"], Any], owners: Owners | None,
                 ready: Callable[["HttpProtocol", "Request"], None] | None = None):
        self.cfg = cfg
        self.ready = ready
        self.hub = hub
        self.auth = auth
        self.tokens = tokens
        self.fallback = fallback
        self.owners = owners
        self.extractors = cfg.extractors
        self.limits = Limits.from_config(cfg)
        self.texts = SubscriptionTexts(self.extractors, self.limits)  # connects asking the same share it
        self.cors_origin = self.cfg.cors.encode()
        self._cors_any = [(b"access-control-allow-origin", b"*")]
        self._sse_head_any = encode_stream_head(200, SSE_HEADERS + self._cors_any)  # the head under CORS=*, made once
        self.phoenix = PhoenixApi(cfg, hub, auth, tokens, self, owners)  # /socket/websocket, /socket/longpoll

    # -- routing --------------------------------------------------------------
    def __call__(self, proto: "HttpProtocol", req: "Request") -> Any:
        path, method = req.path, req.method
        if path == "/_rig/v1/events":
            if method == "POST":
                return self.submit(proto, req)
            if method == "OPTIONS":
                return self.preflight(proto, req, b"POST")
            raise RigError("method not allowed: use POST", 405)
        if path.startswith(CONNECTION_PREFIX):
            rest = path[len(CONNECTION_PREFIX):]
            if rest in ("sse", "ws", "longpolling"):
                if method == "OPTIONS":
                    return self.preflight(proto, req, b"GET")
                if method != "GET":
                    raise RigError("method not allowed: use GET", 405)
                return getattr(self, "open_" + rest)(proto, req)
            parts = rest.split("/")
            if len(parts) == 3 and parts[0] in ("sse", "ws", "longpolling") and parts[2] == "subscriptions":
                if method == "PUT":
                    return self.put_subscriptions(proto, req, parts[1])
                if method == "OPTIONS":
                    return self.preflight(proto, req, b"PUT")
                raise RigError("method not allowed: use PUT", 405)
        if path.startswith("/socket/"):
            if path == "/socket/websocket":
                return self.phoenix.open_websocket(proto, req)
            if path == "/socket/longpoll":
                return self.phoenix.longpoll(proto, req)
        if path == "/_rig/health" and method in ("GET", "HEAD"):
            proto.respond(req, 200, b"OK")
            return None
        if path == "/_rig/health/ready" and method in ("GET", "HEAD") and self.ready is not None:
            return self.ready(proto, req)
        return self.fallback(proto, req)

    # -- CORS ---------------------------------------------------------------
    def cors(self, req: "Request", credentials: bool = False) -> list[tuple[bytes, bytes]]:
        origin = self.cors_origin
        if origin == b"*" and not credentials:
            return self._cors_any
        req_origin = req.header(b"origin")
        if origin == b"*":
            if credentials and req_origin:
                # a credentialed request is refused by browsers with "*": echo the origin
                return [(b"access-control-allow-origin", req_origin), (b"access-control-allow-credentials", b"true"), (b"vary", b"origin")]
        elif b"," in origin and req_origin:
            allowed = [o.strip() for o in origin.split(b",")]
            origin = req_origin if req_origin in allowed else allowed[0]
        out = [(b"access-control-allow-origin", origin)]
        if credentials:
            out.append((b"access-control-allow-credentials", b"true"))
        if origin != b"*":
            out.append((b"vary", b"origin"))
        return out

    def error_cors(self, req: "Request") -> list[tuple[bytes, bytes]]:
        """CORS headers of every refusal on the public port: the same as a credentialed success."""
        return self.cors(req, credentials=True)

    def preflight(self, proto, req, methods: bytes) -> None:
        headers = self.cors(req, credentials=True) + [
            (b"access-control-allow-methods", methods + b", OPTIONS"),
            (b"access-control-allow-headers", b"content-type,authorization,last-event-id" if methods != b"PUT" else b"content-type,authorization"),
            (b"access-control-max-age", PREFLIGHT_MAX_AGE),
        ]
        proto.respond(req, 204, b"", None, headers)

    # -- helpers ------------------------------------------------------------
    def admit(self, proto, req) -> bool:
        """MAX_CONNECTIONS_PER_MINUTE and the client's share of it (RIGFAST_CLIENT_CONNECTION_SHARE):
        False after answering 429 with Retry-After (whole seconds). A client over its share is
        refused before it takes from the node's allowance, so it cannot spend the others'."""
        auth = self.auth
        per_client = auth.client_limiter
        wait = per_client.peer_wait_s(proto.peer) if per_client.enabled else 0.0
        if wait:
            retry = max(1, math.ceil(wait))
            proto.respond_error(
                req,
                TooManyRequests.status,
                f"too many new connections from this client address: its share of MAX_CONNECTIONS_PER_MINUTE"
                f" (RIGFAST_CLIENT_CONNECTION_SHARE) is spent, retry in {retry} s",
                [(b"retry-after", b"%d" % retry)],
            )
            return False
        wait = auth.rate_limiter.wait_s()
        if not wait:
            return True
        retry = max(1, math.ceil(wait))
        proto.respond_error(
            req,
            TooManyRequests.status,
            f"too many new connections: MAX_CONNECTIONS_PER_MINUTE exceeded, retry in {retry} s",
            [(b"retry-after", b"%d" % retry)],
        )
        return False

    def requested(self, req: "Request") -> tuple[list[str], list[dict], Sequence[Subscription], bool]:
        """(tokens, claims, merged subscriptions, whether subscriptions were named) of a connect.

        As RIG: every token is decoded (for automatic subscriptions), so one that does not
        verify, has expired or is blacklisted is 400 whatever SUBSCRIPTION_CHECK says."""
        raw = req.query_one("subscriptions")
        manual = self.texts.parse(raw) if raw else ()
        tokens = self.auth.tokens(req)
        claims = self.auth.verified_claims(tokens)
        auto = self.extractors.automatic(claims) if claims else None
        return tokens, claims, merge(manual, auto) if auto else manual, bool(raw)

    def connect_check(self, tokens: list[str], subs: list[Subscription], named: bool) -> Awaitable | None:
        """SUBSCRIPTION_CHECK on connect runs only when the request names subscriptions (RIG)."""
        return self.auth.check_subscription(tokens, subs) if named else None

    def then(self, check: Awaitable | None, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` after an authorization check that may need I/O."""
        if check is None:
            return fn()

        async def run():
            await check
            result = fn()
            if inspect.isawaitable(result):
                await result

        return run()

    def greet(self, session, subs: list[Subscription]) -> None:
        """rig.connection.create, then rig.subscriptions_set. An SSE or WebSocket session gets both
        framed in one piece, in its outbox before anything the hub queues (see :meth:`send_greeting`)."""
        hub = self.hub
        hub.register(session)
        kind = session.kind
        if kind == SSE or kind == WS:
            session.enqueue(greeting(kind, session.token, subs))
            hub.set_subscriptions(session, subs, announce=False)
            return
        hub.send_gateway_event(session, make_event("rig.connection.create", {"connection_token": session.token, "errors": []}))
        hub.set_subscriptions(session, subs)

    @staticmethod
    def send_greeting(session) -> None:
        """Write what a new stream session's outbox holds (its head and greeting) now, unless the hub
        queued more for it meanwhile (a resume's events): then the hub's next flush writes it all."""
        if not session.dirty:
            session.flush()

    def resume(self, session, req: "Request") -> None:
        last = req.header_str(b"last-event-id") or req.query_one("lastEventId")
        if not last:
            return
        last = last.strip()
        self.hub.resume(session, last, session.subscriptions, self.owners)

    # -- SSE ------------------------------------------------------------------
    def open_sse(self, proto, req) -> Any:
        if not self.admit(proto, req):
            return None
        tokens, claims, subs, named = self.requested(req)
        check = self.connect_check(tokens, subs, named)
        if check is None:  # the usual case: no closure
            return self._start_sse(proto, req, claims, subs)
        return self.then(check, lambda: self._start_sse(proto, req, claims, subs))

    def _start_sse(self, proto, req, claims, subs) -> None:
        session = SseSession(self.hub, self.tokens.new(), proto, claims, self.auth.session_ids(claims))
        # the head waits in the outbox: it leaves with the greeting events in one write
        cors = self.cors(req)
        session.enqueue(self._sse_head_any if cors is self._cors_any else encode_stream_head(200, SSE_HEADERS + cors))
        self.greet(session, subs)
        self.resume(session, req)
        self.send_greeting(session)

    # -- WebSocket ----------------------------------------------------------
    def ws_key(self, proto, req) -> bytes | None:
        """The Sec-WebSocket-Key of a valid upgrade request; None after answering a bad one."""
        if (req.header(b"upgrade") or b"").lower() != b"websocket":
            raise RigError("WebSocket upgrade required (Connection: Upgrade, Upgrade: websocket)", 426)
        if not header_has_token(req.header(b"connection"), b"upgrade"):
            raise BadRequest("WebSocket upgrade needs Connection: Upgrade")
        version = (req.header(b"sec-websocket-version") or b"").strip()
        if version not in WS_VERSIONS:
            proto.respond_error(req, 400, "unsupported Sec-WebSocket-Version: use 13", [(b"sec-websocket-version", b"13")])
            return None
        key = (req.header(b"sec-websocket-key") or b"").strip()
        if not valid_ws_key(key):
            raise BadRequest("missing or invalid Sec-WebSocket-Key (base64 of 16 bytes)")
        return key

    def open_ws(self, proto, req) -> Any:
        key = self.ws_key(proto, req)
        if key is None:
            return None
        if not self.admit(proto, req):
            return None
        try:
            tokens, claims, subs, named = self.requested(req)
            check = self.connect_check(tokens, subs, named)
        except RigError as exc:
            return self._start_ws(proto, req, key, [], [], refuse=exc.message)
        if check is None:
            return self._start_ws(proto, req, key, claims, subs)

        async def checked():
            try:
                await check
            except RigError as exc:
                return self._start_ws(proto, req, key, [], [], refuse=exc.message)
            return self._start_ws(proto, req, key, claims, subs)

        return checked()

    def _start_ws(self, proto, req, key: bytes, claims, subs, refuse: str | None = None) -> None:
        session = WsSession(self.hub, self.tokens.new(), proto, self.cfg.ws_max_message_bytes, claims,
                            self.auth.session_ids(claims))
        session.enqueue(encode_ws_accept(key))  # leaves with the greeting in one write
        if refuse is not None:
            log.info("websocket from %s refused: %s", proto.peer, refuse)
            session.close_with(1000, WS_BAD_REQUEST)
            return
        self.greet(session, subs)
        self.resume(session, req)
        self.send_greeting(session)
        if proto.leftover:  # frames sent along with the handshake: answer them after the 101
            session.flush()
            data, proto.leftover = proto.leftover, b""
            session.data_received(data)

    # -- long-polling -------------------------------------------------------
    def open_longpolling(self, proto, req) -> Any:
        cors = self.cors(req, credentials=True)
        token = req.cookies.get("connection_token")
        session = self.hub.by_token.get(token) if token else None
        if session is not None and session.kind == LONGPOLL:
            session.poll(proto, req, cors, cookie_cursor(req))
            return None
        if token and session is None and self.owners is not None:
            # the session may live on another worker or node: its owner answers this poll
            forwarded = self.owners.forward_poll(
                proto, req, token, cors, lambda: self._new_longpolling(proto, req, cors), cookie_cursor(req)
            )
            if forwarded is not None:
                return forwarded
        return self._new_longpolling(proto, req, cors)

    def _new_longpolling(self, proto, req, cors) -> Any:
        cap = self.cfg.longpoll_max_sessions
        if cap and self.hub.counts[LONGPOLL] >= cap:
            proto.respond_error(
                req, 503,
                f"too many long-polling sessions: RIGFAST_LONGPOLL_MAX_SESSIONS ({cap}) reached, retry later",
                [(b"retry-after", b"%d" % max(1, int(self.cfg.longpoll_first_poll_ttl_s)))],
            )
            return None
        if not self.admit(proto, req):
            return None
        tokens, claims, subs, named = self.requested(req)
        return self.then(self.connect_check(tokens, subs, named), lambda: self._start_lp(proto, req, claims, subs, cors))

    def _start_lp(self, proto, req, claims, subs, cors) -> None:
        cfg = self.cfg
        session = LongPollSession(
            self.hub,
            self.tokens.new(),
            cfg.longpoll_buffer,
            cfg.longpoll_session_ttl_s,
            cfg.longpoll_timeout_s,
            cfg.longpoll_buffer_bytes,
            cfg.longpoll_first_poll_ttl_s,
            cookie_attributes(cfg.longpoll_cookie_samesite, proto.transport.get_extra_info("sslcontext") is not None),
            claims=claims,
            session_ids=self.auth.session_ids(claims),
        )
        self.greet(session, subs)
        self.resume(session, req)
        headers = cors + longpoll_cookies(session.token, FIRST_EVENT, session.cookie_attrs)
        proto.respond(req, 200, b'"ok"', b"application/json; charset=utf-8", headers)

    # -- subscriptions --------------------------------------------------------
    def put_subscriptions(self, proto, req, token: str) -> Any:
        if not TOKEN_RE.match(token):
            raise BadRequest("invalid connection token")
        self.limits.check_size(len(req.body))  # before decoding: a huge body is refused unread
        ctype = (req.header_str(b"content-type") or "").split(";", 1)[0].strip().lower()
        if ctype != "application/json":
            raise BadRequest(f"content-type must be application/json, got {ctype or 'none'!r}")
        try:
            body = orjson.loads(req.body)
        except orjson.JSONDecodeError as exc:
            raise BadRequest(f"body is not valid JSON: {exc}") from None
        if not isinstance(body, dict) or "subscriptions" not in body:
            raise BadRequest('body must be an object like {"subscriptions": [...]}')
        manual = parse_subscriptions(body["subscriptions"], self.extractors, self.limits)
        auth = self.auth
        tokens = auth.tokens(req)
        claims = auth.valid_claims(tokens)
        subs = merge(manual, self.extractors.automatic(claims))
        cors = self.cors(req)

        def apply():
            # after the check, as in RIG: every token must decode (400), a missing one was 403 above
            auth.verified_claims(tokens)
            sids = auth.session_ids(claims)
            session = self.hub.by_token.get(token)
            if session is None:
                return self._put_elsewhere(proto, req, token, manual, subs, sids, cors)
            if session.closed:
                raise Gone("the connection no longer exists")
            apply_subscriptions(self.hub, session, subs, sids)
            proto.respond(req, 204, b"", None, cors)
            return None

        return self.then(auth.check_subscription(tokens, subs), apply)

    def _put_elsewhere(self, proto, req, token: str, manual: list, subs: list, sids: tuple, cors) -> Any:
        """PUT .../subscriptions for a connection held by another worker or node: checked here, applied there."""
        route = self.owners.route(token) if self.owners is not None else None
        if route is None:
            raise Gone("the connection no longer exists")

        async def run() -> None:
            rep = await self.owners.apply_subscriptions_at(route, token, manual, subs, sids)
            status = rep.get("status") if rep else 410
            if status == 204:
                proto.respond(req, 204, b"", None, cors)
            elif status == 410:
                raise Gone("the connection no longer exists")
            else:
                raise RigError(rep.get("message") or "refused by the connection's worker", status)

        return run()

    # -- event submission -------------------------------------------------------
    def submit(self, proto, req, source: str = "http", checked: bool = True) -> Any:
        event = parse_http_event(req)
        if type(event) is list:
            return self.submit_batch(proto, req, event, source, checked)
        if not checked:
            return self._accept(proto, req, event, source, ())
        auth = self.auth
        check = auth.check_submission(auth.tokens(req), event.json)
        cors = self.cors(req)
        if check is None:  # the hot path: no closure, no task
            return self._accept(proto, req, event, source, cors)
        return self._accept_after(check, proto, req, event, source, cors)

    def _accept_after(self, check: Awaitable, proto, req, event: Event, source: str, cors) -> Any:
        return self.then(check, lambda: self._accept(proto, req, event, source, cors))

    def _accept(self, proto, req, event: Event, source: str, cors) -> None:
        self.hub.publish(event, source)
        proto.respond(req, 202, event.json, JSON_UTF8, cors)

    def submit_batch(self, proto, req, events: list[Event], source: str, checked: bool) -> Any:
        """Batched mode: every event checked, then all published or none (the error names the index)."""
        check = self.auth.check_submissions(self.auth.tokens(req), [e.json for e in events]) if checked else None
        cors = self.cors(req) if checked else ()

        def accept():
            self.hub.publish_all(events, source)
            proto.respond(req, 202, b"[" + b",".join([e.json for e in events]) + b"]", JSON_UTF8, cors)

        return self.then(check, accept)


def greeting(kind: int, token: str, subs: Sequence[Subscription]) -> bytes:
    """rig.connection.create and rig.subscriptions_set of a new SSE or WebSocket session, framed: the
    bytes :func:`make_event` and the hub's encoding would give, made from templates."""
    now = now_rfc3339()
    create = gateway_json("rig.connection.create", random_uuid4(), now, b'{"connection_token":%s,"errors":[]}' % orjson.dumps(token))
    told = gateway_json("rig.subscriptions_set", random_uuid4(), now, subscriptions_json(subs))
    if kind == SSE:
        return encode_sse("rig.connection.create", "", create) + encode_sse("rig.subscriptions_set", "", told)
    return encode_ws_text(create) + encode_ws_text(told)


def valid_ws_key(key: bytes) -> bool:
    """Sec-WebSocket-Key: the base64 encoding of 16 bytes (RFC 6455 4.1)."""
    if len(key) != 24:
        return False
    try:
        return len(base64.b64decode(key, validate=True)) == 16
    except (binascii.Error, ValueError):
        return False


__all__ = ["InboundApi", "Owners", "valid_ws_key"]
