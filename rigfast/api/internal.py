"""Routes of the internal API port: health, metrics, trusted event submission, blacklist.

No authentication unless RIGFAST_API_TOKEN is set (RIG has none): then every route but
``/health`` and ``/health/ready`` wants ``Authorization: Bearer <token>`` and answers 401
without it. Either way, bind the port to a private address (RIGFAST_API_HOST).
"""

from __future__ import annotations

import hmac
import os
import time
from typing import Any, Callable
from urllib.parse import quote

import orjson

from rigfast import cloudevents, metrics
from rigfast.api import openapi
from rigfast.api.swagger import SwaggerUi
from rigfast.auth.blacklist import Blacklist
from rigfast.errors import BadRequest, CloudEventError, NotFound, RigError
from rigfast.hub.hub import Hub


class InternalApi:
    """``submit``: the trusted submission (``InboundApi.submit`` without checks); ``proxy``: the
    ``/v3/apis`` and ``/v3/responses`` routes and its health; ``cluster`` (None on a lone worker):
    the node's metrics and health; ``kafka_health``: the event source's state; ``ready``: answers
    ``GET /health/ready`` (the gateway's readiness)."""

    def __init__(self, hub: Hub, blacklist: Blacklist, submit: Callable[..., Any], proxy: Any, cluster: Any,
                 kafka_health: Callable[[], dict], worker_id: int, ready: Callable[[Any, Any], None] | None = None,
                 api_token: str = ""):
        self.hub = hub
        self.ready = ready
        self.blacklist = blacklist
        self.submit = submit
        self.proxy = proxy
        self.cluster = cluster
        self.kafka_health = kafka_health
        self.worker_id = worker_id
        self.pid = os.getpid()
        self.started = time.monotonic()
        self.bearer = b"bearer " + api_token.encode() if api_token else None
        self.dashboard: Any = None  # rigfast.api.dashboard.Dashboard, set by the gateway
        self.swagger = SwaggerUi()

    def token_in_query(self, req) -> bool:
        given = req.query_one("token")
        return self.bearer is not None and bool(given) and hmac.compare_digest(b"bearer " + given.encode(), self.bearer)

    def authorized(self, req) -> bool:
        """RIGFAST_API_TOKEN unset, or the request carries it as a bearer token (compared in constant time)."""
        if self.bearer is None:
            return True
        for name, value in req.headers:
            if name == b"authorization" and len(value) > 7 and hmac.compare_digest(value[:7].lower() + value[7:].strip(), self.bearer):
                return True
        return False

    def __call__(self, proto, req) -> Any:
        path, method = req.path, req.method
        if path == "/health" and method in ("GET", "HEAD"):
            if "detailed" in req.query and self.authorized(req):
                if self.cluster is not None and self.cluster.bus is not None and "local" not in req.query:
                    return self.node_health(proto, req)  # every worker of the node
                proto.respond(req, 200, orjson.dumps(self.detailed_health()), b"application/json")
            else:
                proto.respond(req, 200, b"OK")
            return None
        if path == "/health/ready" and method in ("GET", "HEAD"):
            if self.ready is None:
                raise NotFound("no readiness here")
            return self.ready(proto, req)
        if (path == "/swagger-ui" or path.startswith("/swagger-ui/")) and method in ("GET", "HEAD"):
            return self.swagger(proto, req, path[len("/swagger-ui"):])  # static files (the document itself is /openapi.json)
        if path in ("/dashboard", "/dashboard/stream") and method == "GET" and self.dashboard is not None:
            # a browser cannot send the bearer header on a page load or an EventSource: ?token= too
            if self.authorized(req) or self.token_in_query(req):
                if path == "/dashboard":
                    return self.dashboard.serve_page(proto, req)
                return self.dashboard.serve_stream(proto, req)
        if not self.authorized(req):
            proto.respond_error(
                req, 401,
                "this API needs the RIGFAST_API_TOKEN bearer token: Authorization: Bearer <token>",
                [(b"www-authenticate", b'Bearer realm="rigfast-api"')],
            )
            return None
        if path == "/metrics" and method == "GET":
            if self.cluster is not None and self.cluster.bus is not None and "local" not in req.query:
                return self.cluster_metrics(proto, req)  # every worker of the node, labelled worker="i"
            proto.respond(req, 200, metrics.REGISTRY.render(), b"text/plain; version=0.0.4; charset=utf-8")
            return None
        if path == "/openapi.json" and method in ("GET", "HEAD"):
            proto.respond(req, 200, openapi.document_json(), b"application/json")
            return None
        # /v2 behaves as RIG 3.0's v2 controllers: messages, apis and the blacklist as in v3;
        # responses take the correlation id from the CloudEvent body only
        version, _, rest = path[1:].partition("/")
        if version in ("v2", "v3"):
            rest = "/" + rest
            if rest == "/messages":
                if method != "POST":
                    raise RigError("method not allowed: use POST", 405)
                return self.submit(proto, req, source="api", checked=False)
            if rest == "/apis" or rest.startswith("/apis/"):
                return self.proxy.apis_api(proto, req, rest[6:])
            if rest == "/responses":
                if version == "v2":
                    v2_response_check(req)
                return self.proxy.responses_api(proto, req)
            if rest == "/session-blacklist" or rest.startswith("/session-blacklist/"):
                return self.blacklist_api(proto, req, rest[len("/session-blacklist"):].lstrip("/"))
        raise NotFound(f"no route for {method} {path}")

    def detailed_health(self) -> dict:
        hub = self.hub
        return {
            "status": "ok",
            "uptime_s": round(time.monotonic() - self.started, 3),
            "connections": {"sse": hub.counts[0], "ws": hub.counts[1], "longpolling": hub.counts[2], "phoenix": hub.counts[3]},
            "subscriptions": hub.index.subscription_count,
            "build": hub.build,
            "worker": self.worker_id,
            "pid": self.pid,
            "kafka": self.kafka_health(),
            "blacklist": len(self.blacklist),
            "cluster": self.cluster.health() if self.cluster is not None else None,
            "proxy": self.proxy.health(),
        }

    async def node_health(self, proto, req) -> None:
        doc = await self.cluster.node_health(self.detailed_health())
        proto.respond(req, 200, orjson.dumps(doc), b"application/json")

    async def cluster_metrics(self, proto, req) -> None:
        text = await self.cluster.metrics_text()
        proto.respond(req, 200, text, b"text/plain; version=0.0.4; charset=utf-8")

    def blacklist_api(self, proto, req, sid: str) -> None:
        bl = self.blacklist
        if req.method == "POST" and not sid:
            try:
                body = orjson.loads(req.body)
            except orjson.JSONDecodeError as exc:
                raise BadRequest(f"body is not valid JSON: {exc}") from None
            if not isinstance(body, dict):
                raise BadRequest('body must be an object like {"sessionId": "...", "validityInSeconds": 60}')
            session_id = body.get("sessionId")
            validity = body.get("validityInSeconds")
            if not isinstance(session_id, str) or not session_id:
                raise BadRequest("sessionId must be a non-empty string")
            if isinstance(validity, str) and validity.isdigit():
                validity = int(validity)
            if not isinstance(validity, (int, float)) or isinstance(validity, bool) or validity <= 0:
                raise BadRequest("validityInSeconds must be a positive number")
            bl.add(session_id, float(validity))
            # RIG: 201, location = the request path plus the id, body {}
            location = req.path.rstrip("/") + "/" + quote(session_id, safe="!$&'()*+,;=:@-._~")
            proto.respond(req, 201, b"{}", b"application/json; charset=utf-8", [(b"location", location.encode("latin-1", "replace"))])
            return
        if req.method == "GET" and sid:
            if bl.contains(sid):
                proto.respond(req, 200, orjson.dumps({"sessionId": sid, "expiresInSeconds": bl.expires_in(sid)}), b"application/json")
                return
            raise NotFound(f"session {sid!r} is not blacklisted")
        raise RigError("method not allowed: POST /v3/session-blacklist or GET /v3/session-blacklist/{sessionId}", 405)


def v2_response_check(req) -> None:
    """RIG's v2 responses controller: the body is a CloudEvent carrying ``rig.correlation``."""
    if req.method != "POST":
        raise RigError("method not allowed: use POST", 405)
    try:
        event = cloudevents.parse_structured(req.body)
    except CloudEventError as exc:
        raise BadRequest(f"Failed to parse request body: {exc.message}") from None
    rig = event.obj.get("rig")
    corr = rig.get("correlation") if isinstance(rig, dict) else None
    if not isinstance(corr, str) or not corr:
        raise BadRequest('Failed to parse request body: missing "rig": {"correlation": "<id>"}')
