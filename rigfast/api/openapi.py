"""The OpenAPI 3 description of the internal API (served at ``GET /openapi.json``).

Kept as Python data next to the routes so that it is packaged with them and
needs no file lookup at run time. ``document()`` returns a fresh dict;
``document_json()`` the encoded bytes the route serves (encoded once).
"""

from __future__ import annotations

import copy
from typing import Any

import orjson

VERSION = "0.1.0"

_TEXT = {"text/plain": {"schema": {"type": "string"}}}


def _error(description: str) -> dict:
    return {"description": description, "content": _TEXT}


_BLACKLIST_POST = {
    "summary": "Blacklist a session",
    "description": (
        "Every open connection whose token carries this session id (the claim named by "
        "JWT_SESSION_FIELD, default /jti) is ended at once: SSE gets rig.session_killed and is "
        "closed, WebSocket gets a close frame \"Session killed.\", a long-polling session is dropped. "
        "New requests with such a token are refused (connects and PUT 400, publishing 403) until the entry expires."
    ),
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/BlacklistRequest"}}},
    },
    "responses": {
        "201": {
            "description": "Blacklisted (as RIG: body {}, the location header names the entry)",
            "headers": {"location": {"description": "the request path plus /<sessionId>", "schema": {"type": "string"}}},
            "content": {"application/json": {"schema": {"type": "object"}}},
        },
        "400": _error("Body is not JSON, sessionId is missing or validityInSeconds is not a positive number"),
    },
}

_BLACKLIST_GET = {
    "summary": "Is a session blacklisted?",
    "parameters": [{"name": "sessionId", "in": "path", "required": True, "schema": {"type": "string"}}],
    "responses": {
        "200": {
            "description": "The session is blacklisted",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/BlacklistEntry"}}},
        },
        "404": _error("The session is not (or no longer) blacklisted"),
    },
}

_API_ID = [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}]
_API_JSON = {"application/json": {"schema": {"$ref": "#/components/schemas/Api"}}}

_APIS = {
    "get": {
        "summary": "List the reverse proxy's APIs",
        "responses": {"200": {"description": "Every API, as defined", "content": {
            "application/json": {"schema": {"type": "array", "items": {"$ref": "#/components/schemas/Api"}}}}}},
    },
    "post": {
        "summary": "Add an API",
        "description": "Routed at once on this worker and, within milliseconds, on every worker and node.",
        "requestBody": {"required": True, "content": _API_JSON},
        "responses": {
            "201": {"description": "Added", "content": _API_JSON},
            "400": _error("Not JSON, or not a valid API; the message names the field"),
            "409": _error("An API with this id exists already"),
        },
    },
}

_API = {
    "get": {
        "summary": "One API",
        "parameters": _API_ID,
        "responses": {"200": {"description": "The API", "content": _API_JSON}, "404": _error("No such API")},
    },
    "put": {
        "summary": "Replace an API",
        "parameters": _API_ID,
        "requestBody": {"required": True, "content": _API_JSON},
        "responses": {
            "200": {"description": "Replaced", "content": _API_JSON},
            "400": _error("Not JSON, not a valid API, or the body's id differs from the path's"),
            "404": _error("No such API (POST /v3/apis adds one)"),
        },
    },
    "delete": {
        "summary": "Remove an API",
        "parameters": _API_ID,
        "responses": {"204": {"description": "Removed"}, "404": _error("No such API")},
    },
}

_RESPONSES = {
    "post": {
        "summary": "Answer a proxied request waiting for an asynchronous response (response_from: http_async)",
        "description": (
            "The waiting client gets the status from rig-response-code (default 200), this request's "
            "content-type and body. Any worker or node may receive this call."
        ),
        "parameters": [
            {"name": "rig-correlation", "in": "header", "required": True, "schema": {"type": "string"},
             "description": "The correlation id the gateway sent upstream with the request"},
            {"name": "rig-response-code", "in": "header", "required": False, "schema": {"type": "integer"}},
        ],
        "requestBody": {"required": False, "content": {"*/*": {"schema": {}}}},
        "responses": {
            "202": {"description": "Handed to the waiting client"},
            "400": _error("No correlation id, or a bad rig-response-code"),
            "404": _error("No request waits for this correlation id (answered, timed out or unknown)"),
        },
    }
}

_PATHS: dict[str, Any] = {
    "/health": {
        "get": {
            "summary": "Liveness",
            "description": "Plain `OK`. With the `detailed` query parameter: a JSON status document.",
            "parameters": [
                {
                    "name": "detailed",
                    "in": "query",
                    "required": False,
                    "allowEmptyValue": True,
                    "description": "Present (any value): answer with the JSON status document",
                    "schema": {"type": "string"},
                }
            ],
            "responses": {
                "200": {
                    "description": "The gateway is up",
                    "content": {
                        "text/plain": {"schema": {"type": "string", "enum": ["OK"]}},
                        "application/json": {"schema": {"$ref": "#/components/schemas/Health"}},
                    },
                }
            },
        }
    },
    "/health/ready": {
        "get": {
            "summary": "Readiness",
            "description": (
                "200 when the node can serve (ports bound, Kafka reached where configured, workers linked, "
                "blacklist read) and is not draining; 503 otherwise. The body names each check."
            ),
            "responses": {
                code: {
                    "description": what,
                    "content": {"application/json": {"schema": {
                        "type": "object",
                        "required": ["ready", "checks"],
                        "properties": {
                            "ready": {"type": "boolean"},
                            "checks": {"type": "object", "additionalProperties": {"type": "boolean"}},
                        },
                    }}},
                }
                for code, what in (("200", "Ready"), ("503", "Starting, or draining after SIGTERM"))
            },
        }
    },
    "/metrics": {
        "get": {
            "summary": "Prometheus metrics",
            "description": (
                "Prometheus text exposition format 0.0.4: rig_connections{transport}, rig_subscriptions, "
                "rig_events_received_total{source}, rig_events_delivered_total{source,transport}, "
                "rig_events_dropped_total{source}, rig_events_invalid_total{source}, rig_kafka_consumer_lag, "
                "rig_proxy_requests_total{status}, rig_blacklist_size and more. With several workers the node's "
                "workers are scraped together, each sample labelled worker=\"i\"; `local` gives this worker only."
            ),
            "parameters": [
                {
                    "name": "local",
                    "in": "query",
                    "required": False,
                    "allowEmptyValue": True,
                    "description": "Present: only the figures of the worker that answers",
                    "schema": {"type": "string"},
                }
            ],
            "responses": {"200": {"description": "Metrics", "content": {"text/plain": {"schema": {"type": "string"}}}}},
        }
    },
    "/openapi.json": {
        "get": {
            "summary": "This document",
            "responses": {
                "200": {"description": "OpenAPI 3 document", "content": {"application/json": {"schema": {"type": "object"}}}}
            },
        }
    },
    "/v3/messages": {
        "post": {
            "summary": "Publish an event (trusted backend path)",
            "description": (
                "A CloudEvent (0.1, 0.2 or 1.0) in structured mode (body is the event; content-type "
                "application/cloudevents+json or application/json) or binary mode (body is data, attributes in "
                "ce-* headers). Not subject to SUBMISSION_CHECK."
            ),
            "parameters": [
                {
                    "name": "ce-specversion",
                    "in": "header",
                    "required": False,
                    "description": "Present: binary mode",
                    "schema": {"type": "string"},
                }
            ],
            "requestBody": {
                "required": True,
                "content": {
                    "application/cloudevents+json": {"schema": {"$ref": "#/components/schemas/CloudEvent"}},
                    "application/json": {"schema": {"$ref": "#/components/schemas/CloudEvent"}},
                },
            },
            "responses": {
                "202": {
                    "description": "Accepted: the event as it will be delivered",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/CloudEvent"}}},
                },
                "400": _error("Not a valid CloudEvent (any content type other than the JSON ones is binary "
                              "mode and needs the ce- headers); the message names the problem"),
            },
        }
    },
    "/v3/session-blacklist": {"post": _BLACKLIST_POST},
    "/v3/session-blacklist/{sessionId}": {"get": _BLACKLIST_GET},
    "/v2/session-blacklist": {"post": {**_BLACKLIST_POST, "summary": "Blacklist a session (v2 path, same as v3)"}},
    "/v2/session-blacklist/{sessionId}": {"get": {**_BLACKLIST_GET, "summary": "Is a session blacklisted? (v2 path)"}},
    "/v3/apis": _APIS,
    "/v3/apis/{id}": _API,
    "/v3/responses": _RESPONSES,
    "/v2/apis": _APIS,
    "/v2/apis/{id}": _API,
    "/v2/responses": {"post": {**_RESPONSES["post"], "summary": "Answer a waiting proxy request (v2: a CloudEvent "
                                                                "carrying rig.correlation)"}},
}

_PATHS["/v2/messages"] = {"post": {**_PATHS["/v3/messages"]["post"], "summary": "Publish an event (v2 path, same as v3)"}}

_SCHEMAS: dict[str, Any] = {
    "Api": {
        "type": "object",
        "description": "A reverse proxy API in RIG's format (see the README, Reverse proxy).",
        "required": ["id", "version_data"],
        "additionalProperties": True,
        "properties": {
            "id": {"type": "string"},
            "name": {"type": "string"},
            "active": {"type": "boolean"},
            "auth_type": {"type": "string", "enum": ["jwt", "none"]},
            "auth": {"type": "object", "properties": {
                "use_header": {"type": "boolean"}, "header_name": {"type": "string"},
                "use_query": {"type": "boolean"}, "query_name": {"type": "string"}}},
            "proxy": {"type": "object", "properties": {
                "target_url": {"type": "string"}, "port": {"type": "integer"}, "use_env": {"type": "boolean"}}},
            "version_data": {"type": "object", "properties": {"default": {"type": "object", "properties": {
                "endpoints": {"type": "array", "items": {"$ref": "#/components/schemas/ApiEndpoint"}}}}}},
        },
    },
    "ApiEndpoint": {
        "type": "object",
        "required": ["method"],
        "additionalProperties": True,
        "properties": {
            "id": {"type": "string"},
            "method": {"type": "string"},
            "path_regex": {"type": "string"},
            "path": {"type": "string", "description": "RIG's older form with {param} placeholders"},
            "secured": {"type": "boolean"},
            "target": {"type": "string", "enum": ["http", "kafka"]},
            "topic": {"type": "string"},
            "response_from": {"type": "string", "enum": ["http", "kafka", "http_async"]},
            "transform_request_headers": {"type": "object", "properties": {
                "add_headers": {"type": "object", "additionalProperties": {"type": "string"}}}},
        },
    },
    "BlacklistRequest": {
        "type": "object",
        "required": ["sessionId", "validityInSeconds"],
        "properties": {
            "sessionId": {"type": "string", "minLength": 1},
            "validityInSeconds": {"type": "number", "minimum": 0, "exclusiveMinimum": True},
        },
    },
    "BlacklistEntry": {
        "type": "object",
        "properties": {"sessionId": {"type": "string"}, "expiresInSeconds": {"type": "number"}},
    },
    "Health": {
        "type": "object",
        "properties": {
            "status": {"type": "string"},
            "uptime_s": {"type": "number"},
            "connections": {
                "type": "object",
                "properties": {
                    "sse": {"type": "integer"},
                    "ws": {"type": "integer"},
                    "longpolling": {"type": "integer"},
                },
            },
            "subscriptions": {"type": "integer"},
            "kafka": {"type": "object", "description": "Consumer state; {\"state\": \"disabled\"} without Kafka"},
            "blacklist": {"type": "integer"},
            "worker": {"type": "integer"},
            "pid": {"type": "integer"},
            "build": {"type": "string"},
        },
    },
    "CloudEvent": {
        "type": "object",
        "description": "A CloudEvent; required attributes depend on the spec version (1.0/0.2: specversion, id, type, source).",
        "additionalProperties": True,
        "properties": {
            "specversion": {"type": "string"},
            "id": {"type": "string"},
            "type": {"type": "string"},
            "source": {"type": "string"},
            "time": {"type": "string"},
            "datacontenttype": {"type": "string"},
            "data": {},
        },
    },
}

_DOC: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {
        "title": "rigfast internal API",
        "version": VERSION,
        "description": (
            "Operator and backend API on API_HTTP_PORT (4010; TLS on API_HTTPS_PORT, 4011). "
            "It has no authentication: bind it to a private address (RIGFAST_API_HOST) and never expose it "
            "to the internet."
        ),
    },
    "servers": [{"url": "http://localhost:4010"}],
    "paths": _PATHS,
    "components": {"schemas": _SCHEMAS},
}


def document() -> dict[str, Any]:
    """A copy of the OpenAPI document (callers may add to it)."""
    return copy.deepcopy(_DOC)


_ENCODED: bytes | None = None


def document_json() -> bytes:
    global _ENCODED
    if _ENCODED is None:
        _ENCODED = orjson.dumps(_DOC)
    return _ENCODED
