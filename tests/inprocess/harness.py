"""In-process harness: the real gateway objects on a fake transport and a fake loop, for either engine.

- :class:`FakeTransport` records what the protocol writes (and whether it closed).
- :class:`FakeLoop` is an event loop that runs nothing by itself: callbacks wait until
  :meth:`FakeLoop.run_ready`, timers until :meth:`FakeLoop.advance` moves its clock.
  Coroutines handed to ``create_task`` are stepped on it too (their awaits must be
  futures of this loop).
- :func:`load_engine` gives the rigfast modules built on the compiled engine (``cython``)
  or on the plain-Python twins (``python``): the second is a separate import of the
  package with ``RIGFAST_NO_EXTENSIONS=1``, so both run in one test session.
- :class:`Client` is one connection to a :class:`ServerState`: ``send`` bytes, read ``out``.

Used by ``tests/inprocess`` and by the micro benchmarks in ``bench/``.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
import sys
import types
from collections import deque
from typing import Any, Callable, Iterator

# -- transport ----------------------------------------------------------------------------------


class FakeTransport(asyncio.Transport):
    """A transport that keeps what is written (``take()`` returns it) and whether it was closed."""

    def __init__(self, peer: tuple = ("127.0.0.1", 50000)):
        super().__init__()
        self.peer = peer
        self.buffer = bytearray()
        self.written = 0
        self.closed = False
        self.aborted = False
        self.eof_written = False
        self.reading = True
        self.high_water: int | None = None
        self.protocol: Any = None

    def write(self, data) -> None:
        self.written += len(data)
        self.buffer += data

    def writelines(self, parts) -> None:
        for p in parts:
            self.write(p)

    def take(self) -> bytes:
        """What was written since the last take."""
        out = bytes(self.buffer)
        self.buffer.clear()
        return out

    def get_extra_info(self, name, default=None):
        return self.peer if name == "peername" else default

    def set_protocol(self, protocol) -> None:
        self.protocol = protocol

    def get_protocol(self):
        return self.protocol

    def set_write_buffer_limits(self, high=None, low=None) -> None:
        self.high_water = high

    def get_write_buffer_size(self) -> int:
        return 0

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def is_reading(self) -> bool:
        return self.reading

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof_written = True

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = self.aborted = True

    def is_closing(self) -> bool:
        return self.closed


class CountingTransport(FakeTransport):
    """Only counts what is written (benchmarks: nothing kept, nothing copied)."""

    def write(self, data) -> None:
        self.written += len(data)


# -- loop ---------------------------------------------------------------------------------------


class FakeHandle:
    __slots__ = ("when", "callback", "args", "cancelled")

    def __init__(self, when: float, callback: Callable, args: tuple):
        self.when = when
        self.callback = callback
        self.args = args
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True

    def when_(self) -> float:
        return self.when


class FakeTask:
    """Steps a coroutine on a :class:`FakeLoop`; what it awaits must be a future of that loop."""

    def __init__(self, loop: "FakeLoop", coro):
        self.loop = loop
        self.coro = coro
        self.done = False
        self.exception: BaseException | None = None
        self.result: Any = None
        loop.call_soon(self._step)

    def _step(self, *_: Any) -> None:
        if self.done:
            return
        try:
            awaited = self.coro.send(None)
        except StopIteration as stop:
            self.done, self.result = True, stop.value
            return
        except BaseException as exc:  # noqa: BLE001 - kept for the test to look at
            self.done, self.exception = True, exc
            return
        if awaited is None:  # a bare yield (asyncio.sleep(0)): go on next round
            self.loop.call_soon(self._step)
            return
        awaited._asyncio_future_blocking = False
        awaited.add_done_callback(self._step)

    def cancel(self) -> bool:
        if self.done:
            return False
        self.done = True
        self.coro.close()
        return True


class FakeLoop(asyncio.AbstractEventLoop):
    """A loop that only runs when told to: :meth:`run_ready` and :meth:`advance`."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.ready: deque[FakeHandle] = deque()
        self.timers: list[FakeHandle] = []
        self.tasks: list[FakeTask] = []
        self._closed = False

    # what the gateway calls
    def time(self) -> float:
        return self.now

    def call_soon(self, callback, *args, context=None) -> FakeHandle:
        h = FakeHandle(self.now, callback, args)
        self.ready.append(h)
        return h

    def call_soon_threadsafe(self, callback, *args, context=None) -> FakeHandle:
        return self.call_soon(callback, *args)

    def call_at(self, when, callback, *args, context=None) -> FakeHandle:
        h = FakeHandle(when, callback, args)
        self.timers.append(h)
        return h

    def call_later(self, delay, callback, *args, context=None) -> FakeHandle:
        return self.call_at(self.now + delay, callback, *args)

    def create_task(self, coro, *, name=None, context=None) -> FakeTask:
        task = FakeTask(self, coro)
        self.tasks.append(task)
        return task

    def create_future(self) -> asyncio.Future:
        return asyncio.Future(loop=self)

    def get_debug(self) -> bool:
        return False

    def is_closed(self) -> bool:
        return self._closed

    def is_running(self) -> bool:
        return False

    def close(self) -> None:
        self._closed = True

    # what tests call
    def run_ready(self, limit: int = 100_000) -> int:
        """Run the callbacks that are ready (and those they make ready); returns how many ran."""
        n = 0
        while self.ready and n < limit:
            h = self.ready.popleft()
            if not h.cancelled:
                h.callback(*h.args)
                n += 1
        for t in self.tasks:
            if t.exception is not None:
                raise t.exception
        return n

    def advance(self, seconds: float) -> int:
        """Move the clock, make the timers due by then ready, run them."""
        self.now += seconds
        due = sorted((h for h in self.timers if h.when <= self.now), key=lambda h: h.when)
        self.timers = [h for h in self.timers if h.when > self.now]
        self.ready.extend(due)
        return self.run_ready()


# -- engines ------------------------------------------------------------------------------------

ENGINES = ("cython", "python")
MODULES = (
    "rigfast._ext", "rigfast.app", "rigfast.config", "rigfast.cloudevents", "rigfast.cluster.wire",
    "rigfast.hub.hub", "rigfast.net.protocol", "rigfast.net.sessions", "rigfast.proxy.gateway",
    "rigfast.subscriptions", "rigfast.wire.http1", "rigfast.errors",
)
_loaded: dict[str, dict[str, types.ModuleType]] = {}


def _ours(name: str) -> bool:
    return name == "rigfast" or name.startswith("rigfast.")


def engine_unavailable(engine: str) -> str:
    """Why ``engine`` cannot run here, or ""."""
    if engine == "cython":
        if os.environ.get("RIGFAST_NO_EXTENSIONS") == "1":
            return "compiled engine disabled by RIGFAST_NO_EXTENSIONS=1"
        import rigfast._ext

        if rigfast._ext.BUILD != "cython":
            return f"compiled engine not built (build: {rigfast._ext.BUILD}; python setup.py build_ext --inplace)"
    return ""


def on_both_engines(run: Callable[[str], Any]) -> dict[str, Any]:
    """``run(engine)`` for each of ``ENGINES`` (skips the test, with the reason, when one cannot run here)."""
    import pytest

    missing = [why for why in map(engine_unavailable, ENGINES) if why]
    if missing:
        pytest.skip(missing[0])
    return {engine: run(engine) for engine in ENGINES}


def _modules(engine: str) -> dict[str, types.ModuleType]:
    """Every rigfast module of ``engine``, imported once per session."""
    if engine in _loaded:
        return _loaded[engine]
    forced = os.environ.get("RIGFAST_NO_EXTENSIONS") == "1"
    if engine == "cython" or forced:  # the package as this process imports it
        for m in MODULES:
            importlib.import_module(m)
        mods = {k: v for k, v in sys.modules.items() if _ours(k)}
    else:  # a second copy of the package, on the plain-Python engine
        saved = {k: v for k, v in sys.modules.items() if _ours(k)}
        for k in saved:
            del sys.modules[k]
        os.environ["RIGFAST_NO_EXTENSIONS"] = "1"
        try:
            for m in MODULES:
                importlib.import_module(m)
            mods = {k: v for k, v in sys.modules.items() if _ours(k)}
        finally:
            os.environ.pop("RIGFAST_NO_EXTENSIONS", None)
            for k in [k for k in sys.modules if _ours(k)]:
                del sys.modules[k]
            sys.modules.update(saved)
    _loaded[engine] = mods
    return mods


@contextlib.contextmanager
def engine_modules(engine: str) -> Iterator[types.SimpleNamespace]:
    """The modules of ``engine`` as ``rf.app``, ``rf.protocol``, ... (``sys.modules`` points at them meanwhile,
    so imports made at run time get the same copy)."""
    mods = _modules(engine)
    saved = {k: v for k, v in sys.modules.items() if _ours(k)}
    sys.modules.update(mods)
    try:
        yield types.SimpleNamespace(
            engine=engine, ext=mods["rigfast._ext"], app=mods["rigfast.app"], config=mods["rigfast.config"],
            cloudevents=mods["rigfast.cloudevents"], wire=mods["rigfast.cluster.wire"], hub=mods["rigfast.hub.hub"],
            protocol=mods["rigfast.net.protocol"], sessions=mods["rigfast.net.sessions"],
            proxy=mods["rigfast.proxy.gateway"], subscriptions=mods["rigfast.subscriptions"],
            http1=mods["rigfast.wire.http1"], errors=mods["rigfast.errors"],
        )
    finally:
        for k in [k for k in sys.modules if _ours(k)]:
            del sys.modules[k]
        sys.modules.update(saved)


# -- a connection -------------------------------------------------------------------------------


class Client:
    """One connection to ``state`` (a ServerState): bytes in with :meth:`send`, bytes out in ``transport``."""

    def __init__(self, protocol_module: Any, state: Any):
        self.transport = FakeTransport()
        self.proto = protocol_module.HttpProtocol(state)
        self.transport.set_protocol(self.proto)
        self.proto.connection_made(self.transport)

    @property
    def current(self) -> Any:
        """The transport's protocol now: the HttpProtocol, or the StreamConn it handed a stream to."""
        return self.transport.get_protocol()

    def send(self, data: bytes) -> "Client":
        self.current.data_received(data)
        return self

    def read(self) -> bytes:
        return self.transport.take()

    @property
    def closed(self) -> bool:
        return self.transport.closed

    def lose(self) -> None:
        self.current.connection_lost(None)


def http_request(method: str, path: str, body: bytes = b"", headers: dict | None = None, keep_alive: bool = True) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "host: test"]
    for k, v in (headers or {}).items():
        lines.append(f"{k}: {v}")
    if body and not any(k.lower() in ("content-length", "transfer-encoding") for k in (headers or {})):
        lines.append(f"content-length: {len(body)}")
    if not keep_alive:
        lines.append("connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def parse_responses(data: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    """Split ``data`` into (status, headers, body) answers (content-length framed; the rest is one body)."""
    out = []
    while data:
        head, sep, rest = data.partition(b"\r\n\r\n")
        if not sep:
            raise AssertionError(f"incomplete response head: {data[:200]!r}")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        if "content-length" in headers:
            n = int(headers["content-length"])
            body, data = rest[:n], rest[n:]
        else:
            body, data = rest, b""
        out.append((status, headers, body))
    return out
