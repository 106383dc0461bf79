"""The HTTP/1.1 server itself, over raw sockets: keep-alive, pipelining, chunked bodies, limits, errors, scale."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import struct
import time

import httpx
import pytest

from tests.helpers import (
    T,
    RawSse,
    conn_count,
    make_event,
    open_raw,
    publish_ok,
    read_response,
    subs_query,
    uid,
    wait_conn_count,
    wait_eof,
)

TIGHT_BODY = 1000
TIGHT_REQ_TIMEOUT_S = 0.5
TIGHT_ORIGIN = "http://allowed.example"


@pytest.fixture(scope="module")
def tight_gateway():
    """A gateway with a small body limit, a short request timeout, a fixed CORS origin and fast heartbeats."""
    from tests.conftest import start_gateway

    gw = start_gateway(
        RIGFAST_MAX_BODY_BYTES=str(TIGHT_BODY),
        RIGFAST_REQUEST_TIMEOUT_S=str(TIGHT_REQ_TIMEOUT_S),
        RIGFAST_HEARTBEAT_INTERVAL_S="0.3",
        CORS=TIGHT_ORIGIN,
    )
    yield gw
    gw.stop()


def run(coro):
    return asyncio.run(coro)


def event_request(ev: dict, host="x", extra=b"") -> bytes:
    body = json.dumps(ev).encode()
    return (
        b"POST /_rig/v1/events HTTP/1.1\r\nHost: " + host.encode() + b"\r\n"
        b"Content-Type: application/cloudevents+json\r\n" + extra +
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )


HEALTH = b"GET /_rig/health HTTP/1.1\r\nHost: x\r\n\r\n"


# ------------------------------------------------------------------ keep-alive


def test_keep_alive_sequential_requests(gateway):
    """Several requests on one connection are each answered, the connection stays open."""

    async def main():
        reader, writer = await open_raw(gateway.hostport)
        try:
            for i in range(3):
                writer.write(HEALTH)
                await writer.drain()
                resp = await read_response(reader)
                assert resp.status == 200, (i, resp)
                assert resp.text.strip() == "OK"
                assert (resp.header("connection") or "").lower() != "close"
            ev = make_event(uid("ka"), {"i": 1})
            writer.write(event_request(ev))
            await writer.drain()
            resp = await read_response(reader)
            assert resp.status == 202, resp
            assert json.loads(resp.body)["id"] == ev["id"]
        finally:
            writer.close()

    run(main())


def test_pipelined_requests_answered_in_order(gateway):
    """Three requests written in one send are answered in order (200, 202, 404)."""
    ev = make_event(uid("pipe"), {"p": 1})

    async def main():
        reader, writer = await open_raw(gateway.hostport)
        try:
            writer.write(HEALTH + event_request(ev) + b"GET /no/such/path HTTP/1.1\r\nHost: x\r\n\r\n")
            await writer.drain()
            r1 = await read_response(reader)
            r2 = await read_response(reader)
            r3 = await read_response(reader)
            return r1, r2, r3
        finally:
            writer.close()

    r1, r2, r3 = run(main())
    assert [r1.status, r2.status, r3.status] == [200, 202, 404], (r1, r2, r3)
    assert r1.text.strip() == "OK"
    assert json.loads(r2.body)["id"] == ev["id"]


def test_connection_close_honoured(gateway):
    """A request with Connection: close is answered and the connection is then closed."""

    async def main():
        reader, writer = await open_raw(gateway.hostport)
        try:
            writer.write(b"GET /_rig/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            await writer.drain()
            resp = await read_response(reader)
            assert resp.status == 200
            assert await wait_eof(reader), "connection not closed after Connection: close"
        finally:
            writer.close()

    run(main())


def test_http_1_0_request(gateway):
    """An HTTP/1.0 request is answered."""

    async def main():
        reader, writer = await open_raw(gateway.hostport)
        try:
            writer.write(b"GET /_rig/health HTTP/1.0\r\n\r\n")
            await writer.drain()
            return await read_response(reader)
        finally:
            writer.close()

    resp = run(main())
    assert resp.status == 200 and resp.text.strip() == "OK"


def test_chunked_request_body(gateway):
    """POST /_rig/v1/events with a chunked body is accepted and the event delivered."""
    etype = uid("chunked")
    ev = make_event(etype, {"chunked": True, "pad": "z" * 300})
    body = json.dumps(ev).encode()
    pieces = [body[i:i + 97] for i in range(0, len(body), 97)]

    async def main():
        sse = await RawSse.connect(gateway.hostport, subs_query([{"eventType": etype}]))
        try:
            assert sse.head.status == 200
            assert (await sse.next_event()).event == "rig.connection.create"
            assert (await sse.next_event()).event == "rig.subscriptions_set"
            reader, writer = await open_raw(gateway.hostport)
            try:
                writer.write(b"POST /_rig/v1/events HTTP/1.1\r\nHost: x\r\n"
                             b"Content-Type: application/cloudevents+json\r\nTransfer-Encoding: chunked\r\n\r\n")
                for p in pieces:
                    writer.write(b"%x\r\n" % len(p) + p + b"\r\n")
                    await writer.drain()
                writer.write(b"0\r\n\r\n")
                await writer.drain()
                resp = await read_response(reader)
            finally:
                writer.close()
            assert resp.status == 202, resp
            assert json.loads(resp.body) == ev
            got = await sse.next_event()
            assert got.data == ev
        finally:
            sse.close()

    run(main())


# ---------------------------------------------------------------------- limits


def _one_request(gw, data: bytes, timeout=T):
    async def main():
        reader, writer = await open_raw(gw.hostport)
        try:
            writer.write(data)
            await writer.drain()
            return await read_response(reader, timeout)
        finally:
            writer.close()

    return run(main())


def _send_head_in_pieces(gw, data: bytes, under: int, piece: int = 1024):
    """Send the first `under` bytes (below the limit) in small pieces, then the rest in one write.

    Only the last write crosses the limit, so a gateway that answers and closes at once
    does not meet more data from us (which would turn its close into a reset).
    """

    async def main():
        reader, writer = await open_raw(gw.hostport)
        try:
            for i in range(0, under, piece):
                writer.write(data[i:min(i + piece, under)])
                await writer.drain()
            writer.write(data[under:])
            await writer.drain()
            return await read_response(reader)
        finally:
            writer.close()

    return run(main())


@pytest.mark.parametrize("split", [False, True], ids=["one-send", "in-pieces"])
def test_oversize_header_431(gateway, split):
    """A request head larger than RIGFAST_MAX_HEADER_BYTES (default 16384) answers 431, however it arrives."""
    req = b"GET /_rig/health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n"
    resp = _send_head_in_pieces(gateway, req, under=15 * 1024) if split else _one_request(gateway, req)
    assert resp.status == 431, resp
    assert "header" in resp.text.lower(), resp.text


def test_too_many_headers_431(gateway):
    """More than RIGFAST_MAX_HEADERS (default 100) header fields answers 431."""
    hdrs = b"".join(b"X-H-%d: v\r\n" % i for i in range(150))
    resp = _one_request(gateway, b"GET /_rig/health HTTP/1.1\r\nHost: x\r\n" + hdrs + b"\r\n")
    assert resp.status == 431, resp
    assert "header" in resp.text.lower(), resp.text


def test_headers_within_limits_accepted(gateway):
    """A request with 60 headers and an 8 KiB header value is served normally."""
    hdrs = b"".join(b"X-H-%d: v\r\n" % i for i in range(60)) + b"X-Big: " + b"b" * 8192 + b"\r\n"
    resp = _one_request(gateway, b"GET /_rig/health HTTP/1.1\r\nHost: x\r\n" + hdrs + b"\r\n")
    assert resp.status == 200, resp


def test_oversize_body_declared_413(tight_gateway):
    """A Content-Length over RIGFAST_MAX_BODY_BYTES answers 413 without waiting for the body."""
    req = (b"POST /_rig/v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/cloudevents+json\r\n"
           b"Content-Length: %d\r\n\r\n" % (TIGHT_BODY * 5))
    resp = _one_request(tight_gateway, req)
    assert resp.status == 413, resp


def test_oversize_body_default_limit_413(gateway):
    """With the default limit (1 MiB), a declared 2 MiB body answers 413."""
    req = (b"POST /_rig/v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/cloudevents+json\r\n"
           b"Content-Length: %d\r\n\r\n" % (2 << 20))
    resp = _one_request(gateway, req)
    assert resp.status == 413, resp


def test_oversize_chunked_body_413(tight_gateway):
    """A chunked body growing past RIGFAST_MAX_BODY_BYTES answers 413."""
    chunk = b"x" * 500
    req = (b"POST /_rig/v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/cloudevents+json\r\n"
           b"Transfer-Encoding: chunked\r\n\r\n" + (b"%x\r\n" % len(chunk) + chunk + b"\r\n") * 6 + b"0\r\n\r\n")
    resp = _one_request(tight_gateway, req)
    assert resp.status == 413, resp


def test_body_at_limit_accepted(tight_gateway):
    """A body of exactly RIGFAST_MAX_BODY_BYTES bytes is accepted."""
    ev = make_event(uid("limit"), {"pad": ""})
    base = len(json.dumps(ev).encode())
    ev["data"]["pad"] = "p" * (TIGHT_BODY - base)
    body = json.dumps(ev).encode()
    assert len(body) == TIGHT_BODY
    r = httpx.post(tight_gateway.inbound + "/_rig/v1/events", content=body,
                   headers={"content-type": "application/cloudevents+json"}, timeout=T)
    assert r.status_code == 202, (r.status_code, r.text)


@pytest.mark.parametrize(
    "partial",
    [
        b"GET /_rig/health HTTP/1.1\r\nHost: x\r\n",
        b"POST /_rig/v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/cloudevents+json\r\n"
        b"Content-Length: 100\r\n\r\n{\"specversion\":",
    ],
    ids=["incomplete-head", "incomplete-body"],
)
def test_incomplete_request_408(tight_gateway, partial):
    """A request not complete within RIGFAST_REQUEST_TIMEOUT_S answers 408 and the connection closes."""

    async def main():
        reader, writer = await open_raw(tight_gateway.hostport)
        try:
            t0 = time.monotonic()
            writer.write(partial)
            await writer.drain()
            resp = await read_response(reader, T)
            elapsed = time.monotonic() - t0
            closed = await wait_eof(reader, T)
            return resp, elapsed, closed
        finally:
            writer.close()

    resp, elapsed, closed = run(main())
    assert resp.status == 408, resp
    assert elapsed >= TIGHT_REQ_TIMEOUT_S * 0.8, elapsed
    assert closed


def test_request_timeout_does_not_cut_streams(tight_gateway):
    """An SSE stream lives past RIGFAST_REQUEST_TIMEOUT_S: heartbeats keep coming, events still arrive."""
    etype = uid("long")

    async def main():
        sse = await RawSse.connect(tight_gateway.hostport, subs_query([{"eventType": etype}]))
        try:
            assert sse.head.status == 200
            await sse.next_event()
            await sse.next_event()
            t0 = time.monotonic()
            beats = 0
            # read heartbeats for at least 3 request timeouts
            while time.monotonic() - t0 < 3 * TIGHT_REQ_TIMEOUT_S:
                item = await sse.next_item(T)
                assert item.kind == "comment", item
                beats += 1
            assert beats >= 2
            ev = make_event(etype, {"late": True})
            await asyncio.to_thread(publish_ok, tight_gateway.inbound, ev)
            assert (await sse.next_event()).data == ev
        finally:
            sse.close()

    run(main())


# ---------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "garbage",
    [b"\x00\x01\x02garbage\r\n\r\n", b"HELLO WORLD\r\n\r\n", b"GET / HTTP/9.9\r\n\r\n",
     b"GET /_rig/health HTTP/1.1\r\nBad Header Line\r\n\r\n"],
    ids=["binary", "no-version", "bad-version", "bad-header"],
)
def test_garbage_request_400(gateway, garbage):
    """A malformed request answers 400 and the connection is closed."""

    async def main():
        reader, writer = await open_raw(gateway.hostport)
        try:
            writer.write(garbage)
            await writer.drain()
            resp = await read_response(reader)
            closed = await wait_eof(reader)
            return resp, closed
        finally:
            writer.close()

    resp, closed = run(main())
    expected = {400, 505} if b"9.9" in garbage else {400}
    assert resp.status in expected, resp
    assert closed


@pytest.mark.parametrize("where,path", [("inbound", "/no/such/path"), ("inbound", "/_rig/v1/nothing"),
                                        ("api", "/no/such/path")])
def test_unknown_path_404(gateway, where, path):
    """A path no route takes answers 404."""
    base = gateway.inbound if where == "inbound" else gateway.api
    r = httpx.get(base + path, timeout=T)
    assert r.status_code == 404, (r.status_code, r.text)


def test_gateway_survives_bad_clients(gateway):
    """After garbage, aborted and half-sent requests the gateway still serves requests."""

    async def main():
        bad = (b"\xff" * 100, b"GET /_rig/v1/connection/sse HTTP/1.1\r\nHo", b"POST /_rig/v1/events HTTP/1.1\r\n")
        for data in bad:
            _, writer = await open_raw(gateway.hostport)
            writer.write(data)
            await writer.drain()
            writer.transport.abort()

    run(main())
    assert httpx.get(gateway.inbound + "/_rig/health", timeout=T).text.strip() == "OK"


# ------------------------------------------------------------------------ CORS


def test_cors_header_on_sse_default(gateway):
    """SSE responses carry access-control-allow-origin: * by default."""

    async def main():
        sse = await RawSse.connect(gateway.hostport, extra_headers="Origin: http://somewhere.example\r\n")
        sse.close()
        return sse.head

    head = run(main())
    assert head.status == 200
    assert head.header("access-control-allow-origin") == "*"


def test_cors_header_on_sse_configured(tight_gateway):
    """With CORS set, SSE responses carry that origin in access-control-allow-origin."""

    async def main():
        sse = await RawSse.connect(tight_gateway.hostport, extra_headers=f"Origin: {TIGHT_ORIGIN}\r\n")
        sse.close()
        return sse.head

    head = run(main())
    assert head.status == 200
    assert head.header("access-control-allow-origin") == TIGHT_ORIGIN


# ------------------------------------------------------------------- lifecycle


def test_sse_client_disconnect_leaves_nothing(gateway_factory):
    """A client that vanishes mid-stream (RST) is removed: the SSE count returns to 0, events still flow."""
    gateway = gateway_factory()
    etype = uid("gone")

    async def main():
        sse = await RawSse.connect(gateway.hostport, subs_query([{"eventType": etype}]))
        assert sse.head.status == 200
        await sse.next_event()
        await sse.next_event()
        await asyncio.to_thread(wait_conn_count, gateway.api, "sse", 1)
        sock = sse.writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sse.writer.transport.abort()

    run(main())
    wait_conn_count(gateway.api, "sse", 0)
    publish_ok(gateway.inbound, make_event(etype, {"after": True}))
    assert httpx.get(gateway.inbound + "/_rig/health", timeout=T).status_code == 200


def test_sse_client_close_leaves_nothing(gateway_factory):
    """A client that closes its SSE socket normally (FIN) is removed: the SSE count returns to 0."""
    gateway = gateway_factory()

    async def main():
        sse = await RawSse.connect(gateway.hostport)
        await sse.next_event()
        await asyncio.to_thread(wait_conn_count, gateway.api, "sse", 1)
        sse.writer.close()
        await sse.writer.wait_closed()

    run(main())
    wait_conn_count(gateway.api, "sse", 0)


def test_ws_client_vanish_leaves_nothing(gateway_factory):
    """A WebSocket client dropping TCP without a close frame is removed: the WS count returns to 0."""
    from websockets.asyncio.client import connect

    gateway = gateway_factory()

    async def main():
        ws = await connect(f"{gateway.ws}/_rig/v1/connection/ws", open_timeout=T, ping_interval=None)
        await asyncio.wait_for(ws.recv(), T)
        await asyncio.to_thread(wait_conn_count, gateway.api, "ws", 1)
        ws.transport.abort()

    run(main())
    wait_conn_count(gateway.api, "ws", 0)


@pytest.mark.slow
def test_500_concurrent_sse_receive_one_broadcast(gateway_factory):
    """500 concurrent SSE connections all receive one broadcast event, and all are cleaned up after."""
    gateway = gateway_factory()
    n = 500
    etype = uid("bcast")
    query = subs_query([{"eventType": etype}])

    async def main():
        sem = asyncio.Semaphore(100)

        async def one():
            async with sem:
                sse = await RawSse.connect(gateway.hostport, query, timeout=2 * T)
                assert sse.head.status == 200
                await sse.next_event(2 * T)
                await sse.next_event(2 * T)
                return sse

        t0 = time.monotonic()
        streams = await asyncio.wait_for(asyncio.gather(*(one() for _ in range(n))), 4 * T)
        try:
            connected = time.monotonic() - t0
            assert await asyncio.to_thread(conn_count, gateway.api, "sse") == n
            ev = make_event(etype, {"broadcast": True})
            await asyncio.to_thread(publish_ok, gateway.inbound, ev)
            got = await asyncio.wait_for(asyncio.gather(*(s.next_event(2 * T) for s in streams)), 3 * T)
            assert all(g.data == ev for g in got)
            return connected
        finally:
            for s in streams:
                s.writer.transport.abort()

    run(main())
    wait_conn_count(gateway.api, "sse", 0, timeout=2 * T)


def test_sigterm_stops_cleanly_with_open_connections(gateway_factory):
    """SIGTERM with open SSE and WebSocket connections stops the gateway with exit code 0."""
    gw = gateway_factory()

    async def main():
        from websockets.asyncio.client import connect

        sse = await RawSse.connect(gw.hostport)
        await sse.next_event()
        ws = await connect(f"{gw.ws}/_rig/v1/connection/ws", open_timeout=T, ping_interval=None)
        await asyncio.wait_for(ws.recv(), T)
        gw.proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(gw.proc.wait, 2 * T)
        sse.close()
        ws.transport.abort()
        return code

    assert run(main()) == 0, gw.log()
