"""The reverse proxy's API definitions (RIG's format): parsing, validation, matching. No I/O.

An API is a JSON object::

    {"id": "orders", "name": "orders", "auth_type": "jwt",
     "auth": {"use_header": true, "header_name": "Authorization", "use_query": false, "query_name": "jwt"},
     "proxy": {"target_url": "orders-svc", "port": 8080, "use_env": false},
     "version_data": {"default": {"endpoints": [
         {"id": "list", "method": "GET", "path_regex": "/orders(/.*)?", "secured": true},
         {"id": "submit", "method": "POST", "path_regex": "/orders", "target": "kafka", "topic": "orders",
          "response_from": "kafka"}]}}}

Only the ``default`` version is routed (as in RIG). ``active: false`` and
``versioned: true`` (RIG does not serve versioned APIs either) keep an API
stored but unrouted. An endpoint's ``path`` (RIG's older form, with
``{param}`` placeholders) is accepted when it has no ``path_regex``.

Matching (as RIG's ``api.ex``): the pattern must match the whole path
(anchored), case-insensitively, with Unicode semantics (``\\w`` and case folding
beyond ASCII). ``path_replacement`` rewrites the forwarded path from the
match: ``\\1`` (or ``\\g{1}``) is the text of group 1, ``\\0`` the whole match,
a group that took no part in the match is empty.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any

from rigfast.proxy.paths import decoded, encoded, normalize

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
TARGETS = ("http", "kafka")
RESPONSE_FROM = ("http", "kafka", "http_async")
_PLACEHOLDER = re.compile(r"\{[^{}/]+\}")
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_CTL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


class ApiError(ValueError):
    """An API definition the proxy cannot use; the message names the API and endpoint."""


@dataclass
class Upstream:
    scheme: str
    host: str
    port: int
    # what logs may call it: host:port, or the variable's name for use_env (its value may be a secret)
    label: str = ""
    key: tuple[str, str, int] = field(init=False, repr=False, compare=False)  # the client's pool key
    host_line: bytes = field(init=False, repr=False, compare=False)  # the Host header the upstream gets

    def __post_init__(self) -> None:
        self.key = (self.scheme, self.host, self.port)
        host = self.host if ":" not in self.host else f"[{self.host}]"
        default = 443 if self.scheme == "https" else 80
        self.host_line = (f"host: {host}\r\n" if self.port == default else f"host: {host}:{self.port}\r\n").encode()


@dataclass
class Endpoint:
    id: str
    method: str
    regex: re.Pattern
    secured: bool
    target: str
    topic: str | None
    response_from: str | None
    add_headers: list[tuple[bytes, bytes]]
    replacement: list | None = None  # path_replacement parsed: literal str and group int parts
    api: "Api" = field(repr=False, default=None)  # type: ignore[assignment]
    # (method, status) -> the rig_proxy_requests_total labels of an answer (few: one method and HEAD)
    labels: dict = field(repr=False, compare=False, default_factory=dict)
    added: frozenset = field(init=False, repr=False, compare=False)  # names of add_headers
    plan: Any = field(init=False, repr=False, compare=False, default=None)  # the proxy's (rigfast.proxy.gateway)

    def __post_init__(self) -> None:
        self.added = frozenset(k for k, _ in self.add_headers)

    def rewrite(self, m: re.Match) -> str:
        """The forwarded path for a match of this endpoint's pattern (``path_replacement``)."""
        out = []
        for part in self.replacement:  # type: ignore[union-attr]
            if part.__class__ is int:
                try:
                    out.append(m.group(part) or "")
                except IndexError:
                    pass
            else:
                out.append(part)
        return "".join(out)


@dataclass
class Api:
    id: str
    raw: dict
    active: bool
    auth_type: str
    header_name: bytes | None  # lowercased; None: tokens are not taken from a header
    query_name: str | None
    upstream: Upstream | None
    endpoints: list[Endpoint]
    versioned: bool = False

    @property
    def needs_kafka(self) -> bool:
        return any(e.target == "kafka" or e.response_from == "kafka" for e in self.endpoints)


def _where(api_id: Any, ep_id: Any = None) -> str:
    s = f"api {api_id!r}"
    return s if ep_id is None else f"{s} endpoint {ep_id!r}"


def _bool(obj: dict, key: str, default: bool, where: str) -> bool:
    v = obj.get(key, default)
    if v is None:
        return default
    if not isinstance(v, bool):
        raise ApiError(f"{where}: {key} must be true or false, got {v!r}")
    return v


def _upstream(proxy: Any, where: str, env: Any) -> Upstream:
    if not isinstance(proxy, dict):
        raise ApiError(f"{where}: proxy must be an object with target_url and port")
    url = proxy.get("target_url")
    if not isinstance(url, str) or not url.strip():
        raise ApiError(f"{where}: proxy.target_url must be a non-empty string")
    url = url.strip()
    label = ""
    what = "proxy.target_url"
    if _bool(proxy, "use_env", False, where):
        value = env.get(url)
        if not value:
            raise ApiError(f"{where}: proxy.use_env is true but the environment variable {url!r} is not set")
        # the variable's value never appears in a message (it may be any secret of the environment)
        label = what = f"${url}"
        url = value.strip()
    scheme = "http"
    if "://" in url:
        scheme, _, url = url.partition("://")
        scheme = scheme.lower()
        if scheme not in ("http", "https"):
            got = "" if label else f", got {scheme!r}"
            raise ApiError(f"{where}: {what} scheme must be http or https{got}")
    host = url.split("/", 1)[0]
    port: Any = proxy.get("port")
    if host.startswith("["):  # [v6]:port
        end = host.find("]")
        rest = host[end + 1:]
        host = host[1:end]
        if rest.startswith(":") and port is None:
            port = rest[1:]
    elif host.count(":") == 1:
        host, _, p = host.partition(":")
        if port is None:
            port = p
    if port is None or port == "":
        port = 443 if scheme == "https" else 80
    if isinstance(port, str) and port.strip().isdigit():
        port = int(port)
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        got = "" if label and proxy.get("port") is None else f", got {proxy.get('port')!r}"
        raise ApiError(f"{where}: proxy.port (or the port in {what}) must be a port number{got}")
    if not host or _CTL.search(host) or " " in host:
        raise ApiError(f"{where}: {what} has no usable host name")
    return Upstream(scheme, host, port, label or f"{host}:{port}")


def _path_regex(ep: dict, where: str) -> re.Pattern:
    src = ep.get("path_regex")
    if src is None and ep.get("path") is not None:
        path = ep["path"]
        if not isinstance(path, str) or not path.startswith("/"):
            raise ApiError(f"{where}: path must be a string starting with /")
        parts = _PLACEHOLDER.split(path)
        src = "[^/]+".join(re.escape(p) for p in parts)
    if not isinstance(src, str) or not src:
        raise ApiError(f"{where}: path_regex must be a non-empty regular expression")
    try:
        # anchored by fullmatch at match time; case-insensitive and Unicode-aware as RIG's ~r/.../ui
        return re.compile(src, re.IGNORECASE | re.UNICODE)
    except re.error as exc:
        raise ApiError(f"{where}: path_regex {src!r} is not a valid regular expression: {exc}") from None


_GROUP_REF = re.compile(r"\\(?:(\d+)|g\{(\d+)\})")


def _replacement(ep: dict, regex: re.Pattern, where: str) -> list | None:
    """``path_replacement`` as literal and group-number parts; ApiError for a group the regex lacks."""
    src = ep.get("path_replacement")
    if src is None or src == "":
        return None
    if not isinstance(src, str):
        raise ApiError(f"{where}: path_replacement must be a string")
    parts: list = []
    pos = 0
    for m in _GROUP_REF.finditer(src):
        if m.start() > pos:
            parts.append(src[pos:m.start()])
        n = int(m.group(1) or m.group(2))
        if n > regex.groups:
            raise ApiError(f"{where}: path_replacement refers to group {n}, but path_regex has {regex.groups} group(s)")
        parts.append(n)
        pos = m.end()
    if pos < len(src):
        parts.append(src[pos:])
    if not (isinstance(parts[0], int) or parts[0].startswith("/")):
        raise ApiError(f"{where}: path_replacement must produce a path starting with /")
    return parts


def _add_headers(ep: dict, where: str) -> list[tuple[bytes, bytes]]:
    t = ep.get("transform_request_headers")
    if t is None:
        return []
    if not isinstance(t, dict):
        raise ApiError(f"{where}: transform_request_headers must be an object like {{\"add_headers\": {{...}}}}")
    add = t.get("add_headers") or {}
    if not isinstance(add, dict):
        raise ApiError(f"{where}: transform_request_headers.add_headers must be an object of header: value")
    out = []
    for k, v in add.items():
        if not isinstance(k, str) or not _HEADER_NAME.match(k):
            raise ApiError(f"{where}: transform_request_headers: {k!r} is not a valid header name")
        if not isinstance(v, str) or _CTL.search(v):
            raise ApiError(f"{where}: transform_request_headers: the value of {k!r} must be a string without control characters")
        out.append((k.lower().encode("latin-1"), v.encode("latin-1", "replace")))
    return out


def parse_api(obj: Any, env: Any = None, kafka: bool = True) -> Api:
    """Validate one API definition; ``kafka``: whether Kafka is configured (KAFKA_BROKERS)."""
    env = os.environ if env is None else env
    if not isinstance(obj, dict):
        raise ApiError(f"an API must be a JSON object, got {type(obj).__name__}")
    api_id = obj.get("id")
    if not isinstance(api_id, str) or not api_id or "/" in api_id or _CTL.search(api_id):
        raise ApiError(f"every API needs an id (a non-empty string without '/'), got {api_id!r}")
    where = _where(api_id)
    active = _bool(obj, "active", True, where)
    auth_type = obj.get("auth_type") or "none"
    if auth_type not in ("jwt", "none"):
        raise ApiError(f"{where}: auth_type must be \"jwt\" or \"none\", got {auth_type!r}")
    auth = obj.get("auth") or {}
    if not isinstance(auth, dict):
        raise ApiError(f"{where}: auth must be an object")
    header_name: bytes | None = None
    if _bool(auth, "use_header", True, where):
        hn = auth.get("header_name") or "Authorization"
        if not isinstance(hn, str) or not _HEADER_NAME.match(hn):
            raise ApiError(f"{where}: auth.header_name {hn!r} is not a valid header name")
        header_name = hn.lower().encode()
    query_name = None
    if _bool(auth, "use_query", False, where):
        qn = auth.get("query_name") or "jwt"
        if not isinstance(qn, str):
            raise ApiError(f"{where}: auth.query_name must be a string")
        query_name = qn
    vd = obj.get("version_data")
    if not isinstance(vd, dict) or not isinstance(vd.get("default"), dict):
        raise ApiError(f"{where}: version_data.default.endpoints is required")
    eps = vd["default"].get("endpoints")
    if not isinstance(eps, list):
        raise ApiError(f"{where}: version_data.default.endpoints must be a list")
    endpoints: list[Endpoint] = []
    seen: set[str] = set()
    needs_upstream = False
    for i, ep in enumerate(eps):
        if not isinstance(ep, dict):
            raise ApiError(f"{where}: endpoint #{i} must be an object")
        ep_id = ep.get("id")
        if ep_id is None:
            ep_id = str(i)
        if not isinstance(ep_id, str):
            raise ApiError(f"{where}: endpoint #{i}: id must be a string")
        ew = _where(api_id, ep_id)
        if ep_id in seen:
            raise ApiError(f"{ew}: duplicate endpoint id")
        seen.add(ep_id)
        method = ep.get("method")
        if not isinstance(method, str) or method.upper() not in METHODS:
            raise ApiError(f"{ew}: method must be one of {', '.join(METHODS)}, got {method!r}")
        target = ep.get("target") or "http"
        if target not in TARGETS:
            raise ApiError(f"{ew}: target must be \"http\" or \"kafka\", got {target!r}")
        topic = ep.get("topic")
        if target == "kafka" and (not isinstance(topic, str) or not topic):
            raise ApiError(f"{ew}: target \"kafka\" needs a topic")
        rf = ep.get("response_from")
        if rf is not None and rf not in RESPONSE_FROM:
            raise ApiError(f"{ew}: response_from must be \"kafka\" or \"http_async\", got {rf!r}")
        if rf == "http":
            rf = None
        if rf == "http_async" and target != "http":
            raise ApiError(f"{ew}: response_from \"http_async\" needs target \"http\"")
        if (target == "kafka" or rf == "kafka") and not kafka:
            raise ApiError(f"{ew}: target/response_from \"kafka\" needs KAFKA_BROKERS")
        needs_upstream |= target == "http"
        regex = _path_regex(ep, ew)
        endpoints.append(Endpoint(
            id=ep_id,
            method=method.upper(),
            regex=regex,
            secured=_bool(ep, "secured", False, ew),
            target=target,
            topic=topic if target == "kafka" else None,
            response_from=rf,
            add_headers=_add_headers(ep, ew),
            replacement=_replacement(ep, regex, ew),
        ))
    upstream = None
    if needs_upstream or obj.get("proxy") is not None:
        upstream = _upstream(obj.get("proxy"), where, env)
    versioned = _bool(obj, "versioned", False, where)
    api = Api(api_id, obj, active, auth_type, header_name, query_name, upstream, endpoints, versioned)
    for e in endpoints:
        e.api = api
    return api


def parse_apis(data: Any, env: Any = None, kafka: bool = True) -> list[Api]:
    """A list of API definitions (PROXY_CONFIG_FILE); None is an empty list."""
    if data is None:
        return []
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        raise ApiError("expected a list of APIs")
    out: list[Api] = []
    ids: set[str] = set()
    for obj in data:
        api = parse_api(obj, env, kafka)
        if api.id in ids:
            raise ApiError(f"{_where(api.id)}: duplicate API id")
        ids.add(api.id)
        out.append(api)
    return out


class RouteTable:
    """Endpoints of the active, unversioned APIs, by method, in configuration order: the first full match wins.

    :meth:`resolve` is the reverse proxy's lookup of a request target: normalised, matched (``HEAD``
    falls back to ``GET``) and rewritten once per distinct (method, raw path) and then read from a
    cache: clients repeat the same few paths. The cache belongs to one table (a change of the APIs
    builds a new table, so nothing stale is ever read), holds paths of at most ``CACHED_PATH_BYTES``
    bytes and at most ``CACHED_ROUTES`` of them (emptied when full).
    """

    __slots__ = ("by_method", "resolved")

    CACHED_ROUTES = 4096
    CACHED_PATH_BYTES = 512

    def __init__(self, apis: list[Api]):
        by_method: dict[str, list[tuple[Any, Endpoint]]] = {}
        for api in apis:
            if not api.active or api.versioned:
                continue
            for ep in api.endpoints:
                by_method.setdefault(ep.method, []).append((ep.regex.fullmatch, ep))
        self.by_method = by_method
        self.resolved: dict[tuple[str, bytes], tuple] = {}

    def match(self, method: str, path: str) -> tuple[Endpoint, re.Match] | tuple[None, None]:
        for fullmatch, ep in self.by_method.get(method, ()):
            m = fullmatch(path)
            if m is not None:
                return ep, m
        return None, None

    def resolve(self, method: str, raw: bytes, decoded_path: str) -> tuple[Endpoint | None, bytes, int, str]:
        """(endpoint, forwarded path, error status, error message) of a request's raw path (no query).

        ``decoded_path``: the request's percent-decoded path (what is matched when normalising
        changed nothing). The upstream gets exactly the path that was matched (or its rewrite),
        never the raw target.
        """
        key = (method, raw)
        hit = self.resolved.get(key)
        if hit is not None:
            return hit
        text = raw.decode("latin-1")
        path = normalize(text)
        if path is None:
            out: tuple = (None, b"", 400, "Bad request: the request target must be a path")
        else:
            matched = decoded_path if path is text else decoded(path)
            ep, m = self.match(method, matched)
            if ep is None and method == "HEAD":
                ep, m = self.match("GET", matched)
            if ep is None:
                out = (None, b"", 404, f"Route is not available: no API endpoint matches {method} {matched}")
            else:
                out = (ep, encoded(ep.rewrite(m)) if ep.replacement is not None else path.encode("latin-1"), 0, "")
        if len(raw) <= self.CACHED_PATH_BYTES:
            if len(self.resolved) >= self.CACHED_ROUTES:
                self.resolved.clear()
            self.resolved[key] = out
        return out
