"""Fuzz the HTTP request path: bytes into HttpProtocol (public and internal port) on a fake transport.

Properties: nothing escapes the protocol or the loop; whatever comes back starts as an HTTP/1.1
answer; no request is ever answered 500 (an unexpected exception in a handler).
"""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz.conftest import FUZZ
from tests.fuzz.engine import inprocess_gateway

PATHS = [
    "/_rig/v1/events", "/_rig/v1/connection/sse", "/_rig/v1/connection/ws", "/_rig/v1/connection/longpolling",
    "/_rig/v1/connection/sse/abcdefghijkl/subscriptions", "/_rig/health", "/_rig/health/ready",
    "/health", "/health?detailed", "/metrics", "/v3/messages", "/v3/apis", "/v3/apis/x", "/v3/session-blacklist",
    "/v3/session-blacklist/abc", "/v3/responses", "/openapi.json", "/nope", "*", "http://h/x",
]
QUERIES = ["", "?subscriptions=%5B%5D", '?subscriptions=[{"eventType":"greeting"}]', "?subscriptions=%5B",
           "?jwt=abc", "?lastEventId=x", "?subscriptions=" + "%5B%7B%22eventType%22%3A%22greeting%22%7D%5D" * 3]
HEADER_NAMES = ["host", "content-length", "transfer-encoding", "content-type", "connection", "upgrade",
                "sec-websocket-key", "sec-websocket-version", "expect", "last-event-id", "cookie", "authorization",
                "origin", "ce-specversion", "ce-type", "ce-source", "ce-id", "x-forwarded-for"]
HEADER_VALUES = ["", "0", "5", "-1", "99999999999999999999", "chunked", "gzip, chunked", "application/json",
                 "application/cloudevents+json", "application/cloudevents-batch+json", "Upgrade", "websocket",
                 "13", "dGhlIHNhbXBsZSBub25jZQ==", "100-continue", "connection_token=abcdefghijkl", "Bearer x.y.z",
                 "1.0", "t", "close", "keep-alive"]
EVENT = b'{"specversion":"1.0","type":"greeting","source":"s","id":"1","data":{"name":"a"}}'
BODIES = [b"", EVENT, b"[" + EVENT + b"]", b"[]", b"{", b'{"subscriptions":[]}', b"0\r\n\r\n", b"5\r\nhello\r\n0\r\n\r\n"]


@st.composite
def request_bytes(draw) -> bytes:
    method = draw(st.sampled_from(["GET", "POST", "PUT", "OPTIONS", "HEAD", "DELETE", "PATCH", "G T", "CONNECT"]))
    target = draw(st.sampled_from(PATHS)) + draw(st.sampled_from(QUERIES))
    version = draw(st.sampled_from(["HTTP/1.1", "HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/1.1 x"]))
    lines = [f"{method} {target} {version}"]
    for _ in range(draw(st.integers(0, 6))):
        name = draw(st.sampled_from(HEADER_NAMES) | st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=8))
        value = draw(st.sampled_from(HEADER_VALUES) | st.text(st.characters(min_codepoint=32, max_codepoint=255), max_size=20))
        lines.append(f"{name}: {value}")
    body = draw(st.sampled_from(BODIES) | st.binary(max_size=64))
    eol = draw(st.sampled_from(["\r\n", "\r\n", "\n"]))
    raw = (eol.join(lines) + eol + eol).encode("latin-1") + body
    if draw(st.booleans()):
        raw += draw(st.binary(max_size=32))
    return raw


def _chunks(draw, data: bytes) -> list[bytes]:
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=4)))
    out, last = [], 0
    for c in cuts + [len(data)]:
        out.append(data[last:c])
        last = c
    return [c for c in out if c]


STATUS_LINE = re.compile(rb"(?:^|\r\n)HTTP/1\.1 (\d{3}) ")


def _feed(g, internal: bool, pieces: list[bytes]) -> bytes:
    c = g.client(internal=internal)
    for p in pieces:
        c.send(p)
        g.settle()
    g.loop.advance(1.0)
    out = c.read()
    c.lose()
    g.settle()
    return out


def _check(out: bytes) -> None:
    if out:
        assert out.startswith(b"HTTP/1.1 "), out[:80]
        statuses = [int(s) for s in STATUS_LINE.findall(out)]
        assert statuses and all(100 <= s < 600 for s in statuses), statuses
        assert 500 not in statuses, out[:400]


def test_fuzz_http_request_path():
    with inprocess_gateway() as g:

        @FUZZ
        @given(st.data())
        def run(data):
            reqs = data.draw(st.lists(request_bytes() | st.binary(max_size=200), min_size=1, max_size=3))
            raw = b"".join(reqs)
            internal = data.draw(st.booleans())
            _check(_feed(g, internal, _chunks(data.draw, raw)))

        run()
