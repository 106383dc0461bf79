"""HttpProtocol on a fake transport and loop: pipelining, limits, timeouts, chunked bodies, upgrade."""

from __future__ import annotations

import base64
import hashlib
import json
from urllib.parse import quote

import pytest

from tests.inprocess.harness import Client, http_request, parse_responses

EVENT = {"specversion": "1.0", "type": "greeting", "source": "t", "id": "e1", "data": {"name": "ann"}}


def post_event(event=EVENT, **kw) -> bytes:
    return http_request("POST", "/_rig/v1/events", json.dumps(event).encode(),
                        {"content-type": "application/cloudevents+json"}, **kw)


def test_pipelined_requests_are_answered_in_order(make_gateway):
    """Three requests in one segment: three answers, in request order, on one kept-alive connection."""
    g = make_gateway()
    c = g.client()
    e2 = dict(EVENT, id="e2")
    c.send(http_request("GET", "/_rig/health") + post_event() + post_event(e2))
    answers = parse_responses(c.read())
    assert [a[0] for a in answers] == [200, 202, 202]
    assert answers[0][2] == b"OK"
    assert [json.loads(a[2])["id"] for a in answers[1:]] == ["e1", "e2"]
    assert not c.closed


def count_writes(c: Client) -> list[bytes]:
    """The transport's writes from now on, one item each."""
    writes: list[bytes] = []
    write = c.transport.write

    def counted(data) -> None:
        writes.append(bytes(data))
        write(data)

    c.transport.write = counted
    return writes


def test_the_answers_to_one_read_leave_in_one_write(make_gateway):
    """Pipelined requests that arrive in one read: one write (one system call) with every answer, in order."""
    g = make_gateway()
    c = g.client()
    writes = count_writes(c)
    c.send(http_request("GET", "/_rig/health") + post_event() + http_request("GET", "/_rig/health"))
    assert len(writes) == 1
    assert [a[0] for a in parse_responses(c.read())] == [200, 202, 200]
    c.send(http_request("GET", "/_rig/health"))  # a later read: its own write
    assert len(writes) == 2


def test_answers_before_a_stream_leave_before_its_head(make_gateway):
    """A pipelined answer waiting in the batch goes out before the stream the next request opens."""
    g = make_gateway()
    c = g.client()
    c.send(http_request("GET", "/_rig/health") + http_request("GET", '/_rig/v1/connection/sse?subscriptions=[{"eventType":"greeting"}]'))
    g.settle()
    out = c.read()
    first, _, rest = out.partition(b"\r\n\r\nOK")  # the health answer's head and body
    assert first.startswith(b"HTTP/1.1 200 OK") and b"content-length: 2" in first
    assert rest.startswith(b"HTTP/1.1 200 OK") and b"text/event-stream" in rest and b"rig.connection.create" in rest


def test_connection_close_ends_after_the_answer(make_gateway):
    g = make_gateway()
    c = g.client()
    c.send(http_request("GET", "/_rig/health", keep_alive=False))
    assert parse_responses(c.read())[0][0] == 200
    assert c.closed


def test_request_split_byte_by_byte(make_gateway):
    g = make_gateway()
    c = g.client()
    for b in post_event():
        c.send(bytes([b]))
    answers = parse_responses(c.read())
    assert answers[0][0] == 202 and json.loads(answers[0][2])["id"] == "e1"


def test_chunked_body(make_gateway):
    """A chunked request body (split across segments, with an extension) is reassembled."""
    g = make_gateway()
    c = g.client()
    body = json.dumps(EVENT).encode()
    head = (b"POST /_rig/v1/events HTTP/1.1\r\nhost: t\r\ncontent-type: application/cloudevents+json\r\n"
            b"transfer-encoding: chunked\r\n\r\n")
    c.send(head + b"%x;ext=1\r\n%s\r\n" % (10, body[:10]))
    assert c.read() == b""  # nothing answered before the last chunk
    c.send(b"%x\r\n%s\r\n0\r\n\r\n" % (len(body) - 10, body[10:]))
    status, _, out = parse_responses(c.read())[0]
    assert status == 202 and json.loads(out) == EVENT


def mixed_stream() -> tuple[bytes, list[str]]:
    """Pipelined requests of every framing (no body, Content-Length, chunked with extensions and
    trailer fields, leading empty lines), and the event ids their 202 answers carry (None: a GET)."""
    body = json.dumps(dict(EVENT, id="c1")).encode()
    chunked = (b"POST /_rig/v1/events?x=%%3F HTTP/1.1\r\nhost: t\r\ncontent-type: application/cloudevents+json\r\n"
               b"transfer-encoding: chunked\r\n\r\n"
               b"%x;name=val\r\n%s\r\n00%X\r\n%s\r\n0\r\nx-trailer: 0\r\n\r\n"
               % (7, body[:7], len(body) - 7, body[7:]))
    bare = (b"POST /_rig/v1/events HTTP/1.1\r\nhost: t\r\ncontent-type: application/cloudevents+json\r\n"
            b"transfer-encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n" % (len(body), body.replace(b"c1", b"c2")))
    stream = (http_request("GET", "/_rig/health") + post_event(dict(EVENT, id="l1")) + chunked
              + b"\r\n" + http_request("GET", "/_rig/health?a=b%20c") + bare + post_event(dict(EVENT, id="l2")))
    return stream, [None, "l1", "c1", None, "c2", "l2"]


def check_mixed(answers, ids) -> None:
    assert [a[0] for a in answers] == [200 if i is None else 202 for i in ids]
    assert [json.loads(a[2])["id"] for a in answers if a[0] == 202] == [i for i in ids if i is not None]


@pytest.mark.parametrize("step", [None, 1, 7, 64])
def test_pipelined_requests_of_every_framing(make_gateway, step):
    """The heads are read from the bytes: each request's head is found after the one before's body
    (none, Content-Length, chunked with extensions and trailers), in one read or split anywhere."""
    g = make_gateway()
    c = g.client()
    stream, ids = mixed_stream()
    if step is None:
        c.send(stream)
    else:
        for i in range(0, len(stream), step):
            c.send(stream[i:i + step])
    check_mixed(parse_responses(c.read()), ids)
    assert not c.closed


def test_pipelined_requests_split_in_two_anywhere(make_gateway):
    g = make_gateway()
    stream, ids = mixed_stream()
    for cut in range(1, len(stream)):
        c = g.client()
        c.send(stream[:cut]).send(stream[cut:])
        check_mixed(parse_responses(c.read()), ids)


def test_chunked_end_finds_the_body_end_across_any_split(rf):
    """chunked_end follows a chunked body's framing (sizes in either case, extensions, trailer
    fields) to the byte after it, whether the body comes in one buffer or split anywhere."""
    import random

    rnd = random.Random(7)
    for _ in range(200):
        body = b""
        for _ in range(rnd.randrange(4)):
            data = bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 40)))
            size = (b"%x" if rnd.random() < 0.5 else b"%X") % len(data)
            body += b"0" * rnd.randrange(2) + size + (b";e=\"a\"" if rnd.random() < 0.3 else b"") + b"\r\n" + data + b"\r\n"
        body += b"0\r\n" + b"".join(b"t%d: \r\n" % i for i in range(rnd.randrange(3))) + b"\r\n"
        after = b"GET / HTTP/1.1\r\n"
        stream = body + after
        assert rf.http1.chunked_end(stream, 0, [0, 0]) == len(body)
        cut = rnd.randrange(1, len(body) + 1)
        state = [0, 0]
        end = rf.http1.chunked_end(stream[:cut], 0, state)
        if end < 0:
            end = cut + rf.http1.chunked_end(stream[cut:], 0, state)
        assert end == len(body), (stream, cut)


def test_chunked_body_over_the_limit(make_gateway):
    g = make_gateway(RIGFAST_MAX_BODY_BYTES=64)
    c = g.client()
    c.send(b"POST /_rig/v1/events HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\n"
           + b"40\r\n" + b"x" * 64 + b"\r\n" + b"1\r\nx\r\n")
    status, _, body = parse_responses(c.read())[0]
    assert status == 413 and b"64 bytes" in body
    assert c.closed


def test_content_length_over_the_limit_is_refused_before_the_body(make_gateway):
    g = make_gateway(RIGFAST_MAX_BODY_BYTES=100)
    c = g.client()
    c.send(b"POST /_rig/v1/events HTTP/1.1\r\nhost: t\r\ncontent-length: 101\r\n\r\n")
    assert parse_responses(c.read())[0][0] == 413
    assert c.closed


def test_header_block_too_large(make_gateway):
    g = make_gateway(RIGFAST_MAX_HEADER_BYTES=1024)
    c = g.client()
    c.send(b"GET /_rig/health HTTP/1.1\r\nhost: t\r\nx-big: " + b"a" * 2000 + b"\r\n\r\n")
    assert parse_responses(c.read())[0][0] == 431
    assert c.closed


def test_too_many_header_fields(make_gateway):
    g = make_gateway(RIGFAST_MAX_HEADERS=5)
    c = g.client()
    c.send(b"GET /_rig/health HTTP/1.1\r\n" + b"".join(b"x-%d: 1\r\n" % i for i in range(6)) + b"\r\n")
    status, _, body = parse_responses(c.read())[0]
    assert status == 431 and b"limit 5" in body


def test_malformed_request_is_400_and_closes(make_gateway):
    g = make_gateway()
    c = g.client()
    c.send(b"GET / HTTP/1.1\r\nbad header line\r\n\r\n")
    assert parse_responses(c.read())[0][0] == 400
    assert c.closed


def test_incomplete_request_times_out_with_408(make_gateway, loop):
    """The sweeper answers 408 to a request not complete within RIGFAST_REQUEST_TIMEOUT_S (fake clock)."""
    g = make_gateway(RIGFAST_REQUEST_TIMEOUT_S=2)
    c = g.client()
    c.send(b"POST /_rig/v1/events HTTP/1.1\r\nhost: t\r\ncontent-length: 10\r\n\r\nabc")
    loop.advance(1.0)
    g.inbound.sweep(loop.time())
    assert c.read() == b"" and not c.closed
    loop.advance(1.5)
    g.inbound.sweep(loop.time())
    assert parse_responses(c.read())[0][0] == 408
    assert c.closed


def test_idle_keepalive_connection_is_closed(make_gateway, loop):
    g = make_gateway(RIGFAST_KEEPALIVE_TIMEOUT_S=5)
    c = g.client()
    c.send(http_request("GET", "/_rig/health"))
    c.read()
    loop.advance(6)
    g.inbound.sweep(loop.time())
    assert c.read() == b"" and c.closed  # idle: closed without an answer


def test_websocket_upgrade(make_gateway, rf):
    """Upgrade: 101 with the RFC 6455 accept key, then the greeting as text frames; a ping is answered."""
    g = make_gateway()
    c = g.client()
    key = base64.b64encode(b"0123456789abcdef").decode()
    c.send(http_request("GET", '/_rig/v1/connection/ws?subscriptions=[{"eventType":"greeting"}]',
                        headers={"connection": "Upgrade", "upgrade": "websocket", "sec-websocket-version": "13",
                                 "sec-websocket-key": key}))
    g.settle()
    out = c.read()
    head, _, frames = out.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101")
    accept = base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest())
    headers = dict(line.split(": ", 1) for line in head.decode().split("\r\n")[1:])
    assert {k.lower(): v for k, v in headers.items()}["sec-websocket-accept"] == accept.decode()
    assert frames[0] == 0x81 and b"rig.connection.create" in frames
    c.send(b"\x89\x80" + b"\x00\x00\x00\x00")  # masked empty ping
    assert c.read() == b"\x8a\x00"  # pong
    assert isinstance(c.proto.stream, rf.sessions.WsSession)


def test_idle_websocket_makes_no_frame_parser_for_its_pongs(make_gateway, rf):
    """What an idle client sends (whole masked pongs, one or several per read) is dropped without
    a wsproto Connection; the first other frame makes one and is handled as before."""
    g = make_gateway()
    c = g.client()
    key = base64.b64encode(b"0123456789abcdef").decode()
    c.send(http_request("GET", "/_rig/v1/connection/ws", headers={
        "connection": "Upgrade", "upgrade": "websocket", "sec-websocket-version": "13", "sec-websocket-key": key}))
    g.settle()
    assert c.read().startswith(b"HTTP/1.1 101")
    session = c.proto.stream
    pong = b"\x8a\x80" + b"\x01\x02\x03\x04"
    c.send(pong)
    c.send(pong + b"\x8a\x82" + b"\x01\x02\x03\x04" + b"ab")  # two, the second with a payload
    assert session.parser is None and not session.closed and c.read() == b""
    c.send(b"\x89\x80" + b"\x00\x00\x00\x00")  # a ping: the parser is made and answers it
    assert session.parser is not None and c.read() == b"\x8a\x00"


@pytest.mark.parametrize("data, pongs", [
    (b"\x8a\x80abcd", True),
    (b"\x8a\x80abcd\x8a\x81abcdX", True),
    (b"", False),
    (b"\x8a\x80abc", False),  # cut short
    (b"\x8a\x00", False),  # not masked: a protocol error, for the parser to answer
    (b"\x0a\x80abcd", False),  # not FIN (a fragmented control frame is an error)
    (b"\x89\x80abcd", False),  # a ping needs an answer
    (b"\x8a\xferest", False),  # a 16-bit length: more than a control frame may carry
    (b"\x8a\x80abcd\x81\x80abcd", False),  # a pong, then a text frame
])
def test_only_pongs(rf, data, pongs):
    assert rf.sessions.only_pongs(data) is pongs


def test_websocket_without_upgrade_headers_is_426(make_gateway):
    g = make_gateway()
    c = g.client()
    c.send(http_request("GET", "/_rig/v1/connection/ws"))
    assert parse_responses(c.read())[0][0] == 426


@pytest.mark.parametrize("method", ["DELETE", "PATCH"])
def test_wrong_method_is_405(make_gateway, method):
    g = make_gateway()
    c = g.client()
    c.send(http_request(method, "/_rig/v1/events"))
    status, headers, _ = parse_responses(c.read())[0]
    assert status == 405
    assert headers["access-control-allow-origin"] == "*"  # errors on the public port carry CORS


def test_pipelined_answers_wait_for_an_async_handler(rf, loop, make_gateway):
    """A request answered later (a coroutine, as an external check) holds the next one back: answers stay in order."""
    g = make_gateway()
    pending = []

    def router(proto, req):
        if req.path == "/slow":
            fut = loop.create_future()
            pending.append(fut)

            async def later():
                await fut
                proto.respond(req, 200, b"slow")

            return later()
        proto.respond(req, 200, b"fast")
        return None

    state = rf.protocol.ServerState(g.cfg, router)
    c = Client(rf.protocol, state)
    c.send(http_request("GET", "/slow") + http_request("GET", "/fast"))
    loop.run_ready()
    assert c.read() == b""  # the fast one waits behind the slow one
    pending[0].set_result(None)
    loop.run_ready()
    assert [a[2] for a in parse_responses(c.read())] == [b"slow", b"fast"]


def test_long_poll_times_out_empty(make_gateway, loop):
    """A parked long-poll is answered with no events when RIGFAST_LONGPOLL_TIMEOUT_S passes (fake clock)."""
    g = make_gateway(RIGFAST_LONGPOLL_TIMEOUT_S=3)
    c = g.client()
    c.send(http_request("GET", '/_rig/v1/connection/longpolling?subscriptions=[{"eventType":"greeting"}]'))
    g.settle()
    c.read()
    token = next(iter(g.gw.hub.by_token))
    c.send(http_request("GET", "/_rig/v1/connection/longpolling", headers={"cookie": f"connection_token={token}"}))
    g.settle()
    cursor = quote(json.dumps(json.loads(parse_responses(c.read())[0][2])["last_event_id"]))  # after the greeting
    c.send(http_request("GET", "/_rig/v1/connection/longpolling",
                        headers={"cookie": f"connection_token={token}; last_event_id={cursor}"}))
    g.settle()
    loop.advance(2.9)
    assert c.read() == b""
    loop.advance(0.2)
    status, _, body = parse_responses(c.read())[0]
    assert status == 200 and json.loads(body)["events"] == []


def test_stream_takes_the_transport_and_frees_its_connection_slot(make_gateway, rf):
    """An SSE connect hands the transport to its session, which is the connection's protocol from
    then on (the HTTP protocol object is dropped, no StreamConn between); what the client sends is
    dropped; the client's leaving ends the session and gives back its connection-limit slot."""
    g = make_gateway()
    limit = rf.protocol.ConnectionLimit(10)
    state = rf.protocol.ServerState(g.cfg, g.gw.inbound, limit=limit)
    c = Client(rf.protocol, state)
    assert limit.open == 1
    c.send(http_request("GET", "/_rig/v1/connection/sse"))
    g.settle()
    assert c.read().startswith(b"HTTP/1.1 200")
    session = c.current
    assert isinstance(session, rf.sessions.SseSession) and g.gw.hub.sessions[session.slot] is session
    assert c.proto not in state.all_conns and c.proto not in state.http_conns
    c.send(b"ignored: an SSE client has nothing to say")
    assert not c.closed and c.read() == b""
    c.lose()
    assert limit.open == 0
    assert session.closed and session.slot not in g.gw.hub.sessions


def test_sse_stream_that_stops_reading_is_aborted(make_gateway, rf):
    """The transport's pause_writing (send buffer over its limit) reaches the SSE session, its own
    protocol: the slow consumer is aborted, its session ends, its connection-limit slot comes back."""
    g = make_gateway()
    limit = rf.protocol.ConnectionLimit(10)
    state = rf.protocol.ServerState(g.cfg, g.gw.inbound, limit=limit)
    c = Client(rf.protocol, state)
    c.send(http_request("GET", "/_rig/v1/connection/sse"))
    g.settle()
    assert c.read().startswith(b"HTTP/1.1 200")
    session = c.current
    session.pause_writing()
    assert c.transport.aborted and session.closed and session.slot not in g.gw.hub.sessions
    c.lose()
    c.lose()  # told twice: the slot comes back once
    assert limit.open == 0


class _Conn:
    """A connection served by ``state.new_protocol()`` (what the listening server does), on a fake transport."""

    def __init__(self, rf, state):
        from tests.inprocess.harness import FakeTransport

        self.transport = FakeTransport()
        self.proto = state.new_protocol()
        self.transport.set_protocol(self.proto)
        self.proto.connection_made(self.transport)

    def send(self, data: bytes) -> None:
        self.transport.get_protocol().data_received(data)


def sse_events(data: bytes) -> list[dict]:
    return [json.loads(line[6:]) for line in data.split(b"\n") if line.startswith(b"data: ")]


def test_an_sse_connects_protocol_serves_the_next_connection(make_gateway, rf):
    """The protocol object of a connection that became an SSE stream after one whole keep-alive
    request is kept (with its parser) and serves the next new connection as a fresh one would."""
    g = make_gateway()
    state = rf.protocol.ServerState(g.cfg, g.gw.inbound, limit=rf.protocol.ConnectionLimit(10))
    first = _Conn(rf, state)
    first.send(http_request("GET", "/_rig/v1/connection/sse"))
    g.settle()
    assert state.spare == [first.proto]  # the stream has its own small protocol
    second = _Conn(rf, state)
    assert second.proto is first.proto and state.spare == [] and state.limit.open == 2
    # a keep-alive exchange, then an SSE connect, on the reused object
    second.send(http_request("GET", "/_rig/health") + post_event())
    g.settle()  # the event is fanned out before the connect below
    answers = parse_responses(second.transport.take())
    assert [a[0] for a in answers] == [200, 202]
    second.send(http_request("GET", "/_rig/v1/connection/sse?subscriptions=" + quote(json.dumps([{"eventType": "greeting"}]))))
    g.settle()
    head, _, events = second.transport.take().partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    created, told = sse_events(events)
    assert created["type"] == "rig.connection.create" and told["type"] == "rig.subscriptions_set"
    assert told["data"] == [{"eventType": "greeting", "oneOf": []}]
    token = created["data"]["connection_token"]
    assert g.gw.hub.by_token[token].transport is second.transport
    assert state.spare == [first.proto]  # kept again after the second connect


@pytest.mark.parametrize("tail", [
    http_request("GET", "/_rig/health"),  # a request after the connect, in the same read
    b"GET /_rig/hea",  # part of one
])
def test_a_protocol_with_input_after_the_connect_is_not_kept(make_gateway, rf, tail):
    g = make_gateway()
    state = rf.protocol.ServerState(g.cfg, g.gw.inbound)
    c = _Conn(rf, state)
    c.send(http_request("GET", "/_rig/v1/connection/sse") + tail)
    g.settle()
    assert c.transport.take().startswith(b"HTTP/1.1 200") and state.spare == []


def test_a_connect_that_closes_after_it_is_not_kept(make_gateway, rf):
    """Connection: close leaves the parser done with the connection: not reused."""
    g = make_gateway()
    state = rf.protocol.ServerState(g.cfg, g.gw.inbound)
    c = _Conn(rf, state)
    c.send(http_request("GET", "/_rig/v1/connection/sse", keep_alive=False))
    g.settle()
    assert c.transport.take().startswith(b"HTTP/1.1 200") and state.spare == []


@pytest.mark.parametrize("spare", [0, 2])
def test_spare_protocols_are_bounded_by_the_setting(make_gateway, rf, spare):
    """RIGFAST_SPARE_PROTOCOLS bounds the protocol objects kept for new connections (0: none)."""
    g = make_gateway(RIGFAST_SPARE_PROTOCOLS=str(spare))
    state = rf.protocol.ServerState(g.cfg, g.gw.inbound)
    conns = [_Conn(rf, state) for _ in range(4)]
    for c in conns:
        c.send(http_request("GET", "/_rig/v1/connection/sse"))
    g.settle()
    assert all(c.transport.take().startswith(b"HTTP/1.1 200") for c in conns)
    assert len(state.spare) == spare and all(p in [c.proto for c in conns] for p in state.spare)


@pytest.mark.parametrize("name", ["RIGFAST_SPARE_PROTOCOLS", "RIGFAST_PROXY_LENGTH_LINES"])
def test_negative_cache_bounds_are_refused(name):
    from rigfast import config

    with pytest.raises(config.ConfigError, match=f"{name} must be >= 0"):
        config.load({name: "-1"})
