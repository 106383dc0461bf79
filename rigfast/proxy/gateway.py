"""The reverse proxy (API gateway): routing inbound requests to upstream HTTP services or Kafka.

How this works: :meth:`Proxy.handle` is called by the inbound router for
every request no ``/_rig`` route takes. It matches the request against the
endpoints of the active APIs (method + ``path_regex`` fully matching the
path; first match in configuration order), checks the JWT of a ``secured``
endpoint of a ``jwt`` API, and then

- target ``http``: normalises the path (:mod:`rigfast.proxy.paths`: the
  upstream gets the path that was matched, or its ``path_replacement``) and
  forwards the request with the pooled client (:mod:`rigfast.net.httpclient`).
  The inbound connection is parked (its pipelined requests wait) and the
  answer is streamed to it as it arrives by a :class:`_Relay` (the
  connection's ``flow``: back-pressure both ways): no Task, no Future on
  this hot path. A WebSocket upgrade gets a connection of its own to the
  upstream and, after its ``101``, becomes a byte pipe (:class:`_Tunnel`);
- ``response_from: http_async``: forwards it with a ``rig-correlation``
  header and waits for ``POST /v3/responses`` carrying the same id;
- target ``kafka``: produces a CloudEvent to the endpoint's topic; with
  ``response_from: kafka`` it waits for a record with that id on
  ``PROXY_KAFKA_RESPONSE_TOPICS``.

Correlation ids are ``<connection-token prefix><random>``: when clustered
they name the worker that waits (like connection tokens), so a
``/v3/responses`` call reaching another worker or node is forwarded there
(:meth:`rigfast.cluster.node.Cluster.forward_proxy_response`).

APIs changed at runtime (``/v3/apis``) are versioned (last writer wins, by
wall-clock time then origin) and replicated by the cluster: to the node's
workers over the bus (and to a restarted worker when its links come up) and
to other nodes over the cluster topic.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import TYPE_CHECKING, Any, Awaitable, Protocol

import orjson

from rigfast import metrics
from rigfast.cloudevents import now_rfc3339, parse_http_event, random_uuid4
from rigfast.errors import BadRequest, NotFound, RigError
from rigfast.auth.authorizer import Authorizer
from rigfast.ids import TokenIssuer
from rigfast.logs import RateLimitedLogger
from rigfast._ext import forward_fields
from rigfast._ext.heads_ref import HOP_BY_HOP
from rigfast.net.httpclient import CHUNKED, LENGTH, NO_BODY, UNTIL_CLOSE, HttpClient, Sink, UpstreamError
from rigfast.proxy.apis import Api, ApiError, Endpoint, RouteTable, parse_api
from rigfast.wire.http1 import STATUS_LINES

if TYPE_CHECKING:
    from rigfast.net.protocol import HttpProtocol
    from rigfast.wire.http1 import Request

log = logging.getLogger("rigfast.proxy")
_rl = RateLimitedLogger(log, 10.0)

JSON = b"application/json; charset=utf-8"
# HOP_BY_HOP: never forwarded, either way (RFC 9110 7.6.1); plus what the proxy sets itself.
_REQ_SKIP = HOP_BY_HOP | {b"host", b"content-length", b"expect"}
_RESP_SKIP = HOP_BY_HOP | {b"content-length"}
_CONN_TOKENS_IGNORED = frozenset((b"close", b"keep-alive", b"upgrade", b""))
_PLAIN_CONNECTION = frozenset((b"keep-alive", b"close", b"Keep-Alive", b"Close"))
_STATUS_STR = {s: str(s) for s in range(100, 600)}
_NO_BODY_METHODS = frozenset(("GET", "HEAD", "DELETE", "OPTIONS", "TRACE"))
_METHODS = {m: m.encode() for m in ("GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE")}
STREAM_BODY_OVER = 64 << 10  # request bodies larger than this (or chunked) stream to the upstream


def _rig_status(status: int, ep) -> str:
    """RIG's status word for what the proxy answered (rig_proxy_requests_total{status})."""
    if ep is None:
        return "not_found"
    if status == 502:
        return "unreachable"
    if status == 504:
        return "response_timeout" if ep.response_from is not None else "request_timeout"
    if status == 401:
        return "unauthorized"
    if status == 400 and ep.target == "kafka":
        return "bad_request"
    return "ok"


def _count(status: int, req=None) -> None:
    """One proxied request, with RIG's labels (method, path regex, target, response_from, status) and
    rigfast's own code (the HTTP status answered); an endpoint keeps its label tuples."""
    ep = req.route if req is not None else None
    if ep is None:
        labels = (req.method if req is not None else "N/A", "N/A", "N/A", "N/A", "not_found",
                  _STATUS_STR.get(status) or str(status))
    else:
        key = (req.method, status)
        labels = ep.labels.get(key)
        if labels is None:
            labels = ep.labels[key] = (req.method, ep.regex.pattern, ep.target, ep.response_from or "http",
                                       _rig_status(status, ep), _STATUS_STR.get(status) or str(status))
    counter = metrics.PROXY_REQUESTS
    values = counter.values
    if labels in values:  # (Counter.inc's first case, without its call)
        values[labels] += 1
    else:
        counter.inc(1, *labels)


def _without_connection_named(lines: list[bytes], connection: bytes) -> list[bytes]:
    """Header lines minus those the Connection header names (hop-by-hop for this hop only)."""
    named = {t.strip().lower() for t in connection.split(b",")} - _CONN_TOKENS_IGNORED
    if not named:
        return lines
    return [line for line in lines if line.split(b":", 1)[0] not in named]


class _Forward:
    """What forwarding to one HTTP endpoint reads of it, read once (kept on the endpoint, ``Endpoint.plan``)."""

    __slots__ = ("http", "key", "label", "host_line", "added", "add_headers")

    def __init__(self, ep: Endpoint):
        up = ep.api.upstream
        self.http = ep.target == "http" and ep.response_from is None  # streamed through a relay
        self.key = up.key if up is not None else None
        self.label = up.label if up is not None else ""
        self.added = ep.added
        self.add_headers = ep.add_headers
        self.host_line = up.host_line if up is not None and b"host" not in ep.added else b""


def _plan(ep: Endpoint) -> _Forward:
    plan = ep.plan
    if plan is None:
        plan = ep.plan = _Forward(ep)
    return plan


def _connection_named(headers: list) -> set | None:
    """The field names the request's Connection fields list (hop-by-hop for this hop only), or None."""
    named = None
    for k, v in headers:
        if k == b"connection" and v not in _PLAIN_CONNECTION:
            tokens = {t.strip().lower() for t in v.split(b",")} - _CONN_TOKENS_IGNORED
            if tokens:
                named = tokens if named is None else named | tokens
    return named

class Peers(Protocol):
    """What the proxy calls in the cluster (``rigfast.cluster.node.Cluster``)."""

    me: str

    def publish_apis(self, entries: list) -> None: ...

    def forward_proxy_response(self, corr: str, code: int, ctype: bytes | None, body: bytes) -> Awaitable[bool] | None: ...


class Proxy:
    """``auth``: token checks of secured endpoints; ``tokens``: correlation ids that route back to
    this worker; ``peers`` (None on a lone worker): API changes and answers for other workers."""

    def __init__(self, cfg: Any, loop: asyncio.AbstractEventLoop, auth: Authorizer, tokens: TokenIssuer,
                 peers: Peers | None):
        self.cfg = cfg
        self.loop = loop
        self.auth = auth
        self.tokens = tokens
        self.peers = peers
        self.pid = os.getpid()
        self.client = HttpClient(self.loop, cfg.proxy_recv_timeout / 1000.0, max_conns=cfg.proxy_max_conns,
                                 max_response_bytes=cfg.proxy_max_response_bytes)
        self.kafka_timeout_s = cfg.proxy_kafka_response_timeout / 1000.0
        self.async_timeout_s = cfg.proxy_http_async_response_timeout / 1000.0
        self.apis: dict[str, Api] = {a.id: a for a in (cfg.proxy_apis or ())}
        # version of every id ever seen: (wall-clock seconds, origin); configuration-file APIs are (0, "")
        self.versions: dict[str, tuple[float, str]] = {i: (0.0, "") for i in self.apis}
        self.table = RouteTable(list(self.apis.values()))
        self.waiting: dict[str, asyncio.Future] = {}
        self.kafka: Any = None
        self._tls_of: dict[int, bytes] = {}  # id(port's ServerState) -> its X-Forwarded-Proto line
        self.length_lines: dict[int, bytes] = {}  # see length_line
        self.length_lines_max = cfg.proxy_length_lines  # RIGFAST_PROXY_LENGTH_LINES

    def length_line(self, n: int) -> bytes:
        """``content-length: n`` with its CRLF: formatted once per length (bodies repeat sizes), at most
        RIGFAST_PROXY_LENGTH_LINES of them kept (emptied when full)."""
        lines = self.length_lines
        line = lines.get(n)
        if line is None:
            line = b"content-length: %d\r\n" % n
            if self.length_lines_max:
                if len(lines) >= self.length_lines_max:
                    lines.clear()
                lines[n] = line
        return line

    # -- lifecycle ------------------------------------------------------------------
    async def start(self) -> None:
        for api in self.apis.values():
            self._kafka_for(api)

    async def stop(self) -> None:
        for fut in self.waiting.values():
            if not fut.done():
                fut.cancel()
        self.client.close()
        if self.kafka is not None:
            await self.kafka.stop()

    def _kafka_for(self, api: Api) -> None:
        if not api.needs_kafka or not self.cfg.kafka_brokers:
            return
        if self.kafka is None:
            from rigfast.proxy.kafka import ProxyKafka

            self.kafka = ProxyKafka(self.cfg, self.loop, self.on_kafka_response)
        if any(e.target == "kafka" for e in api.endpoints):
            self.kafka.start_producer()
            for e in api.endpoints:
                if e.target == "kafka":  # the series exist from the start (0), as RIG declares them
                    metrics.PRODUCED.inc(0, "kafka", e.topic)
                    metrics.PRODUCE_FAILED.inc(0, "kafka", e.topic)
        if any(e.response_from == "kafka" for e in api.endpoints):
            self.kafka.start_consumer()

    def health(self) -> dict:
        return {
            "apis": len(self.apis),
            "waiting": len(self.waiting),
            # by the label logs use too: a use_env upstream is named by its variable, never by the value
            "upstreams": {p.label: {"open": len(p.conns), "idle": len(p.idle), "queued": len(p.waiting), "opened": p.opened}
                          for p in self.client.pools.values()},
            "kafka": self.kafka.health() if self.kafka is not None else {"state": "disabled"},
        }

    # -- the hot path -----------------------------------------------------------------
    def _route(self, req: "Request") -> tuple[Endpoint | None, bytes, int, str]:
        """(endpoint, forwarded target, error status, error message) for a request."""
        url = req.url
        q = url.find(b"?")
        hit = self.table.resolve(req.method, url if q < 0 else url[:q], req.path)  # the table's cached tuple
        ep = req.route = hit[0]
        if ep is None:
            return hit
        if ep.secured and ep.api.auth_type == "jwt" and not self._authorized(ep.api, req):
            return None, b"", 401, self._why_unauthorized
        if q >= 0:
            return ep, hit[1] + url[q:], 0, ""
        return hit

    def handle(self, proto: "HttpProtocol", req: "Request") -> Any:
        ep, target, status, message = self._route(req)
        if ep is None:
            self._error(proto, req, status, message)
            return None
        plan = _plan(ep)
        if not plan.http:
            if ep.target == "kafka":
                return self._to_kafka(proto, req, ep)
            return self._http_async(proto, req, ep, target)
        assert plan.key is not None  # (an http endpoint's API has an upstream)
        if req.upgrade and (req.header(b"upgrade") or b"").lower() == b"websocket":
            relay: _Relay = _Tunnel(self, proto, req)
            proto.park()
            proto.flow = relay
            relay.ex = self.client.tunnel(plan.key, self._encode(proto, req, ep, None, target, upgrade=True), relay,
                                          plan.label)
            return None
        relay = _Relay(self, proto, req)
        proto.park()
        proto.flow = relay
        relay.ex = self.client.request(plan.key, self._encode(proto, req, ep, None, target), req.method, relay, None,
                                       plan.label)
        return None

    def stream_upload(self, proto: "HttpProtocol", req: "Request") -> Any:
        """At the head of a request with a body: stream it to the upstream when it is large or chunked.

        Returns the body sink, or None to let the request be read whole and handled as usual
        (small bodies, non-proxy routes, Kafka and http_async endpoints, refusals).
        """
        if req.path.startswith("/_rig"):
            return None
        cl = req.header(b"content-length")
        chunked = cl is None
        if not chunked:
            try:
                if int(cl) <= STREAM_BODY_OVER:
                    return None
            except ValueError:
                return None
        ep, target, _, _ = self._route(req)
        if ep is None or ep.target != "http" or ep.response_from is not None or req.upgrade:
            return None
        up = ep.api.upstream
        assert up is not None
        head = self._encode(proto, req, ep, None, target, body_length=None if chunked else int(cl))
        relay = _Relay(self, proto, req)
        relay.uploading = True
        proto.park()
        proto.flow = relay
        relay.ex = self.client.request(up.key, head, req.method, relay, None, up.label, True)
        return _Upload(relay, chunked)

    def _encode(self, proto: "HttpProtocol", req: "Request", ep: Endpoint, correlation: bytes | None,
                target: bytes, upgrade: bool = False, body_length: int | None | bool = False) -> bytes:
        """The upstream request: method, target, headers minus hop-by-hop, X-Forwarded-*, body.

        ``body_length``: False, the body is ``req.body``; an int or None (chunked), the head only, for
        a body that streams after it.
        """
        plan = _plan(ep)
        added = plan.added
        peer = proto.peer
        peer = peer[0].encode() if peer else b"unknown"
        xff = peer
        fwd_proto = fwd_host = True
        host = None
        named = _connection_named(req.headers)
        # the pieces of the request, joined once at the end
        out = [_METHODS.get(req.method) or req.method.encode(), b" ", target, b" HTTP/1.1\r\n"]
        app = out.append
        for k, v in req.headers:
            if k in _REQ_SKIP:
                if k == b"host":
                    host = v
                continue
            if k in added or (named is not None and k in named):
                continue
            if k == b"x-forwarded-for":
                xff = v + b", " + peer
                continue
            if k == b"x-forwarded-proto":
                fwd_proto = False
            elif k == b"x-forwarded-host":
                fwd_host = False
            app(k)
            app(b": ")
            app(v)
            app(b"\r\n")
        if added:
            for k, v in plan.add_headers:
                app(b"%s: %s\r\n" % (k, v))
        app(b"x-forwarded-for: ")
        app(xff)
        app(b"\r\n")
        if fwd_proto:
            app(self._tls_of.get(id(proto.server)) or self._scheme_line(proto))
        if fwd_host and host is not None:
            app(b"x-forwarded-host: ")
            app(host)
            app(b"\r\n")
        if correlation is not None:
            app(b"rig-correlation: %s\r\n" % correlation)
        if upgrade:
            app(b"connection: upgrade\r\nupgrade: websocket\r\n")
        body = req.body
        if body_length is not False:
            body = b""
            app(b"transfer-encoding: chunked\r\n" if body_length is None else self.length_line(body_length))
        elif body or req.method not in _NO_BODY_METHODS:
            app(self.length_line(len(body)))
        app(plan.host_line)
        app(b"\r\n")
        if body:
            app(body)
        return b"".join(out)

    def _scheme_line(self, proto: "HttpProtocol") -> bytes:
        """The X-Forwarded-Proto line of the port a request came in on (looked up once per port)."""
        tls = proto.transport.get_extra_info("sslcontext") is not None if proto.transport else False
        line = b"x-forwarded-proto: https\r\n" if tls else b"x-forwarded-proto: http\r\n"
        self._tls_of[id(proto.server)] = line
        return line

    def _pass_back(self, proto: "HttpProtocol", req: "Request", status: int, headers: list, body: bytes) -> None:
        """The upstream's answer to the client: its status and headers (minus hop-by-hop), its body."""
        _count(status, req)
        if proto.closing:
            return
        out = [STATUS_LINES.get(status) or b"HTTP/1.1 %d Unknown\r\n" % status]
        app = out.append
        keep_length = req.method == "HEAD" or status == 304
        conn_named = None
        for k, v in headers:
            if k in _RESP_SKIP:
                if k == b"content-length" and keep_length:
                    app(b"content-length: %s\r\n" % v)
                elif k == b"connection":
                    conn_named = v
                continue
            app(b"%s: %s\r\n" % (k, v))
        if conn_named is not None and conn_named not in _PLAIN_CONNECTION:
            out = _without_connection_named(out, conn_named)
            app = out.append
        if not keep_length and status >= 200 and status != 204:
            app(self.length_line(len(body)))
        keep = req.keep_alive
        if not keep:
            app(b"connection: close\r\n")
        app(b"\r\n")
        if body and req.method != "HEAD":
            app(body)
        proto.transport.write(b"".join(out))  # type: ignore[union-attr]
        if not keep:
            proto.close()

    def _error(self, proto: "HttpProtocol", req: "Request", status: int, message: str) -> bool:
        _count(status, req)
        proto.respond_error(req, status, message)
        return True

    # -- authorization -----------------------------------------------------------------
    _why_unauthorized = "Unauthorized: this endpoint needs a valid JWT"

    def _authorized(self, api: Api, req: "Request") -> bool:
        tokens: list[str] = []
        if api.header_name is not None:
            for k, v in req.headers:
                if k == api.header_name:
                    for part in v.decode("latin-1").split(","):
                        part = part.strip()
                        if part[:7].lower() == "bearer ":
                            part = part[7:].strip()
                        if part:
                            tokens.append(part)
        if api.query_name is not None and req.query_string:
            for raw in req.query.get(api.query_name, ()):
                raw = raw.strip()
                if raw[:7].lower() == "bearer ":
                    raw = raw[7:].strip()
                if raw:
                    tokens.append(raw)
        if not tokens:
            return False
        return bool(self.auth.valid_claims(tokens))

    # -- correlated responses ------------------------------------------------------------
    def new_correlation(self) -> str:
        return self.tokens.new()

    def _respond_correlated(self, proto, req, result: tuple[int, bytes | None, bytes]) -> None:
        status, ctype, body = result
        _count(status, req)
        proto.respond(req, status, body, ctype)

    def _http_async(self, proto, req, ep: Endpoint, target: bytes) -> Any:
        corr = self.new_correlation()
        data = self._encode(proto, req, ep, corr.encode(), target)
        fut = self.loop.create_future()
        self.waiting[corr] = fut
        up = ep.api.upstream

        async def run() -> None:
            try:
                try:
                    status, headers, body = await self.client.fetch(up.key, data, req.method,  # type: ignore[union-attr]
                                                                    max_body=self.client.max_response_bytes)
                except UpstreamError as exc:
                    self._error(proto, req, exc.status, exc.message)
                    return
                if not 200 <= status < 300:
                    self._pass_back(proto, req, status, headers, body)  # the upstream refused: its answer
                    return
                await self._answer_correlated(proto, req, corr, fut, self.async_timeout_s,
                                              "PROXY_HTTP_ASYNC_RESPONSE_TIMEOUT")
            finally:
                self.waiting.pop(corr, None)

        return run()

    async def _answer_correlated(self, proto, req, corr: str, fut, timeout_s: float, setting: str) -> None:
        """Answer the client with the correlated response, or 504 naming the timeout setting (not its value)."""
        try:
            result = await asyncio.wait_for(fut, timeout_s)
        except asyncio.TimeoutError:
            self._error(proto, req, 504, f"Gateway timeout: no response for correlation id {corr} in time ({setting})")
            return
        self._respond_correlated(proto, req, result)

    def deliver(self, corr: str, status: int, ctype: bytes | None, body: bytes) -> bool:
        """A correlated response for a request waiting here; False when none waits for ``corr``."""
        fut = self.waiting.get(corr)
        if fut is None or fut.done():
            return False
        fut.set_result((status, ctype, body))
        return True

    def on_kafka_response(self, corr: str | None, status: int | None, value: bytes, headers: dict) -> None:
        obj = None
        if corr is None or status is None:
            try:
                obj = orjson.loads(value)
            except orjson.JSONDecodeError:
                obj = None
            if corr is None and isinstance(obj, dict) and isinstance(obj.get("rig"), dict):
                c = obj["rig"].get("correlation")
                corr = c if isinstance(c, str) else None
        if corr is None or corr not in self.waiting:
            return
        ctype = headers.get("content-type")
        if ctype is None and value[:1] in (b"{", b"["):
            ctype = JSON
        self.deliver(corr, status or 200, ctype, value)

    def responses_api(self, proto, req) -> Any:
        """POST /v3/responses: the answer to a request waiting under ``rig-correlation``."""
        if req.method != "POST":
            raise RigError("method not allowed: use POST", 405)
        corr = req.header_str(b"rig-correlation")
        if not corr:
            try:
                obj = orjson.loads(req.body) if req.body else None
            except orjson.JSONDecodeError:
                obj = None
            rig = obj.get("rig") if isinstance(obj, dict) else None
            corr = rig.get("correlation") if isinstance(rig, dict) else None
            if not isinstance(corr, str) or not corr:
                raise BadRequest("missing rig-correlation header: the correlation id of the request to answer")
        code = req.header(b"rig-response-code")
        status = 200
        if code is not None:
            try:
                status = int(code)
            except ValueError:
                raise BadRequest("rig-response-code must be an HTTP status code") from None
            if not 100 <= status <= 599:
                raise BadRequest("rig-response-code must be an HTTP status code")
        ctype = req.header(b"content-type")
        corr = corr.strip()
        if self.deliver(corr, status, ctype, req.body):
            proto.respond(req, 202, b"", None)
            return None
        if self.peers is not None:
            forwarded = self.peers.forward_proxy_response(corr, status, ctype, req.body)
            if forwarded is not None:
                async def run() -> None:
                    if await forwarded:
                        proto.respond(req, 202, b"", None)
                    else:
                        proto.respond_error(req, 404, f"no request waits for correlation id {corr} (answered, timed out or unknown)")
                return run()
        raise NotFound(f"no request waits for correlation id {corr} (answered, timed out or unknown)")

    # -- target kafka ----------------------------------------------------------------------
    def _kafka_value(self, req, corr: str, ep: Endpoint) -> bytes:
        """The request as a CloudEvent (as it is when it is one, else wrapped), with rig.correlation."""
        obj = None
        ctype = req.header_str(b"content-type") or ""
        looks_ce = req.header(b"ce-specversion") is not None or "cloudevents" in ctype or b'"specversion"' in req.body[:4096]
        if looks_ce:
            try:
                parsed = parse_http_event(req)
                obj = None if type(parsed) is list else dict(parsed.obj)  # a batch is wrapped like any body
            except RigError:  # not a valid CloudEvent after all: wrapped below
                obj = None
        if obj is None:
            data: Any = None
            if req.body:
                try:
                    data = orjson.loads(req.body)
                except orjson.JSONDecodeError:
                    data = req.body.decode("utf-8", "replace")
            obj = {
                "specversion": "1.0",
                "type": "rig.proxy.request",
                "source": f"/rig/proxy/{ep.api.id}/{ep.id}",
                "id": random_uuid4(),
                "time": now_rfc3339(),
                "datacontenttype": "application/json",
                "data": {"method": req.method, "path": req.path, "query": req.query_string, "body": data},
            }
        rig = obj.get("rig")
        obj["rig"] = dict(rig, correlation=corr) if isinstance(rig, dict) else {"correlation": corr}
        return orjson.dumps(obj)

    def _to_kafka(self, proto, req, ep: Endpoint) -> Any:
        kafka = self.kafka
        if kafka is None or kafka.producer is None:
            self._error(proto, req, 502, "Kafka is not available for this endpoint (KAFKA_BROKERS)")
            return None
        corr = self.new_correlation()
        value = self._kafka_value(req, corr, ep)
        wait = ep.response_from == "kafka"

        async def run() -> None:
            fut = None
            if wait:
                if kafka.ready is not None and not kafka.ready.done():
                    try:
                        await asyncio.wait_for(asyncio.shield(kafka.ready), self.kafka_timeout_s)
                    except asyncio.TimeoutError:
                        self._error(proto, req, 504, "the Kafka response consumer is not ready (PROXY_KAFKA_RESPONSE_TOPICS)")
                        return
                fut = self.waiting[corr] = self.loop.create_future()
            try:
                try:
                    await asyncio.wait_for(kafka.produce(ep.topic, value, [("rig-correlation", corr.encode()),
                                                                              ("content-type", b"application/cloudevents+json")]),
                                           self.cfg.proxy_recv_timeout / 1000.0)
                except (asyncio.TimeoutError, RuntimeError) as exc:
                    metrics.PRODUCE_FAILED.inc(1, "kafka", ep.topic)
                    _rl.warning(f"produce:{ep.topic}", "proxy: could not produce to Kafka topic %s: %s", ep.topic,
                                exc or "timeout")
                    self._error(proto, req, 502, "Bad gateway: could not forward the request to Kafka")
                    return
                metrics.PRODUCED.inc(1, "kafka", ep.topic)
                if fut is None:
                    _count(202, req)
                    proto.respond(req, 202, value, JSON)
                    return
                await self._answer_correlated(proto, req, corr, fut, self.kafka_timeout_s, "PROXY_KAFKA_RESPONSE_TIMEOUT")
            finally:
                self.waiting.pop(corr, None)

        return run()

    # -- /v3/apis ----------------------------------------------------------------------------
    def apis_api(self, proto, req, api_id: str) -> Any:
        m = req.method
        if not api_id:
            if m == "GET":
                proto.respond(req, 200, orjson.dumps([a.raw for a in self.apis.values()]), JSON)
                return None
            if m == "POST":
                api = self._parse_body(req, None)
                if api.id in self.apis:
                    raise RigError(f"an API with id {api.id!r} exists already: PUT /v3/apis/{api.id} replaces it", 409)
                self._change(api.id, api)
                proto.respond(req, 201, orjson.dumps(api.raw), JSON, [(b"location", f"/v3/apis/{api.id}".encode())])
                return None
            raise RigError("method not allowed: GET or POST /v3/apis", 405)
        if m == "GET":
            api = self.apis.get(api_id)
            if api is None:
                raise NotFound(f"no API with id {api_id!r}")
            proto.respond(req, 200, orjson.dumps(api.raw), JSON)
            return None
        if m == "PUT":
            if api_id not in self.apis:
                raise NotFound(f"no API with id {api_id!r}: POST /v3/apis adds one")
            api = self._parse_body(req, api_id)
            self._change(api_id, api)
            proto.respond(req, 200, orjson.dumps(api.raw), JSON)
            return None
        if m == "DELETE":
            if api_id not in self.apis:
                raise NotFound(f"no API with id {api_id!r}")
            self._change(api_id, None)
            proto.respond(req, 204, b"", None)
            return None
        raise RigError("method not allowed: GET, PUT or DELETE /v3/apis/{id}", 405)

    def _parse_body(self, req, api_id: str | None) -> Api:
        try:
            obj = orjson.loads(req.body)
        except orjson.JSONDecodeError as exc:
            raise BadRequest(f"body is not valid JSON: {exc}") from None
        if api_id is not None and isinstance(obj, dict):
            if obj.get("id") not in (None, api_id):
                raise BadRequest(f"the body's id {obj.get('id')!r} differs from the path's {api_id!r}")
            obj["id"] = api_id
        try:
            return parse_api(obj, kafka=bool(self.cfg.kafka_brokers))
        except ApiError as exc:
            raise BadRequest(f"invalid API: {exc}") from None

    def _change(self, api_id: str, api: Api | None) -> None:
        held = self.versions.get(api_id, (0.0, ""))
        origin = self.peers.me if self.peers is not None else str(self.pid)
        version = (max(time.time(), held[0] + 1e-6), origin)
        self._apply(api_id, version, api)
        if self.peers is not None:
            self.peers.publish_apis([[api_id, version[0], version[1], api.raw if api is not None else None]])

    def _apply(self, api_id: str, version: tuple[float, str], api: Api | None) -> None:
        self.versions[api_id] = version
        if api is None:
            self.apis.pop(api_id, None)
        else:
            self.apis[api_id] = api
            self._kafka_for(api)
        self.table = RouteTable(list(self.apis.values()))

    # -- replication (called by the cluster) ---------------------------------------------------
    def snapshot(self) -> list:
        """Every runtime change still in force (deletions included), for a peer that (re)joins."""
        return [[i, ts, origin, self.apis[i].raw if i in self.apis else None]
                for i, (ts, origin) in self.versions.items() if ts > 0]

    def apply_remote(self, entries: list) -> None:
        for api_id, ts, origin, raw in entries:
            version = (float(ts), str(origin))
            if version <= self.versions.get(api_id, (0.0, "")):
                continue
            api = None
            if raw is not None:
                try:
                    api = parse_api(raw, kafka=bool(self.cfg.kafka_brokers))
                except ApiError as exc:
                    log.error("proxy: replicated API %r refused: %s", api_id, exc)
                    continue
            self._apply(api_id, version, api)
            log.info("proxy: API %r %s (replicated from %s)", api_id, "deleted" if api is None else "updated", origin)


class _Relay(Sink):
    """Streams one upstream answer to the client as it arrives (the client's ``HttpProtocol.flow``).

    What one read from the upstream brought is written with one write
    (``flush``). Back-pressure: a client whose send buffer fills pauses the
    upstream's reading (``pause_writing``/``resume_writing``); an upstream
    that does not take a request body fast enough pauses the client's
    (``pause_source``/``resume_source``). A client that leaves cancels the
    exchange. Bodies of unknown length go on chunked (close-delimited to a
    client that does not keep the connection).
    """

    __slots__ = ("proxy", "proto", "req", "ex", "out", "chunked", "keep", "started", "finished", "source_paused",
                 "uploading")

    def __init__(self, proxy: Proxy, proto: "HttpProtocol", req: "Request"):
        self.proxy = proxy
        self.proto = proto
        self.req = req
        self.ex: Any = None
        self.out: list[bytes] = []
        self.chunked = False
        self.keep = req.keep_alive and not proto.server.draining
        self.started = False
        self.finished = False
        self.source_paused = False
        self.uploading = False  # the request body is still streaming from the client

    # -- from the upstream client --------------------------------------------------
    def head(self, status: int, head: bytes, fields: int, end: int, kind: int, length: int) -> None:
        """The upstream's fields pass on as it wrote them, minus the hop-by-hop ones (rigfast._ext.heads)."""
        req = self.req
        _count(status, req)
        self.started = True
        if self.uploading:
            self.keep = False  # answered before the client's body ended: the connection cannot go on
        keep_length = kind == NO_BODY and (req.method == "HEAD" or status == 304)
        out = self.out
        out.append(STATUS_LINES.get(status) or b"HTTP/1.1 %d Unknown\r\n" % status)
        out.append(forward_fields(head, fields, end, keep_length))
        if kind == LENGTH:
            out.append(self.proxy.length_line(length))
        elif kind == CHUNKED or kind == UNTIL_CLOSE:
            if self.keep:
                self.chunked = True
                out.append(b"transfer-encoding: chunked\r\n")
        elif not keep_length and status != 204 and status >= 200:
            out.append(b"content-length: 0\r\n")
        out.append(b"\r\n" if self.keep else b"connection: close\r\n\r\n")

    def body(self, chunk: bytes) -> None:
        if self.chunked:
            self.out.append(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        else:
            self.out.append(chunk)

    def end(self) -> None:
        if self.chunked:
            self.out.append(b"0\r\n\r\n")
        self.finished = True

    def flush(self) -> None:
        proto = self.proto
        out = self.out
        if out:
            self.out = []
            if not proto.closing:
                proto.transport.write(out[0] if len(out) == 1 else b"".join(out))  # type: ignore[union-attr]
        if self.finished:
            self._release()
            if not self.keep:
                proto.close()
            proto.unpark()

    def error(self, status: int, message: str) -> None:
        proto = self.proto
        self._release()
        if self.started:
            proto.abort()  # mid-answer: the client must see a cut, not a complete-looking answer
            return
        if self.uploading:
            self.req.keep_alive = False  # the rest of the body will not be read
        self.proxy._error(proto, self.req, status, message)
        proto.unpark()

    def _release(self) -> None:
        proto = self.proto
        if proto.flow is self:
            proto.flow = None
        if self.source_paused:
            self.resume_source()
        self.ex = None  # the exchange (done) refers to this relay: no cycle left for the collector

    # -- flow control ---------------------------------------------------------------
    def pause_writing(self) -> None:  # the client's send buffer is full
        if self.ex is not None:
            self.ex.pause()

    def resume_writing(self) -> None:
        if self.ex is not None:
            self.ex.resume()

    def pause_source(self) -> None:  # the upstream's send buffer is full: stop reading the client
        proto = self.proto
        if not self.source_paused and proto.transport is not None and not proto.closing:
            self.source_paused = True
            proto.transport.pause_reading()

    def resume_source(self) -> None:
        proto = self.proto
        if self.source_paused:
            self.source_paused = False
            if proto.transport is not None and not proto.closing:
                proto.transport.resume_reading()

    def connection_lost(self) -> None:  # the client left
        if self.ex is not None:
            self.ex.cancel()


class _Upload:
    """The client's request body, as it arrives, to the upstream (chunk-framed when the client's was)."""

    __slots__ = ("relay", "chunked")

    def __init__(self, relay: _Relay, chunked: bool):
        self.relay = relay
        self.chunked = chunked

    def body(self, chunk: bytes) -> None:
        ex = self.relay.ex
        if ex is not None and not ex.done:
            ex.send_body(b"%x\r\n%s\r\n" % (len(chunk), chunk) if self.chunked else chunk)

    def end(self) -> None:
        relay = self.relay
        relay.uploading = False
        ex = relay.ex
        if ex is not None and not ex.done:
            if self.chunked:
                ex.send_body(b"0\r\n\r\n")
            ex.end_body()


class _Tunnel(_Relay):
    """A WebSocket upgrade: after the upstream's 101, bytes both ways until either side closes."""

    __slots__ = ()

    def upgraded(self, status: int, headers: list, rest: bytes) -> None:
        _count(status, self.req)
        self.started = True
        proto = self.proto
        if proto.closing:
            self.ex.cancel()
            return
        out = [STATUS_LINES.get(status) or b"HTTP/1.1 101 Switching Protocols\r\n"]
        for k, v in headers:
            if k not in _RESP_SKIP:
                out.append(b"%s: %s\r\n" % (k, v))
        out.append(b"connection: upgrade\r\nupgrade: websocket\r\n\r\n")
        proto.transport.write(b"".join(out) + rest)  # type: ignore[union-attr]
        leftover = proto.leftover
        proto.leftover = b""
        proto.become_stream(self)  # the client's bytes now come to data_received
        if leftover:
            self.ex.write(leftover)

    def data(self, data: bytes) -> None:  # upstream -> client
        self.proto.write(data)

    def closed(self) -> None:  # the upstream closed
        self.proto.flow = None
        self.proto.close()

    def data_received(self, data: bytes) -> None:  # client -> upstream
        self.ex.write(data)

    def handle_slow_consumer(self) -> None:
        self.pause_writing()
