"""The compiled and the plain-Python request path answer a stream of requests with the same bytes.

One byte stream per case (pipelined requests, chunked bodies, 100-continue, limits, protocol errors,
refused WebSocket upgrades), fed whole, byte by byte and 7 bytes at a time to a fresh gateway of each
engine; the bytes written back (and whether the connection closed) must be the same on both. Answers that carry values made
at random (connection tokens, gateway event ids, times) are left out of the streams.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.inprocess.conftest import InProcessGateway
from tests.inprocess.harness import FakeLoop, engine_modules, http_request, on_both_engines

EVENT = {"specversion": "1.0", "type": "greeting", "source": "t", "id": "e1", "time": "2026-12-02T07:00:00Z",
         "data": {"name": "ann"}}
ENV = {"RIGFAST_MAX_HEADERS": "8", "RIGFAST_MAX_BODY_BYTES": "512", "RIGFAST_MAX_HEADER_BYTES": "1024"}


def submission(event=EVENT, **kw) -> bytes:
    return http_request("POST", "/_rig/v1/events", json.dumps(event).encode(),
                        {"content-type": "application/cloudevents+json"}, **kw)


def chunked(body: bytes, sizes: tuple[int, ...]) -> bytes:
    out, off = [], 0
    for n in sizes:
        out.append(b"%x;ext=1\r\n%s\r\n" % (n, body[off:off + n]))
        off += n
    return b"".join(out) + b"%x\r\n%s\r\n0\r\n\r\n" % (len(body) - off, body[off:])


BODY = json.dumps(dict(EVENT, id="c1")).encode()
STREAMS = {
    "pipelined": http_request("GET", "/_rig/health") + submission() + submission(dict(EVENT, id="e2"))
    + http_request("HEAD", "/_rig/health") + http_request("OPTIONS", "/_rig/v1/events", headers={"origin": "http://a"}),
    "chunked": b"POST /_rig/v1/events HTTP/1.1\r\nhost: t\r\ncontent-type: application/cloudevents+json\r\n"
    b"transfer-encoding: chunked\r\n\r\n" + chunked(BODY, (7, 1, 30)) + http_request("GET", "/_rig/health"),
    "continue": b"POST /_rig/v1/events HTTP/1.1\r\nhost: t\r\ncontent-type: application/cloudevents+json\r\n"
    b"expect: 100-continue\r\ncontent-length: %d\r\n\r\n%s" % (len(BODY), BODY),
    "refused events": submission({"type": "x"}) + http_request("PUT", "/_rig/v1/events")
    + http_request("POST", "/_rig/v1/events", b"{", {"content-type": "application/json"}),
    "subscriptions of nobody": http_request("PUT", "/_rig/v1/connection/sse/abcdefghij/subscriptions",
                                            b'{"subscriptions": []}', {"content-type": "application/json"}),
    "http/1.0 and close": b"GET /_rig/health HTTP/1.0\r\n\r\n",
    "close after two": http_request("GET", "/_rig/health") + http_request("GET", "/_rig/health", keep_alive=False)
    + http_request("GET", "/_rig/health"),
    "body too large": submission(dict(EVENT, data={"pad": "x" * 600})),
    "too many headers": b"GET /_rig/health HTTP/1.1\r\nhost: t\r\n" + b"".join(b"x-%d: 1\r\n" % i for i in range(9))
    + b"\r\n",
    "head too large": http_request("GET", "/_rig/health") + b"GET /_rig/health HTTP/1.1\r\nhost: t\r\nx-big: "
    + b"a" * 1100 + b"\r\n\r\n",
    "malformed after good": http_request("GET", "/_rig/health") + b"GET / HTTP/1.1\r\nbad header line\r\n\r\n",
    "no host": b"GET /_rig/health HTTP/1.1\r\n\r\n",
    "two hosts": b"GET /_rig/health HTTP/1.1\r\nhost: a\r\nhost: b\r\n\r\n",
    "unknown expect": b"POST /_rig/v1/events HTTP/1.1\r\nhost: t\r\nexpect: magic\r\ncontent-length: 1\r\n\r\nx",
    "websocket refused": http_request("GET", "/_rig/v1/connection/ws", headers={"upgrade": "websocket",
                                                                                 "connection": "upgrade"}),
    "websocket without upgrade": http_request("GET", "/_rig/v1/connection/ws") + http_request("GET", "/_rig/health"),
}


def answers(engine: str, stream: bytes, step: int) -> tuple[bytes, bool]:
    """What one connection of a fresh gateway on ``engine`` writes back for ``stream`` fed ``step`` bytes at a time."""
    loop = FakeLoop()
    asyncio.set_event_loop(loop)
    try:
        with engine_modules(engine) as rf:
            g = InProcessGateway(rf, loop, ENV)
            try:
                c = g.client()
                for i in range(0, len(stream), step):
                    c.send(stream[i:i + step])
                    g.settle()
                return c.read(), c.closed
            finally:
                g.gw.hub.close_all()
    finally:
        asyncio.set_event_loop(None)


@pytest.mark.parametrize("step", [0, 1, 7], ids=["whole", "byte by byte", "7 bytes"])
@pytest.mark.parametrize("name", sorted(STREAMS))
def test_both_engines_write_the_same_bytes(name, step):
    stream = STREAMS[name]
    got = on_both_engines(lambda engine: answers(engine, stream, step or len(stream)))
    assert got["cython"] == got["python"]
    assert got["python"][0]  # every stream is answered
