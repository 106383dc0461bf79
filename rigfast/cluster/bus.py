"""The node-local bus: the workers of one node linked over Unix domain sockets.

How this works: worker ``i`` listens on ``<dir>/w<i>.sock`` and keeps one
outgoing connection to every peer. Each connection carries frames one way
only (``wire.encode_frame``): a worker sends on its outgoing links and reads
on the connections its listener accepted, so a reply to a request travels on
the replier's own outgoing link. A link that fails is reconnected with a
growing pause (50 ms up to 1 s); while a peer is unreachable, frames for it
are dropped (a dead worker holds no connections, so no event is owed to it)
and requests to it fail at once. Every time a link (re)connects, the sender
pushes its live blacklist entries, so a restarted worker learns the node's
blacklist from its peers.

A peer that stops reading cannot grow our memory: past
``LINK_BUFFER_LIMIT`` bytes of unsent data the link is dropped and
reconnected (frames in between are lost, and logged).
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Callable

from rigfast.cluster import wire

log = logging.getLogger("rigfast.cluster.bus")

LINK_BUFFER_LIMIT = 32 << 20
RECONNECT_MIN_S = 0.05
RECONNECT_MAX_S = 1.0

FrameHandler = Callable[[int, bytes], None]


def socket_path(directory: str, worker: int) -> str:
    return os.path.join(directory, f"w{worker}.sock")


class FramedConnection(asyncio.Protocol):
    """A connection frames come in on (``wire.encode_frame``): each goes to ``on_frame``. Bad
    framing drops the connection; a frame whose handling fails is logged and the others go on.
    Subclasses name themselves in the log lines (``LOG``, ``BAD_FRAMING``, ``FRAME_FAILED``)."""

    LOG = log
    BAD_FRAMING = "bus: dropping a peer connection: %s"
    FRAME_FAILED = "bus: handling a %s frame failed"

    def __init__(self) -> None:
        self.decoder = wire.FrameDecoder()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def on_frame(self, kind: int, payload: bytes) -> None:
        raise NotImplementedError

    def data_received(self, data: bytes) -> None:
        try:
            frames = self.decoder.feed(data)
        except ValueError as exc:
            self.LOG.error(self.BAD_FRAMING, exc)
            self.transport.abort()
            return
        handle = self.on_frame
        for kind, payload in frames:
            try:
                handle(kind, payload)
            except Exception:  # noqa: BLE001 - one bad frame never stops the others
                self.LOG.exception(self.FRAME_FAILED, wire.KIND_NAMES.get(kind, kind))


class _Inbound(FramedConnection):
    """One accepted connection from a peer: frames in."""

    def __init__(self, bus: "Bus"):
        super().__init__()
        self.bus = bus

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.bus.inbound.add(self)

    def on_frame(self, kind: int, payload: bytes) -> None:
        self.bus.handle_frame(kind, payload)

    def connection_lost(self, exc) -> None:
        self.bus.inbound.discard(self)


class _Outbound(asyncio.Protocol):
    def __init__(self, link: "Link"):
        self.link = link
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        pass  # links are one-way

    def connection_lost(self, exc) -> None:
        self.link.lost(self)


class KeepsConnected:
    """An outgoing connection to the Unix socket ``path`` kept up by ``_keep_connected``: a failed
    connect is retried after a growing pause (RECONNECT_MIN_S up to RECONNECT_MAX_S) until
    ``stopping()``; ``linked(proto)`` follows each (re)connect, and setting ``wake`` once ``proto``
    is None (the connection was lost) connects again."""

    path: str
    proto: asyncio.Protocol | None
    wake: asyncio.Event

    def stopping(self) -> bool:
        raise NotImplementedError

    def new_protocol(self) -> asyncio.Protocol:
        raise NotImplementedError

    def linked(self, proto) -> None:
        raise NotImplementedError

    async def _keep_connected(self) -> None:
        loop = asyncio.get_running_loop()
        pause = RECONNECT_MIN_S
        while not self.stopping():
            if self.proto is None:
                try:
                    _, proto = await loop.create_unix_connection(self.new_protocol, self.path)
                except OSError:
                    await asyncio.sleep(pause)
                    pause = min(RECONNECT_MAX_S, pause * 2)
                    continue
                pause = RECONNECT_MIN_S
                self.proto = proto
                self.wake.clear()
                self.linked(proto)
            await self.wake.wait()
            self.wake.clear()


class Link(KeepsConnected):
    """Our outgoing connection to one peer worker."""

    def __init__(self, bus: "Bus", peer: int):
        self.bus = bus
        self.peer = peer
        self.path = socket_path(bus.directory, peer)
        self.proto: _Outbound | None = None
        self.task: asyncio.Task | None = None
        self.wake = asyncio.Event()
        self.dropped = 0

    @property
    def connected(self) -> bool:
        return self.proto is not None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._keep_connected())

    def stopping(self) -> bool:
        return self.bus.closing

    def new_protocol(self) -> _Outbound:
        return _Outbound(self)

    def linked(self, proto: _Outbound) -> None:
        log.debug("bus: linked to worker %d", self.peer)
        self.bus.link_up(self)

    def lost(self, proto: _Outbound) -> None:
        if self.proto is proto:
            self.proto = None
            self.wake.set()

    def send(self, frame: bytes) -> bool:
        proto = self.proto
        if proto is None or proto.transport is None or proto.transport.is_closing():
            self.dropped += 1
            return False
        t = proto.transport
        t.write(frame)
        if t.get_write_buffer_size() > LINK_BUFFER_LIMIT:
            log.error("bus: worker %d does not read; dropping the link", self.peer)
            t.abort()
        return True

    def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
        if self.proto is not None and self.proto.transport is not None:
            self.proto.transport.close()


class Bus:
    """This worker's end of the node-local bus."""

    def __init__(self, directory: str, worker: int, count: int, handle_frame: FrameHandler,
                 on_link_up: Callable[[Link], None] | None = None):
        self.directory = directory
        self.worker = worker
        self.count = count
        self.handle_frame = handle_frame
        self.on_link_up = on_link_up
        self.links = {j: Link(self, j) for j in range(count) if j != worker}
        self.inbound: set[_Inbound] = set()
        self.server: asyncio.AbstractServer | None = None
        self.closing = False

    async def start(self) -> None:
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        path = socket_path(self.directory, self.worker)
        try:
            os.unlink(path)  # left over by a previous incarnation of this worker
        except FileNotFoundError:
            pass
        loop = asyncio.get_running_loop()
        self.server = await loop.create_unix_server(lambda: _Inbound(self), path, backlog=64)
        os.chmod(path, 0o600)
        for link in self.links.values():
            link.start()

    def link_up(self, link: Link) -> None:
        if self.on_link_up is not None:
            self.on_link_up(link)

    def send(self, worker: int, frame: bytes) -> bool:
        link = self.links.get(worker)
        return link.send(frame) if link is not None else False

    def broadcast(self, frame: bytes) -> None:
        for link in self.links.values():
            link.send(frame)

    def connected(self) -> list[int]:
        return sorted(j for j, link in self.links.items() if link.connected)

    async def stop(self) -> None:
        self.closing = True
        for link in self.links.values():
            link.close()
        if self.server is not None:
            self.server.close()
        for p in list(self.inbound):
            if p.transport is not None:
                p.transport.close()
        try:
            os.unlink(socket_path(self.directory, self.worker))
        except OSError:
            pass
