"""Black-box helpers for talking to a running gateway: SSE readers, publishing, raw HTTP.

Every network read here has a timeout; waits are "until this happens, or fail
after a deadline", never a fixed sleep.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import struct
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator
from urllib.parse import quote

import httpx

# One time unit; every timeout in the suite is a multiple of it.
T = float(os.environ.get("RIGFAST_TEST_TIMEOUT_SCALE", "1")) * 5.0

WS_ONE_WAY_REASON = "This WebSocket endpoint cannot be used for two-way communication."


def ws_client_frame(opcode: int, payload: bytes = b"", fin: bool = True, masked: bool = True, rsv: int = 0,
                    length: int | None = None, key: bytes = b"\x01\x02\x03\x04") -> bytes:
    """A client WebSocket frame (RFC 6455 5.2), masked with ``key`` unless ``masked`` is off;
    ``length`` overrides the declared payload length."""
    n = len(payload) if length is None else length
    head = bytes(((0x80 if fin else 0) | (rsv << 4) | opcode,))
    mbit = 0x80 if masked else 0
    if n < 126:
        head += bytes((mbit | n,))
    elif n < 65536:
        head += bytes((mbit | 126,)) + struct.pack("!H", n)
    else:
        head += bytes((mbit | 127,)) + struct.pack("!Q", n)
    if masked:
        return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return head + payload


def free_port() -> int:
    """A loopback TCP port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_process(proc, timeout: float = T) -> int:
    """SIGTERM, wait; SIGKILL if it does not exit in time. Returns the exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)
    return proc.returncode


def uid(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def make_event(etype: str | None = None, data: Any = None, **attrs: Any) -> dict:
    """A CloudEvents 1.0 event object (structured mode)."""
    ev = {
        "specversion": "1.0",
        "type": etype or uid("type"),
        "source": "/rigfast/tests",
        "id": uid("ev"),
    }
    if data is not None:
        ev["data"] = data
    ev.update(attrs)
    return ev


def subs_param(subscriptions: list) -> str:
    """The `subscriptions` query parameter value (JSON, to be URL-encoded by the client)."""
    return json.dumps(subscriptions)


def subs_query(subscriptions: list) -> str:
    return "subscriptions=" + quote(json.dumps(subscriptions), safe="")


def publish(base: str, event: dict, mode: str = "structured", path: str = "/_rig/v1/events",
            content_type: str | None = None, headers: dict | None = None) -> httpx.Response:
    """POST an event in structured or binary mode; returns the response (not checked)."""
    hdrs = dict(headers or {})
    if mode == "structured":
        body = json.dumps(event).encode()
        hdrs.setdefault("content-type", content_type or "application/cloudevents+json")
    elif mode == "binary":
        for k, v in event.items():
            if k == "data":
                continue
            hdrs[f"ce-{k}"] = v if isinstance(v, str) else json.dumps(v)
        body = json.dumps(event["data"]).encode() if "data" in event else b""
        hdrs.setdefault("content-type", content_type or "application/json")
    else:
        raise ValueError(mode)
    return httpx.post(base + path, content=body, headers=hdrs, timeout=T)


def publish_ok(base: str, event: dict, **kw: Any) -> dict:
    r = publish(base, event, **kw)
    assert r.status_code == 202, (r.status_code, r.text)
    return r.json()


# --------------------------------------------------------------------- health


def health(api_base: str) -> dict:
    r = httpx.get(api_base + "/health?detailed", timeout=T)
    assert r.status_code == 200, (r.status_code, r.text)
    return r.json()


def conn_count(api_base: str, kind: str) -> int:
    return int(health(api_base)["connections"][kind])


def wait_until(pred: Callable[[], Any], timeout: float = T, interval: float = 0.02, what: str = "condition") -> Any:
    """Poll `pred` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = pred()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.1f}s waiting for {what}")
        time.sleep(interval)


def rss(gw) -> int:
    """The resident memory of a gateway's process, in bytes (VmRSS from /proc)."""
    with open(f"/proc/{gw.proc.pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def wait_conn_count(api_base: str, kind: str, expected: int, timeout: float = T) -> None:
    seen = []

    def check() -> bool:
        n = conn_count(api_base, kind)
        seen.append(n)
        return n == expected

    try:
        wait_until(check, timeout, interval=0.05, what=f"{kind} connections == {expected}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last counts seen: {seen[-5:]}") from None


# ------------------------------------------------------------------------ SSE


@dataclass
class SseItem:
    """One dispatched SSE block: an event (with `data` parsed as JSON) or a comment."""

    kind: str  # "event" | "comment"
    event: str | None = None
    id: str | None = None
    data: Any = None
    raw_data: str | None = None
    comment: str | None = None
    fields: dict = field(default_factory=dict)


class SseParser:
    """Incremental text/event-stream parser: feed lines, get items."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._event = None
        self._id = None
        self._data: list[str] = []
        self._fields: dict = {}
        self._any = False

    def feed_line(self, line: str) -> SseItem | None:
        if line == "":
            if not self._any:
                return None
            raw = "\n".join(self._data) if self._data else None
            try:
                data = json.loads(raw) if raw is not None else None
            except ValueError:
                data = None
            item = SseItem("event", self._event or "message", self._id, data, raw, fields=self._fields)
            self._reset()
            return item
        if line.startswith(":"):
            return SseItem("comment", comment=line[1:].strip())
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        self._any = True
        self._fields.setdefault(name, []).append(value)
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id":
            self._id = value
        return None


class SseStream:
    """An SSE connection over httpx streaming; every read is bounded by the read timeout."""

    def __init__(self, url: str, params: dict | None = None, headers: dict | None = None,
                 read_timeout: float = T) -> None:
        self._client = httpx.Client(timeout=httpx.Timeout(read_timeout))
        self._cm = self._client.stream("GET", url, params=params, headers=headers)
        try:
            self.response = self._cm.__enter__()
        except BaseException:
            self._client.close()
            raise
        self._lines: Iterator[str] | None = None
        self._parser = SseParser()
        self.closed = False

    @property
    def status_code(self) -> int:
        return self.response.status_code

    def body_text(self) -> str:
        self.response.read()
        return self.response.text

    def next_item(self, timeout: float = T) -> SseItem:
        """The next event or comment; fails if none within `timeout` (plus at most one read timeout)."""
        if self._lines is None:
            self._lines = self.response.iter_lines()
        deadline = time.monotonic() + timeout
        while True:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no SSE item within {timeout:.1f}s")
            try:
                line = next(self._lines)
            except StopIteration:
                raise EOFError("SSE stream ended") from None
            item = self._parser.feed_line(line)
            if item is not None:
                return item

    def next_event(self, timeout: float = T) -> SseItem:
        """The next event, skipping comments."""
        deadline = time.monotonic() + timeout
        while True:
            item = self.next_item(max(0.0, deadline - time.monotonic()))
            if item.kind == "event":
                return item

    def expect_handshake(self) -> tuple[str, list]:
        """Read rig.connection.create and rig.subscriptions_set; return (token, subscriptions)."""
        assert self.status_code == 200, (self.status_code, self.body_text())
        first = self.next_event()
        assert first.event == "rig.connection.create", first
        token = first.data["data"]["connection_token"]
        second = self.next_event()
        assert second.event == "rig.subscriptions_set", second
        return token, second.data["data"]

    def events_until(self, pred: Callable[[SseItem], bool], timeout: float = T, limit: int = 1000) -> list[SseItem]:
        """Events read up to and including the first one satisfying `pred`."""
        out = []
        deadline = time.monotonic() + timeout
        for _ in range(limit):
            ev = self.next_event(max(0.0, deadline - time.monotonic()))
            out.append(ev)
            if pred(ev):
                return out
        raise AssertionError(f"no matching event among {limit}")

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            self._cm.__exit__(None, None, None)
        finally:
            self._client.close()

    def __enter__(self) -> "SseStream":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def open_sse(inbound: str, subscriptions: list | None = None, jwt: str | None = None,
             headers: dict | None = None, extra_params: dict | None = None) -> SseStream:
    params = {}
    if subscriptions is not None:
        params["subscriptions"] = json.dumps(subscriptions)
    if jwt is not None:
        params["jwt"] = jwt
    if extra_params:
        params.update(extra_params)
    return SseStream(inbound + "/_rig/v1/connection/sse", params=params or None, headers=headers)


# ------------------------------------------------------------- raw HTTP (asyncio)


@dataclass
class RawResponse:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes = b""

    def header(self, name: str) -> str | None:
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return None

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


async def read_head(reader: asyncio.StreamReader, timeout: float = T) -> RawResponse:
    """Read a response status line and headers."""
    raw = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
    lines = raw.decode("latin-1").split("\r\n")
    version, _, rest = lines[0].partition(" ")
    code, _, reason = rest.partition(" ")
    assert version.startswith("HTTP/1."), lines[0]
    headers = []
    for line in lines[1:]:
        if not line:
            continue
        k, _, v = line.partition(":")
        headers.append((k.strip(), v.strip()))
    return RawResponse(int(code), reason, headers)


async def read_chunk(reader: asyncio.StreamReader, timeout: float = T) -> bytes:
    """One chunk of a chunked body (b"" for the last chunk)."""
    size_line = await asyncio.wait_for(reader.readuntil(b"\r\n"), timeout)
    size = int(size_line.split(b";", 1)[0].strip(), 16)
    data = await asyncio.wait_for(reader.readexactly(size + 2), timeout)
    return data[:-2]


async def read_response(reader: asyncio.StreamReader, timeout: float = T, head_only: bool = False) -> RawResponse:
    """A complete response with its body (content-length, chunked, or until close)."""
    resp = await read_head(reader, timeout)
    if head_only or resp.status in (204, 304) or 100 <= resp.status < 200:
        return resp
    te = (resp.header("transfer-encoding") or "").lower()
    cl = resp.header("content-length")
    if "chunked" in te:
        parts = []
        while True:
            chunk = await read_chunk(reader, timeout)
            if not chunk:
                # trailers end with an empty line
                while (await asyncio.wait_for(reader.readuntil(b"\r\n"), timeout)) != b"\r\n":
                    pass
                break
            parts.append(chunk)
        resp.body = b"".join(parts)
    elif cl is not None:
        resp.body = await asyncio.wait_for(reader.readexactly(int(cl)), timeout)
    else:
        resp.body = await asyncio.wait_for(reader.read(), timeout)
    return resp


async def open_raw(hostport: tuple[str, int], timeout: float = T):
    return await asyncio.wait_for(asyncio.open_connection(*hostport), timeout)


async def raw_exchange(hostport: tuple[str, int], request: bytes, timeout: float = T) -> RawResponse:
    reader, writer = await open_raw(hostport, timeout)
    try:
        writer.write(request)
        await writer.drain()
        return await read_response(reader, timeout)
    finally:
        writer.close()


async def wait_eof(reader: asyncio.StreamReader, timeout: float = T) -> bool:
    """True when the peer closes the connection within `timeout` (data before EOF is discarded)."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        try:
            data = await asyncio.wait_for(reader.read(65536), left)
        except asyncio.TimeoutError:
            return False
        except ConnectionError:
            return True
        if not data:
            return True


class RawSse:
    """An SSE stream over a raw asyncio socket (handles chunked and close-delimited bodies)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: RawResponse):
        self.reader = reader
        self.writer = writer
        self.head = head
        self._chunked = "chunked" in (head.header("transfer-encoding") or "").lower()
        self._buf = b""
        self._parser = SseParser()
        self._items: list[SseItem] = []

    @classmethod
    async def connect(cls, hostport: tuple[str, int], query: str = "", extra_headers: str = "",
                      timeout: float = T) -> "RawSse":
        reader, writer = await open_raw(hostport, timeout)
        path = "/_rig/v1/connection/sse" + (("?" + query) if query else "")
        writer.write(
            f"GET {path} HTTP/1.1\r\nHost: {hostport[0]}:{hostport[1]}\r\n"
            f"Accept: text/event-stream\r\n{extra_headers}\r\n".encode()
        )
        await writer.drain()
        head = await read_head(reader, timeout)
        return cls(reader, writer, head)

    async def _more(self, timeout: float) -> None:
        if self._chunked:
            chunk = await read_chunk(self.reader, timeout)
            if not chunk:
                raise EOFError("SSE stream ended")
        else:
            chunk = await asyncio.wait_for(self.reader.read(65536), timeout)
            if not chunk:
                raise EOFError("SSE stream ended")
        self._buf += chunk
        while True:
            nl = self._buf.find(b"\n")
            if nl < 0:
                break
            line, self._buf = self._buf[:nl], self._buf[nl + 1:]
            item = self._parser.feed_line(line.rstrip(b"\r").decode("utf-8"))
            if item is not None:
                self._items.append(item)

    async def next_item(self, timeout: float = T) -> SseItem:
        """The next event or comment."""
        deadline = time.monotonic() + timeout
        while not self._items:
            left = deadline - time.monotonic()
            if left <= 0:
                raise asyncio.TimeoutError("no SSE item in time")
            await self._more(left)
        return self._items.pop(0)

    async def next_event(self, timeout: float = T) -> SseItem:
        """The next event, skipping comments."""
        deadline = time.monotonic() + timeout
        while True:
            item = await self.next_item(max(0.0, deadline - time.monotonic()))
            if item.kind == "event":
                return item

    def close(self) -> None:
        self.writer.close()


# ------------------------------------------------------------- long-polling


class LongPoll:
    """A long-polling client that keeps its own cookies (connection_token, last_event_id)."""

    def __init__(self, inbound: str, subscriptions: list | None = None, timeout: float = T,
                 headers: dict | None = None) -> None:
        self.url = inbound + "/_rig/v1/connection/longpolling"
        self.subscriptions = subscriptions
        self.cookies: dict[str, str] = {}
        self.timeout = timeout
        self.headers = dict(headers or {})
        self.client = httpx.Client(timeout=httpx.Timeout(timeout))

    def poll(self) -> httpx.Response:
        params = {}
        if self.subscriptions is not None:
            params["subscriptions"] = json.dumps(self.subscriptions)
        hdrs = dict(self.headers)
        if self.cookies:
            hdrs["cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        r = self.client.get(self.url, params=params or None, headers=hdrs)
        for raw in r.headers.get_list("set-cookie"):
            pair = raw.split(";", 1)[0]
            name, _, value = pair.partition("=")
            self.cookies[name.strip()] = value.strip()
        return r

    @property
    def token(self) -> str:
        from urllib.parse import unquote

        return unquote(self.cookies["connection_token"])

    def events(self) -> list:
        r = self.poll()
        assert r.status_code == 200, (r.status_code, r.text)
        body = r.json()
        assert isinstance(body, dict), body
        return body["events"]

    def collect_until(self, pred: Callable[[dict], bool], timeout: float = T, limit: int = 50) -> list:
        """Poll until an event satisfying `pred` arrives; return every event seen."""
        out: list = []
        deadline = time.monotonic() + timeout
        for _ in range(limit):
            evs = self.events()
            out.extend(evs)
            if any(pred(e) for e in evs):
                return out
            if time.monotonic() > deadline:
                break
        raise AssertionError(f"no matching long-polling event; got {[e.get('type') for e in out]}")

    def close(self) -> None:
        self.client.close()


# --------------------------------------------------------------------- browser pages


class PageServer:
    """A loopback HTTP server for browser test pages (another origin than the gateway).

    ``html`` is served at ``/`` (and ``/index.html``); ``files`` maps more paths to
    ``(body, content type)``."""

    def __init__(self, html: bytes = b"", files: dict[str, tuple[bytes, str]] | None = None):
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.html = html
        self.files = dict(files or {})
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                path = self.path.split("?")[0]
                body, ctype = (outer.html, "text/html; charset=utf-8") if path in ("/", "/index.html") else outer.files.get(path, (None, ""))
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("content-type", ctype)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.origin = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(T)
