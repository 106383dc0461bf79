"""Protocol edges and hostile HTTP clients: pipelining without reading, the connection limit
(file descriptors kept for the internal API), RFC 9112 Host rules, Expect: 100-continue, and an
error pipelined behind a parked long-poll."""

from __future__ import annotations

import asyncio
import json
import select
import socket
import time

import httpx
import pytest

from tests.helpers import T, LongPoll, make_event, open_raw, publish_ok, raw_exchange, read_head, read_response, rss, uid, wait_eof

HEALTH = b"GET /_rig/health HTTP/1.1\r\nHost: x\r\n\r\n"


def run(coro):
    return asyncio.run(coro)


# ------------------------------------------------------------------ pipelining, never reading


def test_pipelining_client_that_never_reads_is_bounded(gateway_factory):
    """A client pipelines GET /_rig/health and never reads: the gateway stops reading once the answers
    fill the send buffer (so the client's sends block) instead of growing its memory; others are served;
    when the client reads, its answers come."""
    gw = gateway_factory(RIGFAST_SEND_BUFFER_BYTES=str(256 * 1024))
    rss0 = rss(gw) // 1024
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(gw.hostport)
    s.setblocking(False)
    block = HEALTH * 2000  # 78 KB per send
    budget = 64 << 20  # without the bound the gateway takes all of it (answers pile up in its memory)
    sent = 0
    try:
        while sent < budget:
            _, w, _ = select.select([], [s], [], 1.0)
            if not w:
                break  # the gateway stopped reading: the kernel buffers are full
            try:
                sent += s.send(block)
            except BlockingIOError:
                continue
        assert sent < 16 << 20, f"the gateway kept reading {sent} bytes of pipelined requests it cannot answer"
        grown = rss(gw) // 1024 - rss0
        assert grown < 48 * 1024, f"RSS grew by {grown} KiB"
        assert httpx.get(gw.inbound + "/_rig/health", timeout=T).status_code == 200  # others unaffected
        # now it reads: the answers come, all 200, and the gateway goes on reading and answering
        s.setblocking(True)
        s.settimeout(T)
        buf = bytearray()
        while buf.count(b"HTTP/1.1 200 OK\r\n") < 5000:
            chunk = s.recv(1 << 16)
            assert chunk, "connection closed"
            buf += chunk
        assert b"HTTP/1.1 4" not in buf and b"HTTP/1.1 5" not in buf
    finally:
        s.close()


def test_pipelined_burst_beyond_the_queue_bound_is_answered_in_order(gateway_factory):
    """More pipelined requests in one write than RIGFAST_MAX_PIPELINED: all answered, in order."""
    gw = gateway_factory(RIGFAST_MAX_PIPELINED="4")
    etype = uid("pipe")
    reqs = []
    for i in range(300):
        body = json.dumps(make_event(etype, {"i": i}, id=f"e{i}")).encode()
        reqs.append(b"POST /_rig/v1/events HTTP/1.1\r\nHost: x\r\ncontent-type: application/cloudevents+json\r\n"
                    b"content-length: %d\r\n\r\n%s" % (len(body), body))

    async def main():
        reader, writer = await open_raw(gw.hostport)
        try:
            writer.write(b"".join(reqs))
            await writer.drain()
            for i in range(300):
                resp = await read_response(reader)
                assert resp.status == 202, (i, resp)
                assert json.loads(resp.body)["id"] == f"e{i}"
        finally:
            writer.close()

    run(main())


# ------------------------------------------------------------------ connection limit


def test_connection_limit_keeps_descriptors_for_the_internal_api(gateway_factory):
    """With 300 open files and no RIGFAST_MAX_CONNECTIONS, 320 public connections: the ones beyond the
    derived limit get 503 with a message, the internal /health still answers, the metric counts them,
    and a freed slot admits a new connection."""
    gw = gateway_factory(nofile=300)
    socks: list[socket.socket] = []
    answers: list[bytes] = []
    try:
        for _ in range(320):
            c = socket.create_connection(gw.hostport, timeout=T)
            c.settimeout(T)
            c.sendall(HEALTH)
            answers.append(c.recv(4096))
            socks.append(c)
        ok = [a for a in answers if a.startswith(b"HTTP/1.1 200")]
        refused = [a for a in answers if a.startswith(b"HTTP/1.1 503")]
        assert len(ok) + len(refused) == 320, [a[:40] for a in answers if a[:12] not in (b"HTTP/1.1 200", b"HTTP/1.1 503")]
        assert refused, "no connection refused at the limit"
        assert len(ok) == 300 - 128  # the open-file limit minus the reserve
        assert b"RIGFAST_MAX_CONNECTIONS" in refused[0] and b"connection: close" in refused[0]
        r = httpx.get(gw.api + "/health", timeout=T)
        assert r.status_code == 200 and r.text.strip() == "OK"
        m = httpx.get(gw.api + "/metrics", timeout=T).text
        assert f'rig_connections_refused_total{{reason="max_connections"' in m
        line = [x for x in m.splitlines() if x.startswith("rig_connections_refused_total{")][0]
        assert float(line.rsplit(" ", 1)[1]) == len(refused)
        # free one admitted connection: the next one is admitted
        victim = socks[[i for i, a in enumerate(answers) if a.startswith(b"HTTP/1.1 200")][0]]
        victim.close()

        def admitted() -> bool:
            c = socket.create_connection(gw.hostport, timeout=T)
            c.settimeout(T)
            try:
                c.sendall(HEALTH)
                return c.recv(4096).startswith(b"HTTP/1.1 200")
            finally:
                c.close()

        deadline = time.monotonic() + T
        while not admitted():
            assert time.monotonic() < deadline, "a freed slot was never reused"
    finally:
        for c in socks:
            c.close()


def test_max_connections_setting(gateway_factory):
    """RIGFAST_MAX_CONNECTIONS=5: five idle SSE/HTTP connections are held, the sixth gets 503."""
    gw = gateway_factory(RIGFAST_MAX_CONNECTIONS="5")

    async def main():
        conns = [await open_raw(gw.hostport) for _ in range(5)]
        try:
            for _, w in conns:
                w.write(HEALTH)
            for r, _ in conns:
                assert (await read_response(r)).status == 200
            resp = await raw_exchange(gw.hostport, HEALTH)
            assert resp.status == 503 and "RIGFAST_MAX_CONNECTIONS=5" in resp.text
            assert resp.header("retry-after") == "1"
        finally:
            for _, w in conns:
                w.close()

    run(main())
    assert httpx.get(gw.api + "/health", timeout=T).status_code == 200


# ------------------------------------------------------------------ Host (RFC 9112 3.2)


@pytest.mark.parametrize(
    "request_bytes, status",
    [
        (b"GET /_rig/health HTTP/1.1\r\n\r\n", 400),
        (b"GET /_rig/health HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
        (b"GET /_rig/health HTTP/1.0\r\nHost: a\r\nhost: a\r\n\r\n", 400),
        (b"GET /_rig/health HTTP/1.0\r\n\r\n", 200),
        (b"GET /_rig/health HTTP/1.1\r\nhOsT: a\r\n\r\n", 200),
    ],
    ids=["1.1-no-host", "1.1-two-hosts", "1.0-two-hosts", "1.0-no-host", "1.1-one-host"],
)
def test_host_header_rules(gateway, request_bytes, status):
    """HTTP/1.1 without Host, or any request with two Host fields: 400 and close; otherwise served."""

    async def main():
        reader, writer = await open_raw(gateway.hostport)
        try:
            writer.write(request_bytes)
            await writer.drain()
            resp = await read_response(reader)
            assert resp.status == status, resp
            if status == 400:
                assert "Host" in resp.text
                assert await wait_eof(reader)
        finally:
            writer.close()

    run(main())


def test_host_rules_on_internal_port(gateway):
    """The internal API follows the same rule."""
    resp = run(raw_exchange(gateway.api_hostport, b"GET /health HTTP/1.1\r\n\r\n"))
    assert resp.status == 400


# ------------------------------------------------------------------ Expect: 100-continue


def test_expect_100_continue_answered_before_the_body(gateway):
    """Expect: 100-continue gets "100 Continue" before the client sends the body, then the final answer."""
    ev = json.dumps(make_event(uid("cont"), {"x": 1})).encode()

    async def main():
        reader, writer = await open_raw(gateway.hostport)
        try:
            writer.write(b"POST /_rig/v1/events HTTP/1.1\r\nHost: x\r\ncontent-type: application/cloudevents+json\r\n"
                         b"Expect: 100-continue\r\ncontent-length: %d\r\n\r\n" % len(ev))
            await writer.drain()
            interim = await read_head(reader)
            assert interim.status == 100, interim
            writer.write(ev)
            await writer.drain()
            resp = await read_response(reader)
            assert resp.status == 202, resp
            assert json.loads(resp.body) == json.loads(ev)
        finally:
            writer.close()

    run(main())


def test_expect_100_continue_refused_when_too_large(gateway_factory):
    """A body announced over the limit: 413 straight away, no 100 Continue; an unknown expectation: 417."""
    gw = gateway_factory(RIGFAST_MAX_BODY_BYTES="1000")

    async def main():
        resp = await raw_exchange(gw.hostport, b"POST /_rig/v1/events HTTP/1.1\r\nHost: x\r\n"
                                  b"Expect: 100-continue\r\ncontent-length: 5000\r\n\r\n")
        assert resp.status == 413, resp
        resp = await raw_exchange(gw.hostport, b"POST /_rig/v1/events HTTP/1.1\r\nHost: x\r\n"
                                  b"Expect: teapot\r\ncontent-length: 5\r\n\r\n")
        assert resp.status == 417, resp

    run(main())


def test_expect_100_continue_with_httpx_style_client(gateway):
    """curl-like clients that send Expect on a POST get their event accepted."""
    ev = make_event(uid("cont2"), {"x": 2})
    r = httpx.post(gateway.inbound + "/_rig/v1/events", json=ev,
                   headers={"expect": "100-continue", "content-type": "application/cloudevents+json"}, timeout=T)
    assert r.status_code == 202, r.text


# ------------------------------------------------------------------ garbage after a parked long-poll


def test_garbage_pipelined_after_parked_longpoll_keeps_the_longpoll_answer(gateway):
    """A parked long-poll with a malformed request pipelined after it: the long-poll is answered first
    (with its event), then 400, then the connection closes."""
    etype = uid("lpg")
    lp = LongPoll(gateway.inbound, [{"eventType": etype}])
    try:
        assert lp.poll().status_code == 200  # creates the session (cookie)
        lp.events()  # the greeting events
        cookie = "; ".join(f"{k}={v}" for k, v in lp.cookies.items())

        async def main():
            reader, writer = await open_raw(gateway.hostport)
            try:
                writer.write(b"GET /_rig/v1/connection/longpolling HTTP/1.1\r\nHost: x\r\nCookie: %s\r\n\r\n"
                             b"\x01\x02 garbage \xff\r\n\r\n" % cookie.encode())
                await writer.drain()
                ev = make_event(etype, {"n": 1})
                # the poll is parked, the garbage waits behind it: nothing is answered yet
                await asyncio.get_running_loop().run_in_executor(None, lambda: publish_ok(gateway.inbound, ev))
                first = await read_response(reader)
                assert first.status == 200, first
                assert [e["id"] for e in json.loads(first.body)["events"]] == [ev["id"]]
                second = await read_response(reader)
                assert second.status == 400, second
                assert await wait_eof(reader)
            finally:
                writer.close()

        run(main())
    finally:
        lp.close()
