"""rigfast.net.httpclient against a real loopback server: pooling, idle expiry, head-only fetches, bounded bodies."""

from __future__ import annotations

import asyncio

import pytest

from rigfast.net.httpclient import HttpClient, UpstreamError

WAIT_S = 5.0


class Server:
    """Answers every request with ``body``; counts connections and notices when the client closes one."""

    def __init__(self, body: bytes = b"ok"):
        self.body = body
        self.connections = 0
        self.closed = 0
        self.port = 0

    async def __aenter__(self):
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc):
        self.server.close()

    async def _handle(self, reader, writer):
        self.connections += 1
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(self.body), self.body))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            self.closed += 1
        finally:
            writer.close()


REQ = b"GET / HTTP/1.1\r\nhost: x\r\n\r\n"


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, WAIT_S))


def test_pooled_then_idle_connection_closed():
    """Sequential requests share one connection; one idle past idle_timeout_s is closed by the sweep."""

    async def main():
        async with Server() as srv:
            client = HttpClient(asyncio.get_running_loop(), 2.0, idle_timeout_s=0.3)
            key = ("http", "127.0.0.1", srv.port)
            for _ in range(3):
                status, _, body = await client.fetch(key, REQ)
                assert (status, body) == (200, b"ok")
            assert srv.connections == 1 and len(client.pools[key].idle) == 1
            while srv.closed == 0:  # the sweep closes it after ~0.3 s (the test's wait_for bounds this)
                await asyncio.sleep(0.02)
            assert client.pools[key].idle == []
            status, _, _ = await client.fetch(key, REQ)  # and the next request opens a fresh one
            assert status == 200 and srv.connections == 2
            client.close()

    run(main())


def test_body_over_max_is_an_error_and_head_only_returns_early():
    async def main():
        async with Server(b"x" * 5000) as srv:
            client = HttpClient(asyncio.get_running_loop(), 2.0)
            key = ("http", "127.0.0.1", srv.port)
            with pytest.raises(UpstreamError) as info:
                await client.fetch(key, REQ, max_body=1000)
            assert info.value.status == 502 and "127.0.0.1" not in info.value.message
            status, _, body = await client.fetch(key, REQ, max_body=1000, head_only=True)
            assert status == 200 and body == b""
            client.close()

    run(main())
