"""Routes of the Phoenix Channels transports: ``/socket/websocket`` and ``/socket/longpoll``.

Connect: serializer ``vsn`` (``2.0.0``, or ``1.0.0``, Phoenix's default), a
JWT in ``jwt`` or ``token`` (or the client's ``authToken``: a
``base64url.bearer.phx.`` WebSocket subprotocol, or ``X-Phoenix-AuthToken``
on long-polling, or an ``Authorization`` header). Every token given must
verify, be unexpired and not blacklisted, else the connection is refused
before it starts: ``403`` (long-polling: ``{"status": 403}``), as Phoenix
refuses a ``connect``.

Long-polling: the client's own session token travels in ``token`` too, after
the page's parameters. The last ``token`` value is the session's when there
are several; a single one is a JWT when it looks like one (``eyJ...``).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
from typing import TYPE_CHECKING, Any

from rigfast.errors import RigError
from rigfast.hub.hub import PHOENIX
from rigfast.net.phoenix import V1, V2, PhxLpSocket, PhxWsSocket
from rigfast.subscriptions import Limits
from rigfast.wire.http1 import ws_accept_key

if TYPE_CHECKING:
    from rigfast.api.inbound import InboundApi, Owners
    from rigfast.auth.authorizer import Authorizer
    from rigfast.hub.hub import Hub
    from rigfast.ids import TokenIssuer

log = logging.getLogger("rigfast.phoenix")

WEBSOCKET_PATH = "/socket/websocket"
LONGPOLL_PATH = "/socket/longpoll"
SERIALIZERS = {"2.0.0": V2, "1.0.0": V1}
AUTH_PROTOCOL_PREFIX = "base64url.bearer.phx."
JSON = b"application/json; charset=utf-8"


class Refused(Exception):
    """The connection is refused (403), with the reason for the log."""


def decode_auth_protocol(value: str) -> str | None:
    raw = value[len(AUTH_PROTOCOL_PREFIX):].replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(raw + "=" * (-len(raw) % 4), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None


class PhoenixApi:
    """``http`` is the public port's API (its CORS headers and connection-rate admission);
    ``owners`` (None on a lone worker) reaches long-polling sessions held elsewhere."""

    def __init__(self, cfg: Any, hub: "Hub", auth: "Authorizer", tokens: "TokenIssuer", http: "InboundApi",
                 owners: "Owners | None"):
        self.cfg = cfg
        self.hub = hub
        self.auth = auth
        self.tokens = tokens
        self.http = http
        self.owners = owners
        self.extractors = cfg.extractors
        self.limits = Limits.from_config(cfg)  # per channel, as per connection on the other transports
        self._tasks: set[asyncio.Task] = set()
        self.lp_sessions = 0  # live Phoenix long-polling sockets, bounded by RIGFAST_LONGPOLL_MAX_SESSIONS

    def new_token(self) -> str:
        return self.tokens.new()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self.hub.loop

    def spawn(self, coro) -> None:
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- connect ------------------------------------------------------------------------
    def _serializer(self, req) -> str:
        vsn = req.query_one("vsn") or "1.0.0"
        fmt = SERIALIZERS.get(vsn)
        if fmt is None:
            raise Refused(f"unsupported serializer vsn {vsn!r}: use 2.0.0 or 1.0.0")
        return fmt

    def _authenticate(self, tokens: list[str]) -> tuple[list[dict], tuple[str, ...]]:
        """Claims and session ids of the connect's tokens; Refused when one does not verify or is blacklisted."""
        verifier, blacklist = self.auth.verifier, self.auth.blacklist
        claims = []
        for t in tokens:
            try:
                c = verifier.verify(t)
            except Exception as exc:  # noqa: BLE001 - InvalidToken, or no key configured
                raise Refused(f"token refused: {getattr(exc, 'message', exc)}") from None
            sid = verifier.session_id(c)
            if sid is not None and blacklist.contains(sid):
                raise Refused("the session of this token has been blacklisted")
            claims.append(c)
        return claims, self.auth.session_ids(claims)

    def _query_tokens(self, req, lp_token: str | None = None) -> list[str]:
        tokens = [t for t in self.auth.tokens(req)]  # Authorization headers and jwt query values
        for t in req.query.get("token", ()) if req.query_string else ():
            if t and t != lp_token and t not in tokens:
                tokens.append(t)
        return tokens

    # -- WebSocket ----------------------------------------------------------------------
    def open_websocket(self, proto, req) -> Any:
        if req.method != "GET":
            raise RigError("method not allowed: use GET", 405)
        key = self.http.ws_key(proto, req)  # the same handshake rules as /_rig/v1/connection/ws
        if key is None:
            return None
        if not self.http.admit(proto, req):
            return None
        tokens = self._query_tokens(req)
        protocol = None
        offered = [p.strip() for p in (req.header_str(b"sec-websocket-protocol") or "").split(",") if p.strip()]
        if offered:
            for p in offered:
                if p.startswith(AUTH_PROTOCOL_PREFIX):
                    t = decode_auth_protocol(p)
                    if t is None:
                        return self._refuse(proto, req, "authToken subprotocol is not base64")
                    if t not in tokens:
                        tokens.append(t)
            protocol = "phoenix" if "phoenix" in offered else None
        try:
            fmt = self._serializer(req)
            claims, sids = self._authenticate(tokens)
        except Refused as exc:
            return self._refuse(proto, req, str(exc))
        sock = PhxWsSocket(self, self.new_token(), fmt, tokens, claims, sids, proto)
        proto.become_stream(sock)
        head = b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-accept: %s\r\n" % ws_accept_key(key)
        if protocol:
            head += b"sec-websocket-protocol: phoenix\r\n"
        proto.write(head + b"\r\n")
        self.hub.register(sock)
        if proto.leftover:  # frames sent along with the handshake
            data, proto.leftover = proto.leftover, b""
            sock.data_received(data)
        return None

    def _refuse(self, proto, req, reason: str) -> None:
        log.info("phoenix connect refused: %s", reason)
        proto.respond_error(req, 403, reason)

    # -- long-polling -------------------------------------------------------------------
    def _lp_token(self, req) -> str | None:
        values = req.query.get("token", []) if req.query_string else []
        values = [v for v in values if v]
        if not values:
            return None
        if len(values) > 1 or not values[0].startswith("eyJ"):
            return values[-1]
        return None

    def longpoll(self, proto, req) -> Any:
        cors = self.http.cors(req, credentials=True)
        method = req.method
        if method == "OPTIONS":
            proto.respond(req, 204, b"", None, cors + [
                (b"access-control-allow-methods", b"GET, POST, OPTIONS"),
                (b"access-control-allow-headers", b"content-type,authorization,x-phoenix-authtoken,accept"),
                (b"access-control-max-age", b"86400"),
            ])
            return None
        if method not in ("GET", "POST"):
            raise RigError("method not allowed: use GET or POST", 405)
        token = self._lp_token(req)
        if token is None:
            if method == "POST":
                return self._lp_answer(proto, req, b'{"status":410}', cors)
            return self._lp_open(proto, req, cors)
        sock = self.hub.by_token.get(token)
        if isinstance(sock, PhxLpSocket) and not sock.closed:
            return sock.lp_request(proto, req, method, req.body, cors)
        if sock is None and self.owners is not None:
            forwarded = self.owners.forward_phoenix(proto, req, token, method, req.body, cors)
            if forwarded is not None:
                return forwarded
        return self._lp_answer(proto, req, b'{"status":410}', cors)

    def _lp_answer(self, proto, req, body: bytes, cors: list) -> None:
        proto.respond(req, 200, body, JSON, cors + [(b"cache-control", b"no-cache")])

    def _lp_open(self, proto, req, cors) -> None:
        cap = self.cfg.longpoll_max_sessions
        if cap and self.lp_sessions >= cap:  # the client retries with back-off (status 0: reconnect)
            proto.respond_error(req, 503, f"too many long-polling sessions: RIGFAST_LONGPOLL_MAX_SESSIONS ({cap}) reached, retry later",
                                [(b"retry-after", b"1")])
            return None
        if not self.http.admit(proto, req):
            return None
        tokens = self._query_tokens(req)
        header_token = req.header_str(b"x-phoenix-authtoken")
        if header_token and header_token not in tokens:
            tokens.append(header_token)
        try:
            fmt = self._serializer(req)
            claims, sids = self._authenticate(tokens)
        except Refused as exc:
            log.info("phoenix long-poll connect refused: %s", exc)
            return self._lp_answer(proto, req, b'{"status":403}', cors)
        sock = PhxLpSocket(self, self.new_token(), fmt, tokens, claims, sids)
        self.hub.register(sock)
        body = b'{"status":410,"token":"%s","messages":[]}' % sock.token.encode()
        return self._lp_answer(proto, req, body, cors)


__all__ = ["PhoenixApi", "PHOENIX", "WEBSOCKET_PATH", "LONGPOLL_PATH"]
