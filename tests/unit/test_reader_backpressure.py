"""The node reader's back-pressure (rigfast.cluster.reader): a worker that does not read holds the event source
back instead of growing the reader's memory, reading resumes when it has read, and a worker that reads nothing
for RIGFAST_READER_STALL_S is cut off. A real reader on a Unix socket, a real worker-side socket that does or
does not read; the event source is a stand-in that records pause/resume (no broker needed)."""

from __future__ import annotations

import asyncio
import logging
import socket
import time

import orjson
import pytest
import uvloop

from rigfast.cloudevents import parse_structured
from rigfast.cluster import wire
from rigfast.cluster.reader import Reader, socket_path
from rigfast.config import Config, parse_env

WAIT_S = 10.0
LINK_BYTES = 8192


class _Source:
    """What the reader uses of an event source, and whether it holds back."""

    def __init__(self, cfg, loop, on_events):
        self.on_events = on_events
        self.on_positions = None
        self.flow: list[str] = []

    def start(self) -> None:
        self.flow.append("start")

    def pause(self) -> None:
        self.flow.append("pause")

    def resume(self) -> None:
        self.flow.append("resume")

    def resume_at(self, offsets) -> None:
        pass

    def health(self) -> dict:
        return {"state": "connected"}

    async def stop(self) -> None:
        pass


async def _until(pred, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not pred():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


def _events(n: int, start: int) -> list:
    out = []
    for i in range(start, start + n):
        ev = parse_structured(orjson.dumps({"specversion": "1.0", "type": "t", "source": "/s", "id": f"e{i}",
                                            "data": {"pad": "x" * 400}}))
        ev.rid = f"k:t:0:{i}"
        out.append(ev)
    return out


async def _scenario(tmp_path, caplog) -> None:
    loop = asyncio.get_running_loop()
    cfg = Config(parse_env({"RIGFAST_WORKER_COUNT": "1", "RIGFAST_READER_LINK_BYTES": str(LINK_BYTES),
                            "RIGFAST_READER_STALL_S": "0.5", "RIGFAST_HISTORY_SIZE": "0"}))
    sources: list[_Source] = []
    reader = Reader(cfg, loop, str(tmp_path), source_factory=lambda *a: sources.append(_Source(*a)) or sources[-1])
    src = sources[0]
    await reader.start()
    worker = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    worker.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    worker.connect(socket_path(str(tmp_path)))
    worker.setblocking(False)
    worker.sendall(wire.encode_json_frame(wire.HELLO, {"worker": 0}) +
                   wire.encode_json_frame(wire.INTEREST, {"add": [{"eventType": "t"}]}) + wire.encode_frame(wire.READY, b""))
    await _until(lambda: src.flow == ["start"], "the source started once the worker said its interest")

    # the worker reads nothing: batches go out until its link holds LINK_BYTES unsent, then the source is held
    sent = 0
    while "pause" not in src.flow:
        assert sent < 10000, "the reader never held the source back"
        src.on_events(_events(20, sent))
        sent += 20
        await asyncio.sleep(0)
    assert src.flow == ["start", "pause"]
    [conn] = reader.conns
    assert LINK_BYTES < conn.transport.get_write_buffer_size() < LINK_BYTES + 20 * 1000  # one batch over, not more

    # the worker reads: once it has taken all but a quarter, the source goes on; every event arrived
    decoder, got = wire.FrameDecoder(), []

    def read_some() -> bool:
        try:
            data = worker.recv(1 << 16)
        except BlockingIOError:
            return False
        for kind, payload in decoder.feed(data):
            if kind == wire.EVENTS:
                got.extend(e.id for e in wire.decode_events(payload)[1])
        return src.flow[-1] == "resume" and len(got) == sent

    await _until(read_some, "the source resumed and every event read")
    assert src.flow == ["start", "pause", "resume"]
    assert got == [f"e{i}" for i in range(sent)]

    # the worker stops reading for good: held back again, then cut after the stall bound; reading resumes
    caplog.set_level(logging.ERROR, logger="rigfast.reader")
    while src.flow[-1] != "pause":
        src.on_events(_events(20, sent))
        sent += 20
        await asyncio.sleep(0)
    await _until(lambda: not reader.conns and src.flow[-1] == "resume", "the stalled worker cut, reading resumed")
    assert any("read nothing for" in r.getMessage() for r in caplog.records)
    assert not reader.index.match("t", {})  # its interest went with it
    worker.close()
    await reader.stop()


@pytest.mark.parametrize("loop_kind", ["uvloop", "asyncio"])
def test_a_worker_behind_holds_the_source_back_and_a_stalled_one_is_cut(tmp_path, caplog, loop_kind):
    run = uvloop.run if loop_kind == "uvloop" else asyncio.run
    run(asyncio.wait_for(_scenario(tmp_path, caplog), 3 * WAIT_S))
