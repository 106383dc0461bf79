"""Micro benchmarks of the request path, in process, over the tests' fake transport (no syscalls).

Run: make bench  (or: python -m pytest bench/test_micro_request.py -p no:cacheprovider --benchmark-enable)
What it shows: the Python cost of one HTTP event submission (parse, validate,
answer, route to one subscriber) and of one broadcast fan-out, separately from
the kernel's cost of the writes.
"""

from __future__ import annotations

import asyncio

import orjson
import pytest

from rigfast import config
from rigfast.app import Gateway
from rigfast.net.protocol import HttpProtocol, ServerState
from tests.inprocess.harness import CountingTransport

EXTRACTORS = '{"bench.addressed":{"name":{"stable_field_index":1,"event":{"json_pointer":"/data/name"}}}}'


@pytest.fixture()
def gateway():
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    cfg = config.load({"EXTRACTORS": EXTRACTORS, "RIGFAST_WORKERS": "1"})
    gw = Gateway(cfg)
    yield gw, loop
    loop.close()


def connect(gw, loop, path: str) -> tuple[HttpProtocol, CountingTransport]:
    state = ServerState(gw.cfg, gw.inbound)
    proto = HttpProtocol(state)
    tr = CountingTransport()
    proto.connection_made(tr)
    proto.data_received(b"GET " + path.encode() + b" HTTP/1.1\r\nhost: x\r\n\r\n")
    return proto, tr


def publish_request(name: str, n: int) -> bytes:
    body = orjson.dumps(
        {"specversion": "1.0", "type": "bench.addressed", "source": "bench", "id": str(n),
         "data": {"name": name, "t": 123456789, "n": n, "pad": "~PB~" + "x" * 120}}
    )
    return (
        b"POST /_rig/v1/events HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/cloudevents+json\r\n"
        b"content-length: %d\r\n\r\n%s" % (len(body), body)
    )


def test_publish_addressed(benchmark, gateway):
    """One HTTP submission routed to one of 1,000 subscribers, flushed: Python cost per event."""
    gw, loop = gateway
    from urllib.parse import quote

    for i in range(1000):
        subs = quote(f'[{{"eventType":"bench.addressed","oneOf":[{{"name":"u{i}"}}]}}]')
        connect(gw, loop, f"/_rig/v1/connection/sse?subscriptions={subs}")
    gw.hub._flush()
    pub, tr = connect(gw, loop, "/_rig/health")
    reqs = [publish_request(f"u{i % 1000}", i) for i in range(1000)]
    it = iter(range(10**9))

    def one():
        pub.data_received(reqs[next(it) % 1000])
        gw.hub._flush()

    benchmark(one)
    assert tr.written > 0


def test_fanout_broadcast_2000(benchmark, gateway):
    """One event to 2,000 SSE subscribers (append to outboxes + 2,000 flushes): Python cost per event."""
    gw, loop = gateway
    for _ in range(2000):
        connect(gw, loop, '/_rig/v1/connection/sse?subscriptions=[{"eventType":"bench"}]')
    while gw.hub._touched:
        gw.hub._flush()
    from rigfast.cloudevents import parse_structured

    ev = orjson.dumps({"specversion": "1.0", "type": "bench", "source": "b", "id": "1", "data": {"pad": "x" * 150}})

    def one():
        gw.hub.publish(parse_structured(ev))
        while gw.hub._pending or gw.hub._touched:
            gw.hub._flush()

    benchmark(one)


PROXY_APIS = ('[{"id": "bench", "proxy": {"target_url": "127.0.0.1", "port": 9}, "version_data": {"default": '
              '{"endpoints": [{"id": "file", "method": "GET", "path_regex": "/file\\\\.txt"}]}}}]')
NGINX_ANSWER = (b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Wed, 02 Dec 2026 01:00:00 GMT\r\n"
                b"Content-Type: text/plain\r\nContent-Length: 65\r\nLast-Modified: Wed, 02 Dec 2026 00:00:00 GMT\r\n"
                b"Connection: keep-alive\r\nETag: \"x-41\"\r\nAccept-Ranges: bytes\r\n\r\n" + b"x" * 64 + b"\n")


def test_proxy_forward(benchmark):
    """One proxied GET (T10's request): inbound parse, route, upstream request, the upstream's answer parsed
    and streamed back, over fake transports on both sides: the forwarding loop's Python cost per request."""
    from rigfast.net.httpclient import UpstreamConn

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        gw = Gateway(config.load({"RIGFAST_WORKERS": "1", "PROXY_CONFIG_FILE": PROXY_APIS}))
        state = ServerState(gw.cfg, gw.inbound)
        proto, tr = HttpProtocol(state), CountingTransport()
        proto.connection_made(tr)
        pool = gw.proxy.client.pool(("http", "127.0.0.1", 9))
        up_tr = CountingTransport()
        conn = UpstreamConn(pool)
        conn.connection_made(up_tr)
        pool.conns.add(conn)
        pool.idle.append(conn)
        req = b"GET /file.txt HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n"

        def one():
            proto.data_received(req)
            conn.data_received(NGINX_ANSWER)

        benchmark(one)
        assert tr.written > 0 and up_tr.written > 0 and pool.idle == [conn]
        gw.proxy.client.close()
    finally:
        loop.close()
