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
talks HTTP/1.1 itself over asyncio streams (keep-alive connections are
pooled per check), so no HTTP client library is needed at run time.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from typing import Any
from urllib.parse import urlsplit

from rigfast.auth.blacklist import Blacklist
from rigfast.auth.tokens import InvalidToken, TokenVerifier, _is_token_char_safe
from rigfast.errors import ConfigError, Forbidden
from rigfast.logs import RateLimitedLogger

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


class _Conn:
    __slots__ = ("reader", "writer", "idle_since")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader = reader
        self.writer = writer
        self.idle_since = 0.0

    def usable(self, now: float, idle_timeout_s: float) -> bool:
        return (
            not self.reader.at_eof()
            and not self.writer.is_closing()
            and now - self.idle_since < idle_timeout_s
        )

    def close(self) -> None:
        try:
            self.writer.transport.abort()
        except Exception:  # pragma: no cover - transport already gone
            pass


class _Stale(Exception):
    """A pooled connection turned out closed before any response byte: retry on a fresh one."""


MAX_RESPONSE_HEADERS = 100
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
        idle_timeout_s: float = 30.0,
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
        self.target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        h = f"[{host}]" if ":" in host else host
        self.host_header = h if self.port == default_port else f"{h}:{self.port}"
        self.ssl_context = (ssl_context or ssl.create_default_context()) if scheme == "https" else None
        self.max_idle = max_idle
        self.idle_timeout_s = idle_timeout_s
        self.max_connections = max_connections
        self._idle: list[_Conn] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sem: asyncio.Semaphore | None = None

    def _bind_loop(self) -> None:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            # Connections belong to the loop that opened them.
            self._idle = []
            self._loop = loop
            self._sem = asyncio.Semaphore(self.max_connections)

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
        self._bind_loop()
        request = self._encode_request(body, tokens)
        deadline = time.monotonic() + timeout_s
        conn, status, framing = await asyncio.wait_for(self._send_and_read_head(request), timeout_s)
        # The status decides; the body is read only to keep the connection reusable.
        keep = False
        remaining = deadline - time.monotonic()
        if framing is not None and remaining > 0:
            try:
                keep = await asyncio.wait_for(self._drain_body(conn, framing), remaining)
            except (asyncio.TimeoutError, OSError, asyncio.IncompleteReadError, ValueError):
                keep = False
        if keep and len(self._idle) < self.max_idle:
            conn.idle_since = time.monotonic()
            self._idle.append(conn)
        else:
            conn.close()
        return status

    async def _send_and_read_head(self, request: bytes) -> tuple[_Conn, int, Any]:
        assert self._sem is not None
        async with self._sem:
            conn = self._take_idle()
            if conn is not None:
                try:
                    return await self._exchange(conn, request, reused=True)
                except _Stale:
                    pass
            try:
                reader, writer = await asyncio.open_connection(
                    self.host,
                    self.port,
                    ssl=self.ssl_context,
                    server_hostname=self.host if self.ssl_context is not None else None,
                )
            except (OSError, ssl.SSLError) as exc:
                raise CheckUnreachable(f"cannot connect: {exc}") from None
            try:
                return await self._exchange(_Conn(reader, writer), request, reused=False)
            except _Stale:
                raise CheckUnreachable("connection closed before a response") from None

    def _take_idle(self) -> _Conn | None:
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()
            if conn.usable(now, self.idle_timeout_s):
                return conn
            conn.close()
        return None

    async def _exchange(self, conn: _Conn, request: bytes, reused: bool) -> tuple[_Conn, int, Any]:
        try:
            conn.writer.write(request)
            await conn.writer.drain()
            line = await conn.reader.readline()
            if not line:
                raise _Stale()
            while True:
                status, version = _parse_status_line(line)
                headers = await _read_headers(conn.reader)
                if 100 <= status < 200:
                    line = await conn.reader.readline()
                    if not line:
                        raise CheckUnreachable("connection closed after an interim response")
                    continue
                break
        except _Stale:
            conn.close()
            raise
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            conn.close()
            if reused:
                raise _Stale() from None
            raise CheckUnreachable(f"connection failed: {exc or type(exc).__name__}") from None
        except (OSError, ValueError, ssl.SSLError) as exc:
            conn.close()
            raise CheckUnreachable(f"bad response: {exc}") from None
        except BaseException:
            # Cancelled (timeout) mid-exchange: the connection state is unknown.
            conn.close()
            raise
        framing = _framing(status, version, headers)
        return conn, status, framing

    async def _drain_body(self, conn: _Conn, framing: Any) -> bool:
        """Read and discard the body; True if the connection can be reused."""
        reader = conn.reader
        if framing == "chunked":
            total = 0
            while True:
                size_line = await reader.readline()
                size = int(size_line.split(b";", 1)[0].strip(), 16)
                if size == 0:
                    await _read_headers(reader)  # trailers
                    return True
                total += size
                if total > MAX_DRAINED_BODY_BYTES:
                    return False
                await reader.readexactly(size + 2)
        length: int = framing
        if length > MAX_DRAINED_BODY_BYTES:
            return False
        if length:
            await reader.readexactly(length)
        return True

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


def _parse_status_line(line: bytes) -> tuple[int, bytes]:
    parts = line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/"):
        raise ValueError(f"not an HTTP status line: {line[:80]!r}")
    status = int(parts[1])
    if not 100 <= status <= 999:
        raise ValueError(f"bad status {status}")
    return status, parts[0]


async def _read_headers(reader: asyncio.StreamReader) -> dict[bytes, bytes]:
    headers: dict[bytes, bytes] = {}
    for _ in range(MAX_RESPONSE_HEADERS + 1):
        line = await reader.readline()
        if not line:
            raise asyncio.IncompleteReadError(b"", None)
        if line in (b"\r\n", b"\n"):
            return headers
        name, sep, value = line.partition(b":")
        if sep:
            key = name.strip().lower()
            val = value.strip()
            headers[key] = headers[key] + b"," + val if key in headers else val
    raise ValueError("too many response headers")


def _framing(status: int, version: bytes, headers: dict[bytes, bytes]) -> Any:
    """How the body is delimited: an int length, "chunked", or None (not reusable)."""
    conn_tokens = {t.strip() for t in headers.get(b"connection", b"").lower().split(b",")}
    if version != b"HTTP/1.1" or b"close" in conn_tokens:
        return None
    if status in (204, 304):
        return 0
    te = headers.get(b"transfer-encoding")
    if te is not None:
        return "chunked" if te.lower().strip().endswith(b"chunked") else None
    cl = headers.get(b"content-length")
    if cl is None:
        return None  # body runs until close
    try:
        n = int(cl)
    except ValueError:
        return None
    return n if n >= 0 else None


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
