"""The compiled and the plain-Python reverse proxy write the same bytes both ways.

For each case, one client request goes through a fresh gateway of each engine to an upstream
connection on a fake transport, which answers with the case's bytes, fed whole, byte by byte and 7
bytes at a time. What the upstream got (the forwarded request), what the client got and whether
each connection closed must be the same on both engines; the expected answer is checked too.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.inprocess.conftest import InProcessGateway
from tests.inprocess.harness import FakeLoop, FakeTransport, engine_modules, http_request, on_both_engines
from tests.inprocess.harness import parse_responses

APIS = json.dumps([{
    "id": "books", "proxy": {"target_url": "books.internal", "port": 8080, "use_env": False},
    "version_data": {"default": {"endpoints": [
        {"id": "any", "method": "GET", "path_regex": "/books(/.*)?",
         "transform_request_headers": {"add_headers": {"x-api": "books"}}},
        {"id": "head", "method": "HEAD", "path_regex": "/books(/.*)?"},
    ]}},
}])
GET = http_request("GET", "/books/1?x=%20y", headers={"connection": "keep-alive, x-hop", "x-hop": "1", "accept": "*/*",
                                                     "x-forwarded-for": "1.2.3.4"})
HEAD = http_request("HEAD", "/books/1")
ANSWERS = {
    "length": (GET, b"HTTP/1.1 200 OK\r\nServer: up\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n"
                    b"Connection: keep-alive, X-Up\r\nX-Up: 1\r\nKeep-Alive: timeout=5\r\nX-Kept:\t yes \r\n\r\nhello"),
    "chunked": (GET, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/event-stream\r\n\r\n"
                     b"3;x=1\r\nabc\r\n0\r\nTrailer: t\r\n\r\n"),
    "interim": (GET, b"HTTP/1.1 100 Continue\r\nX-Early: 1\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
                     b"HTTP/1.1 201 Created\r\nLocation: /books/2\r\nContent-Length: 0\r\n\r\n"),
    "head": (HEAD, b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\nETag: \"e\"\r\n\r\n"),
    "not modified": (GET, b"HTTP/1.1 304 Not Modified\r\nETag: \"e\"\r\nContent-Length: 7\r\n\r\n"),
    "no content": (GET, b"HTTP/1.1 204 No Content\r\nX-A: b\r\n\r\n"),
    "until close": (GET, b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nall of it"),
    "invalid": (GET, b"HTTP/1.1 200 OK\r\nX : bad\r\nContent-Length: 0\r\n\r\n"),
}
EXPECT = {"length": (200, b"hello"), "chunked": (200, b"abc"), "interim": (201, b""), "head": (200, b""),
          "not modified": (304, b""), "no content": (204, b""), "invalid": (502, None)}


def dechunk(body: bytes) -> bytes:
    out = []
    while True:
        size, _, body = body.partition(b"\r\n")
        n = int(size, 16)
        if n == 0:
            return b"".join(out)
        out.append(body[:n])
        body = body[n + 2:]


def exchange(engine: str, request: bytes, answer: bytes, step: int) -> tuple[bytes, bytes, bool, bool]:
    """(upstream request, client bytes, client closed, upstream closed) on ``engine``."""
    loop = FakeLoop()
    asyncio.set_event_loop(loop)
    try:
        with engine_modules(engine) as rf:
            g = InProcessGateway(rf, loop, {"PROXY_CONFIG_FILE": APIS})
            try:
                pool = g.gw.proxy.client.pool(("http", "books.internal", 8080))
                from rigfast.net.httpclient import UpstreamConn  # this engine's (sys.modules points at it)

                conn = UpstreamConn(pool)
                up = FakeTransport()
                conn.connection_made(up)
                pool.conns.add(conn)
                pool.idle.append(conn)
                c = g.client()
                c.send(request)
                g.settle()
                forwarded = up.take()
                for i in range(0, len(answer), step):
                    conn.data_received(answer[i:i + step])
                    g.settle()
                if not up.closed and not conn.complete:
                    conn.connection_lost(None)  # the upstream closes (an answer delimited by it)
                    g.settle()
                return forwarded, c.read(), c.closed, up.closed
            finally:
                g.gw.proxy.client.close()
                g.gw.hub.close_all()
    finally:
        asyncio.set_event_loop(None)


@pytest.mark.parametrize("name", sorted(ANSWERS))
def test_both_engines_forward_the_same_bytes(name):
    request, answer = ANSWERS[name]
    for step in (len(answer), 1, 7):  # whole, byte by byte, 7 bytes at a time
        got = on_both_engines(lambda engine: exchange(engine, request, answer, step))
        assert got["cython"] == got["python"], step
    forwarded, client, _, _ = got["python"]
    assert forwarded.startswith(request.split(b" ", 1)[0] + b" /books/1")
    assert b"\r\nhost: books.internal:8080\r\n" in forwarded and b"x-hop" not in forwarded.lower()
    if name in EXPECT:
        status, body = EXPECT[name]
        got_status, headers, got_body = parse_responses(client)[-1]
        assert got_status == status
        if headers.get("transfer-encoding") == "chunked":
            got_body = dechunk(got_body)
        assert body is None or got_body == body
    if name == "length":
        head = client.partition(b"\r\n\r\n")[0]
        assert b"X-Kept:\t yes " in head and b"X-Up" not in head and b"Keep-Alive" not in head


def test_the_python_engine_alone_answers():
    """Without the compiled engine (RIGFAST_NO_EXTENSIONS=1 runs), the plain-Python proxy still answers right."""
    forwarded, client, closed, _ = exchange("python", *ANSWERS["length"], 1000)
    assert parse_responses(client)[0][2] == b"hello" and not closed
    assert b"x-api: books\r\n" in forwarded and b"x-forwarded-for: 1.2.3.4, 127.0.0.1\r\n" in forwarded
