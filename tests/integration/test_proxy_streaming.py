"""Reverse proxy streaming: SSE from an upstream, WebSocket pass-through, back-pressure, bounded oversize answers."""

from __future__ import annotations

import asyncio
import json
import socket
import socketserver
import threading
import time

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import serve

from tests.helpers import T, rss, wait_until

BLOCK = b"z" * (1 << 20)


class RawUpstream:
    """A loopback origin (threads) that writes its answers by hand, so a test controls every byte and pause."""

    def __init__(self) -> None:
        self.sent = 0  # body bytes written by /big (back-pressure)
        self.gate = threading.Event()  # /sse sends its second event once set
        self.done = threading.Event()
        self.uploads: list[int] = []
        up = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self):
                while True:
                    line = self.rfile.readline(65537)
                    if not line:
                        return
                    method, target, _ = line.decode("latin-1").split(" ", 2)
                    headers = {}
                    while True:
                        h = self.rfile.readline(65537)
                        if h in (b"\r\n", b"\n", b""):
                            break
                        k, _, v = h.decode("latin-1").partition(":")
                        headers[k.strip().lower()] = v.strip()
                    n = int(headers.get("content-length") or 0)
                    if not getattr(self, target.split("?")[0].strip("/").replace("/", "_") or "root")(headers, n):
                        return

            def sse(self, headers, n):
                w = self.wfile
                w.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
                        b"connection: close\r\n\r\n")
                w.write(b"id: 1\r\ndata: first\r\n\r\n")
                w.flush()
                up.gate.wait(3 * T)  # the test reads the first event before letting the upstream go on
                w.write(b"id: 2\r\ndata: second\r\n\r\n")
                w.flush()
                return False  # close: the end of the stream

            def big(self, headers, n):
                total = int(headers.get("x-size", str(64 << 20)))
                chunked = headers.get("x-chunked") == "1"
                w = self.wfile
                ctype = b"content-type: text/event-stream\r\n" if headers.get("x-sse") == "1" else b""
                if chunked:
                    w.write(b"HTTP/1.1 200 OK\r\n%stransfer-encoding: chunked\r\n\r\n" % ctype)
                else:
                    w.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % total)
                left = total
                try:
                    while left > 0:
                        part = BLOCK[:min(left, len(BLOCK))]
                        w.write(b"%x\r\n%s\r\n" % (len(part), part) if chunked else part)
                        left -= len(part)
                        up.sent += len(part)
                    if chunked:
                        w.write(b"0\r\n\r\n")
                    w.flush()
                except OSError:
                    return False
                up.done.set()
                return True

            def upload(self, headers, n):
                got = 0
                if headers.get("transfer-encoding") == "chunked":
                    while True:
                        size = int(self.rfile.readline(100).split(b";")[0], 16)
                        left = size
                        while left:
                            chunk = self.rfile.read(min(left, 1 << 20))
                            if not chunk:
                                return False
                            left -= len(chunk)
                        self.rfile.readline(10)
                        got += size
                        if size == 0:
                            break
                while got < n:
                    chunk = self.rfile.read(min(n - got, 1 << 20))
                    if not chunk:
                        return False
                    got += len(chunk)
                up.uploads.append(got)
                body = json.dumps({"received": got}).encode()
                self.wfile.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                                 % (len(body), body))
                return True

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "RawUpstream":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.gate.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(T)


class EchoServer:
    """A websockets echo server on loopback, in a thread with its own loop."""

    def __init__(self) -> None:
        self.port = 0
        self.paths: list[str] = []
        self.ready = threading.Event()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    async def _echo(self, ws):
        self.paths.append(ws.request.path)
        async for msg in ws:
            await ws.send(msg)

    def __enter__(self) -> "EchoServer":
        self.thread.start()

        async def start():
            self.server = await serve(self._echo, "127.0.0.1", 0)
            self.port = self.server.sockets[0].getsockname()[1]

        asyncio.run_coroutine_threadsafe(start(), self.loop).result(T)
        return self

    def __exit__(self, *exc) -> None:
        async def stop():
            self.server.close()
            await self.server.wait_closed()

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(T)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(T)


def api(api_id, port, endpoints):
    return {"id": api_id, "proxy": {"target_url": "127.0.0.1", "port": port},
            "version_data": {"default": {"endpoints": endpoints}}}


@pytest.fixture(scope="module")
def origin():
    with RawUpstream() as up:
        yield up


@pytest.fixture(scope="module")
def echo():
    with EchoServer() as e:
        yield e


@pytest.fixture(scope="module")
def gw(origin, echo):
    from tests.conftest import start_gateway

    apis = [
        api("raw", origin.port, [{"id": "sse", "method": "GET", "path_regex": "/sse"},
                                 {"id": "big", "method": "GET", "path_regex": "/big"},
                                 {"id": "up", "method": "POST", "path_regex": "/upload"}]),
        api("ws", echo.port, [{"id": "echo", "method": "GET", "path_regex": "/echo/(.*)", "path_replacement": "/e/\\1"}]),
    ]
    g = start_gateway(PROXY_CONFIG_FILE=json.dumps(apis), PROXY_RECV_TIMEOUT="3000",
                      RIGFAST_PROXY_MAX_RESPONSE_BYTES=str(8 << 20))
    yield g
    g.stop()


def test_sse_from_upstream_streams(gw, origin):
    """An upstream's event stream reaches the client event by event: the first event arrives while the upstream
    still holds the second back (nothing is buffered whole), then the second, then the end."""
    origin.gate.clear()
    with httpx.stream("GET", gw.inbound + "/sse", timeout=T) as r:
        assert r.status_code == 200
        assert r.headers["content-type"] == "text/event-stream"
        lines = r.iter_lines()
        assert next(lines) == "id: 1"
        assert next(lines) == "data: first"
        origin.gate.set()  # only now may the upstream send the rest
        rest = list(lines)
    assert "data: second" in rest


def test_websocket_pass_through(gw, echo):
    """A WebSocket upgrade is forwarded to the upstream (path rewritten as the route says); after its 101 the
    connection is a byte pipe both ways: text, binary and a 1 MiB message come back as sent."""

    async def run():
        async with connect(gw.ws + "/echo/room?x=1", open_timeout=T, max_size=4 << 20) as ws:
            for msg in ("hello", b"\x00\x01binary", "ü" * 10, BLOCK):
                await ws.send(msg)
                assert await asyncio.wait_for(ws.recv(), T) == msg

    asyncio.run(run())
    assert echo.paths[-1] == "/e/room?x=1"


def test_websocket_upstream_refusal_passed_back(gw, origin):
    """An upgrade the upstream does not accept: its answer reaches the client (no 502, no hang)."""
    origin.gate.set()
    r = httpx.get(gw.inbound + "/sse", headers={"connection": "upgrade", "upgrade": "websocket",
                                                  "sec-websocket-version": "13", "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ=="},
                  timeout=T)
    assert r.status_code == 200 and "data: first" in r.text


def test_back_pressure_bounds_memory(gw, origin):
    """A client that does not read a 64 MiB event stream (exempt from the size cap): the upstream is paused after a
    bounded amount (socket buffers plus the gateway's send buffer), the gateway's memory does not grow by the body;
    then every byte arrives."""
    before = rss(gw)
    origin.sent = 0
    origin.done.clear()
    with socket.create_connection(gw.hostport, timeout=T) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)
        s.sendall(b"GET /big HTTP/1.1\r\nhost: x\r\nx-size: %d\r\nx-chunked: 1\r\nx-sse: 1\r\nconnection: close\r\n\r\n" % (64 << 20))
        # the upstream stops when every buffer on the way is full: wait until its count stays put
        wait_until(lambda: origin.sent > 0 and _still(origin, origin.sent), timeout=3 * T, what="upstream paused")
        assert not origin.done.is_set()
        assert origin.sent < 24 << 20, origin.sent
        assert rss(gw) - before < 24 << 20
        got = 0
        while True:
            chunk = s.recv(1 << 20)
            if not chunk:
                break
            got += len(chunk)
    assert got > 64 << 20  # the body (plus chunk framing) arrived whole
    assert origin.done.is_set()


def _still(origin, n: int) -> bool:
    """True if the upstream's count does not move for 0.3 s (it is blocked in a write)."""
    deadline = time.monotonic() + 0.3
    while time.monotonic() < deadline:
        if origin.sent != n:
            return False
        time.sleep(0.02)
    return True


def test_oversize_answers_bounded(gw, origin):
    """Issue 11 item 7: 20 concurrent 32 MiB answers over RIGFAST_PROXY_MAX_RESPONSE_BYTES (8 MiB): announced by
    content-length, 502 before any byte (with no address in the text); chunked, cut after 8 MiB. The gateway holds
    none of it: its memory after the round is within a few MiB of before."""
    before = rss(gw)

    async def one(client, chunked):
        async with client.stream("GET", gw.inbound + "/big", headers={"x-size": str(32 << 20), "x-chunked": chunked}) as r:
            if chunked == "0":
                body = await r.aread()
                return r.status_code, body
            got, cut = 0, False
            try:
                async for part in r.aiter_raw():
                    got += len(part)
            except httpx.HTTPError:
                cut = True
            return r.status_code, (got, cut)

    async def run():
        async with httpx.AsyncClient(timeout=3 * T, limits=httpx.Limits(max_connections=40)) as c:
            return await asyncio.gather(*[one(c, ch) for ch in ("0", "1") for _ in range(10)])

    results = asyncio.run(run())
    for status, what in results[:10]:
        assert status == 502 and b"larger" in what and b"127.0.0.1" not in what
    for status, (got, cut) in results[10:]:
        assert status == 200 and cut and 0 < got <= 8 << 20, got  # the head went on; the body is cut at the cap
    assert rss(gw) - before < 48 << 20, rss(gw) - before
    assert httpx.get(gw.inbound + "/sse", timeout=T).status_code == 200  # still serving (gate is open)


def test_large_upload_streams_with_back_pressure(gw, origin):
    """A 48 MiB request body (48x RIGFAST_MAX_BODY_BYTES) streams to the upstream as it arrives, by content-length
    and chunked; the gateway never holds it (memory within a few MiB), and the upstream's answer comes back."""
    before = rss(gw)

    def gen():
        for _ in range(48):
            yield BLOCK

    r = httpx.post(gw.inbound + "/upload", content=b"".join(gen()), timeout=3 * T)  # content-length
    assert r.status_code == 200 and r.json() == {"received": 48 << 20}, r.text
    r = httpx.post(gw.inbound + "/upload?chunked", content=gen(), timeout=3 * T)  # a generator goes chunked
    assert r.status_code == 200 and r.json() == {"received": 48 << 20}, r.text
    assert rss(gw) - before < 24 << 20, rss(gw) - before
