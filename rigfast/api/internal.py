"""Routes of the internal API port: health, metrics, trusted event submission, blacklist.

No authentication here: bind it to a private address (RIGFAST_API_HOST).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import orjson

from rigfast import metrics
from rigfast.api import openapi
from rigfast.errors import NotFound, RigError

if TYPE_CHECKING:
    from rigfast.app import Gateway


class InternalApi:
    def __init__(self, gw: "Gateway"):
        self.gw = gw
        self.started = time.monotonic()

    def __call__(self, proto, req) -> Any:
        path, method = req.path, req.method
        if path == "/health" and method in ("GET", "HEAD"):
            if "detailed" in req.query:
                proto.respond(req, 200, orjson.dumps(self.detailed_health()), b"application/json")
            else:
                proto.respond(req, 200, b"OK")
            return None
        if path == "/metrics" and method == "GET":
            if self.gw.cluster is not None and self.gw.cluster.bus is not None and "local" not in req.query:
                return self.cluster_metrics(proto, req)  # every worker of the node, labelled worker="i"
            proto.respond(req, 200, metrics.REGISTRY.render(), b"text/plain; version=0.0.4; charset=utf-8")
            return None
        if path == "/openapi.json" and method in ("GET", "HEAD"):
            proto.respond(req, 200, openapi.document_json(), b"application/json")
            return None
        if path == "/v3/messages":
            if method != "POST":
                raise RigError("method not allowed: use POST", 405)
            return self.gw.inbound.submit(proto, req, source="api", checked=False)
        if path == "/v3/apis" or path.startswith("/v3/apis/"):
            return self.gw.proxy.apis_api(proto, req, path[9:])
        if path == "/v3/responses":
            return self.gw.proxy.responses_api(proto, req)
        for prefix in ("/v3/session-blacklist", "/v2/session-blacklist"):
            if path == prefix or path.startswith(prefix + "/"):
                return self.gw.blacklist_api(proto, req, path[len(prefix):].lstrip("/"))
        raise NotFound(f"no route for {method} {path}")

    def detailed_health(self) -> dict:
        hub = self.gw.hub
        return {
            "status": "ok",
            "uptime_s": round(time.monotonic() - self.started, 3),
            "connections": {"sse": hub.counts[0], "ws": hub.counts[1], "longpolling": hub.counts[2]},
            "subscriptions": hub.index.subscription_count,
            "build": hub.build,
            "worker": self.gw.worker_id,
            "pid": self.gw.pid,
            "kafka": self.gw.kafka.health() if self.gw.kafka is not None else {"state": "disabled"},
            "blacklist": len(self.gw.auth.blacklist),
            "cluster": self.gw.cluster.health() if self.gw.cluster is not None else None,
            "proxy": self.gw.proxy.health(),
        }

    async def cluster_metrics(self, proto, req) -> None:
        text = await self.gw.cluster.metrics_text()
        proto.respond(req, 200, text, b"text/plain; version=0.0.4; charset=utf-8")
