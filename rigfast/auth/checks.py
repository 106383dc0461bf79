"""SUBSCRIPTION_CHECK and SUBMISSION_CHECK: may this request subscribe / publish?

Three kinds, picked by ``make_check``:

- ``no_check``: everything allowed.
- ``jwt_validation``: at least one of the request's tokens verifies, is
  unexpired, and its session (JWT_SESSION_FIELD) is not blacklisted.
- an ``http://`` or ``https://`` URL: the subscriptions (or the event) are
  POSTed there as JSON with the request's tokens as ``Authorization: Bearer``
  headers; a 2xx answer allows, any other status, a timeout or an
  unreachable service denies.

The first two decide without I/O: ``needs_io`` is False and the caller may
use ``authorize_sync`` and skip an await on the hot path. The URL check
posts with the gateway's one HTTP/1.1 client (:mod:`rigfast.net.httpclient`,
the reverse proxy's too): keep-alive connections pooled per check, the
answer's status decides as soon as its head arrives.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from urllib.parse import urlsplit

from rigfast.auth.blacklist import Blacklist
from rigfast.auth.tokens import InvalidToken, TokenVerifier, _is_token_char_safe
from rigfast.errors import ConfigError, Forbidden
from rigfast.logs import RateLimitedLogger
from rigfast.net.httpclient import HttpClient, UpstreamError

log = logging.getLogger(__name__)
_rl_log = RateLimitedLogger(log, 10.0)


def _label(env_name: str) -> str:
    """``SUBSCRIPTION_CHECK`` -> ``subscription`` (used in denial messages)."""
    base = env_name.upper().removesuffix("_CHECK")
    return base.lower().replace("_", " ") or "request"


class Check:
    """Base: ``authorize`` raises Forbidden when the request is denied."""

    needs_io = False
    kind = "base"

    def __init__(self, env_name: str = "SUBSCRIPTION_CHECK"):
        self.env_name = env_name
        self.label = _label(env_name)

    def authorize_sync(self, tokens: list[str]) -> None:
        """Decide without I/O; only for checks with ``needs_io`` False."""
        raise NotImplementedError(f"{self.kind} check needs I/O: await authorize() instead")

    async def authorize(self, tokens: list[str], payload_json: bytes) -> None:
        self.authorize_sync(tokens)

    async def close(self) -> None:
        """Release pooled resources (URL check connections)."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.env_name}>"


class NoCheck(Check):
    kind = "no_check"

    def authorize_sync(self, tokens: list[str]) -> None:
        return None


class JwtValidationCheck(Check):
    kind = "jwt_validation"

    def __init__(self, verifier: TokenVerifier, blacklist: Blacklist, env_name: str = "SUBSCRIPTION_CHECK"):
        super().__init__(env_name)
        self.verifier = verifier
        self.blacklist = blacklist

    def authorize_sync(self, tokens: list[str]) -> None:
        if not tokens:
            raise Forbidden(f"{self.label} denied: no authorization token")
        reason = ""
        for tok in tokens:
            try:
                claims = self.verifier.verify(tok)
            except InvalidToken as exc:
                reason = exc.message
                continue
            sid = self.verifier.session_id(claims)
            if sid is not None and self.blacklist.contains(sid):
                reason = "session is blacklisted"
                continue
            return None
        raise Forbidden(f"{self.label} denied: no valid token ({reason})")


class CheckUnreachable(Exception):
    pass


MAX_DRAINED_BODY_BYTES = 1 << 20


class HttpPoster:
    """POST a JSON body to one URL; keep-alive connections pooled, bounded concurrency."""

    def __init__(
        self,
        url: str,
        env_name: str = "SUBSCRIPTION_CHECK",
        *,
        ssl_context: ssl.SSLContext | None = None,
        max_idle: int = 8,
        max_connections: int = 64,
    ):
        parts = urlsplit(url.strip())
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https"):
            raise ConfigError(f"{env_name}: URL must start with http:// or https://, got {url!r}")
        try:
            port = parts.port
        except ValueError:
            raise ConfigError(f"{env_name}: invalid port in URL {url!r}") from None
        host = parts.hostname
        if not host:
            raise ConfigError(f"{env_name}: URL has no host: {url!r}")
        if parts.username is not None:
            raise ConfigError(f"{env_name}: credentials in the URL are not supported: {url!r}")
        default_port = 443 if scheme == "https" else 80
        self.url = url
        self.host = host
        self.port = port or default_port
        self.key = (scheme, host, self.port)
        self.target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        h = f"[{host}]" if ":" in host else host
        self.host_header = h if self.port == default_port else f"{h}:{self.port}"
        self.ssl_context = (ssl_context or ssl.create_default_context()) if scheme == "https" else None
        self.max_idle = max_idle
        self.max_connections = max_connections
        self._client: HttpClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _bind_loop(self) -> HttpClient:
        loop = asyncio.get_running_loop()
        if loop is not self._loop or self._client is None:
            # Connections belong to the loop that opened them (the check is built before the worker's loop).
            if self._client is not None:
                self._client.close()
            self._loop = loop
            self._client = HttpClient(loop, 5.0, max_conns=self.max_connections, max_idle=self.max_idle,
                                      max_response_bytes=0, ssl_context=self.ssl_context)
        return self._client

    def _encode_request(self, body: bytes, tokens: list[str]) -> bytes:
        lines = [
            f"POST {self.target} HTTP/1.1",
            f"host: {self.host_header}",
            "content-type: application/json",
            f"content-length: {len(body)}",
            "user-agent: rigfast",
        ]
        lines.extend(f"authorization: Bearer {t}" for t in tokens if _is_token_char_safe(t))
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body

    async def post(self, body: bytes, tokens: list[str], timeout_s: float) -> int:
        """The response status. Raises asyncio.TimeoutError or CheckUnreachable."""
        client = self._bind_loop()
        try:
            # the status decides: returned at the head; the body is drained by the client for reuse.
            # A check may be sent twice (a stale pooled connection): it changes nothing.
            status, _, _ = await client.fetch(self.key, self._encode_request(body, tokens), "POST", timeout_s,
                                              max_body=MAX_DRAINED_BODY_BYTES, head_only=True, retry=True)
        except UpstreamError as exc:
            if exc.status == 504:
                raise asyncio.TimeoutError from None
            raise CheckUnreachable(exc.message) from None
        return status

    async def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


class UrlCheck(Check):
    kind = "url"
    needs_io = True

    def __init__(
        self,
        url: str,
        timeout_s: float,
        env_name: str = "SUBSCRIPTION_CHECK",
        *,
        ssl_context: ssl.SSLContext | None = None,
    ):
        super().__init__(env_name)
        self.url = url
        self.timeout_s = float(timeout_s)
        self.poster = HttpPoster(url, env_name, ssl_context=ssl_context)

    async def authorize(self, tokens: list[str], payload_json: bytes) -> None:
        try:
            status = await self.poster.post(payload_json, tokens, self.timeout_s)
        except asyncio.TimeoutError:
            _rl_log.warning(
                f"timeout:{self.env_name}",
                "%s: %s did not answer within %g s; denying",
                self.env_name,
                self.url,
                self.timeout_s,
            )
            raise Forbidden(
                f"{self.label} denied: the authorization service did not answer within {self.timeout_s:g} s"
            ) from None
        except CheckUnreachable as exc:
            _rl_log.warning(
                f"unreachable:{self.env_name}", "%s: %s unreachable (%s); denying", self.env_name, self.url, exc
            )
            raise Forbidden(f"{self.label} denied: the authorization service is unreachable") from None
        if not 200 <= status < 300:
            raise Forbidden(f"{self.label} denied: the authorization service answered {status}")

    async def close(self) -> None:
        await self.poster.close()


def make_check(
    spec: str,
    verifier: TokenVerifier,
    blacklist: Blacklist,
    timeout_s: float,
    env_name: str = "SUBSCRIPTION_CHECK",
    *,
    ssl_context: ssl.SSLContext | None = None,
) -> Check:
    """The check named by ``spec`` (the value of ``env_name``); ConfigError for anything unknown.

    An empty value counts as ``no_check`` (the default).
    """
    raw = (spec or "").strip()
    low = raw.lower()
    if low in ("", "no_check"):
        return NoCheck(env_name)
    if low == "jwt_validation":
        return JwtValidationCheck(verifier, blacklist, env_name)
    if low.startswith(("http://", "https://")):
        if not timeout_s or timeout_s <= 0:
            raise ConfigError(f"RIGFAST_CHECK_TIMEOUT_S must be positive (needed by {env_name})")
        return UrlCheck(raw, timeout_s, env_name, ssl_context=ssl_context)
    raise ConfigError(f"{env_name} must be no_check, jwt_validation or an http(s) URL; got {spec!r}")
