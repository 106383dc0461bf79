"""HTTP/1.1 request model and response encoding (sans-I/O: no asyncio here).

Parsing itself is httptools' job; the protocol feeds its callbacks into a
:class:`Request`. This module turns requests into convenient values (query,
cookies, headers) and responses into bytes.
"""

from __future__ import annotations

import base64
import hashlib
from http import HTTPStatus
from typing import Iterable
from urllib.parse import unquote

from rigfast._ext import unquote as _unquote  # compiled percent-decoding (urllib's result)

REASONS = {s.value: s.phrase.encode() for s in HTTPStatus}
STATUS_LINES = {code: b"HTTP/1.1 %d %s\r\n" % (code, reason) for code, reason in REASONS.items()}
_NO_QUERY: dict[str, list[str]] = {}
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class Request:
    """One parsed request. Header names are lowercased bytes."""

    __slots__ = ("method", "url", "path", "query_string", "headers", "body", "keep_alive", "upgrade", "_query", "_cookies",
                 "t0", "route")

    def __init__(self) -> None:
        self.t0 = 0.0  # loop time when the request was complete (request duration metric)
        self.route = None  # the reverse proxy's endpoint, once matched (its metric labels)
        self.method = ""
        self.url = b""
        self.path = ""
        self.query_string = ""
        self.headers: list[tuple[bytes, bytes]] = []
        self.body = b""
        self.keep_alive = True
        self.upgrade = False
        self._query: dict[str, list[str]] | None = None
        self._cookies: dict[str, str] | None = None

    def set_url(self, url: bytes) -> None:
        self.url = url
        raw = url.decode("latin-1")
        path, _, qs = raw.partition("?")
        self.path = _unquote(path) if "%" in path else path
        self.query_string = qs

    @property
    def query(self) -> dict[str, list[str]]:
        return self._query if self._query is not None else self._parse_query()

    def _parse_query(self) -> dict[str, list[str]]:
        self._query = parse_query(self.query_string) if self.query_string else _NO_QUERY
        return self._query

    def query_one(self, name: str) -> str | None:
        q = self._query  # not through the property: a C attribute in the compiled build
        vals = (q if q is not None else self._parse_query()).get(name)
        return vals[-1] if vals else None

    def header(self, name: bytes) -> bytes | None:
        for k, v in self.headers:
            if k == name:
                return v
        return None

    def header_str(self, name: bytes) -> str | None:
        v = self.header(name)
        return None if v is None else v.decode("latin-1")

    def headers_all(self, name: bytes) -> list[bytes]:
        return [v for k, v in self.headers if k == name]

    @property
    def cookies(self) -> dict[str, str]:
        if self._cookies is None:
            jar: dict[str, str] = {}
            for raw in self.headers_all(b"cookie"):
                for part in raw.decode("latin-1").split(";"):
                    name, sep, value = part.strip().partition("=")
                    if sep and name:
                        jar.setdefault(name, unquote(value.strip()))
            self._cookies = jar
        return self._cookies


def parse_query(qs: str) -> dict[str, list[str]]:
    """``a=1&b=%5B%5D`` -> {"a": ["1"], "b": ["[]"]}; blank values kept, unquoting only where needed."""
    out: dict[str, list[str]] = {}
    for part in qs.split("&"):
        if not part:
            continue
        k, _, v = part.partition("=")
        if "%" in k or "+" in k:
            k = _unquote(k, True)
        if "%" in v or "+" in v:
            v = _unquote(v, True)
        vals = out.get(k)
        if vals is None:
            out[k] = [v]
        else:
            vals.append(v)
    return out


def chunked_end(buf: bytes, i: int, state: list) -> int:
    """Where a chunked body (RFC 9112 7.1) that the parser accepted ends: the index in ``buf`` just
    after its last line, scanning from ``i``; -1 when ``buf`` ends first (the next bytes are then
    scanned from 0 with the same ``state``). ``state`` is ``[phase, count]``, ``[0, 0]`` at the body's
    start, updated in place. The parser checked the framing, so this only follows it: chunk sizes
    and data lengths are read, extensions and trailer fields skipped to their line's end."""
    phase, count = state[0], state[1]
    n = len(buf)
    while i < n:
        if phase == _CHUNK_DATA:
            k = min(count, n - i)
            i += k
            count -= k
            if count == 0:
                phase = _CHUNK_DATA_END
            continue
        c = buf[i]
        i += 1
        if phase == _CHUNK_SIZE:
            if 48 <= c <= 57:
                count = count * 16 + c - 48
                continue
            if 97 <= c <= 102 or 65 <= c <= 70:
                count = count * 16 + (c | 32) - 87
                continue
            phase = _CHUNK_SIZE_REST
        if phase == _CHUNK_SIZE_REST:  # extensions, then the line's end
            if c == 10:
                phase = _CHUNK_DATA if count else _CHUNK_LINE
        elif phase == _CHUNK_DATA_END:  # the CRLF after a chunk's data
            if c == 10:
                phase = _CHUNK_SIZE
        elif phase == _CHUNK_LINE:  # a trailer field line, or the empty line that ends the body
            if c == 10:
                state[0] = state[1] = 0
                return i
            if c != 13:
                phase = _CHUNK_TRAILER
        elif c == 10:  # the end of a trailer field line
            phase = _CHUNK_LINE
    state[0] = phase
    state[1] = count
    return -1


_CHUNK_SIZE, _CHUNK_SIZE_REST, _CHUNK_DATA, _CHUNK_DATA_END, _CHUNK_LINE, _CHUNK_TRAILER = range(6)


# Pieces of a response head, built once: encode_response only joins them (a bytes % format per
# line cost more than the rest of a small response). Content-type lines are cached per value up to
# a bound (callers pass a handful of constants), content-length lines for the short bodies.
_CONTENT_TYPE_LINES: dict = {}
_CONTENT_TYPE_LINES_MAX = 64
_LENGTH_LINES = tuple(b"content-length: %d\r\n" % n for n in range(1024))


def encode_response(
    status: int,
    body: bytes = b"",
    content_type: bytes | None = b"text/plain; charset=utf-8",
    headers: Iterable[tuple[bytes, bytes]] = (),
    keep_alive: bool = True,
) -> bytes:
    """A complete response with content-length."""
    line = STATUS_LINES.get(status)
    if line is None:
        line = b"HTTP/1.1 %d Unknown\r\n" % status
    parts = [line]
    if content_type is not None and (body or status not in (204, 304)):
        line = _CONTENT_TYPE_LINES.get(content_type)
        if line is None:
            line = b"content-type: " + content_type + b"\r\n"
            if len(_CONTENT_TYPE_LINES) < _CONTENT_TYPE_LINES_MAX:
                _CONTENT_TYPE_LINES[content_type] = line
        parts.append(line)
    for k, v in headers:
        parts.extend((k, b": ", v, b"\r\n"))
    if status != 204 and not (100 <= status < 200):
        n = len(body)
        parts.append(_LENGTH_LINES[n] if n < 1024 else b"content-length: %d\r\n" % n)
    parts.append(b"\r\n" if keep_alive else b"connection: close\r\n\r\n")
    parts.append(body)
    return b"".join(parts)


def encode_stream_head(status: int, headers: Iterable[tuple[bytes, bytes]]) -> bytes:
    """Head of a response whose body runs until the connection closes (SSE)."""
    parts = [b"HTTP/1.1 %d %s\r\n" % (status, REASONS.get(status, b"Unknown"))]
    for k, v in headers:
        parts.append(b"%s: %s\r\n" % (k, v))
    parts.append(b"connection: close\r\n\r\n")
    return b"".join(parts)


def ws_accept_key(key: bytes) -> bytes:
    return base64.b64encode(hashlib.sha1(key.strip() + WS_GUID).digest())


def encode_ws_accept(key: bytes) -> bytes:
    return (
        b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n"
        b"sec-websocket-accept: %s\r\n\r\n" % ws_accept_key(key)
    )


def header_has_token(value: bytes | None, token: bytes) -> bool:
    """Whether a comma-separated header (e.g. Connection) contains a token, case-insensitively."""
    if not value:
        return False
    return any(p.strip().lower() == token for p in value.split(b","))
