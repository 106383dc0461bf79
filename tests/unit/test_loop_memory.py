"""untrack_transports (rigfast.app): uvloop's per-transport record by file descriptor is gone, the loop
still serves connections and still watches descriptors with add_reader. A real uvloop loop, real sockets
on loopback."""

from __future__ import annotations

import asyncio
import gc
import socket
import weakref

import uvloop

from rigfast.app import untrack_transports

WAIT_S = 5.0


def _transport_maps(loop) -> list:
    return [o for o in gc.get_referents(loop) if isinstance(o, weakref.WeakValueDictionary)]


class _Echo(asyncio.Protocol):
    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


async def _echo_round_trips(loop, n: int) -> int:
    """n connections to an echo server on this loop, each one answered; how many records uvloop holds then."""
    server = await loop.create_server(_Echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    streams = [await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), WAIT_S) for _ in range(n)]
    for i, (reader, writer) in enumerate(streams):
        writer.write(b"ping %d\n" % i)
        assert await asyncio.wait_for(reader.readline(), WAIT_S) == b"ping %d\n" % i
    held = sum(len(m) for m in _transport_maps(loop))
    for _, writer in streams:
        writer.close()
    server.close()
    await server.wait_closed()
    return held


def test_uvloop_keeps_no_record_per_connection():
    async def main() -> tuple[int, bool, int]:
        loop = asyncio.get_running_loop()
        before = await _echo_round_trips(loop, 5)  # uvloop as it comes: both ends of each connection recorded
        found = untrack_transports(loop)
        after = await _echo_round_trips(loop, 5)
        return before, found, after

    before, found, after = uvloop.run(main())
    assert before >= 10
    assert found
    assert after == 0


def test_add_reader_still_works_after_untracking():
    async def main() -> bytes:
        loop = asyncio.get_running_loop()
        untrack_transports(loop)
        a, b = socket.socketpair()
        a.setblocking(False)
        got = loop.create_future()
        loop.add_reader(a.fileno(), lambda: got.set_result(a.recv(16)) if not got.done() else None)
        try:
            b.send(b"readable")
            return await asyncio.wait_for(got, WAIT_S)
        finally:
            loop.remove_reader(a.fileno())
            a.close()
            b.close()

    assert uvloop.run(main()) == b"readable"


def test_asyncio_loop_is_left_alone():
    async def main() -> bool:
        return untrack_transports(asyncio.get_running_loop())

    assert asyncio.run(main()) is False
