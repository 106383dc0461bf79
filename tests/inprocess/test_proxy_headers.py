"""Reverse-proxy header rewriting in process: the upstream request the proxy writes, and the answer it passes back."""

from __future__ import annotations

import json

import pytest

from tests.inprocess.harness import FakeTransport, http_request, parse_responses

APIS = [{
    "id": "books", "name": "books",
    "proxy": {"target_url": "books.internal", "port": 8080, "use_env": False},
    "version_data": {"default": {
        "endpoints": [{"id": "list", "method": "GET", "path_regex": "/books(/.*)?",
                       "transform_request_headers": {"add_headers": {"x-api": "books"}}},
                      {"id": "post", "method": "POST", "path_regex": "/books"}],
    }},
}]


def captured(g, raw: bytes):
    """(protocol, request) of ``raw`` as the gateway parsed it."""
    seen = []
    state = g.rf.protocol.ServerState(g.cfg, lambda proto, req: seen.append((proto, req)) or proto.respond(req, 204))
    c = g.rf.protocol.HttpProtocol(state)
    c.connection_made(FakeTransport(peer=("10.0.0.7", 4444)))
    c.data_received(raw)
    assert seen, "the request was not complete"
    return seen[0]


def upstream_request(g, raw: bytes) -> tuple[str, dict[str, list[str]], bytes]:
    proto, req = captured(g, raw)
    ep, _ = g.gw.proxy.table.match(req.method, req.path)
    out = g.gw.proxy._encode(proto, req, ep, None, req.path.encode())
    head, _, body = out.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers: dict[str, list[str]] = {}
    for line in lines[1:]:
        k, _, v = line.partition(": ")
        headers.setdefault(k, []).append(v)
    return lines[0], headers, body


def test_request_headers_rewritten(make_gateway):
    g = make_gateway(PROXY_CONFIG_FILE=json.dumps(APIS))
    line, h, body = upstream_request(g, (
        b"GET /books/1 HTTP/1.1\r\nHost: gw.example\r\nConnection: keep-alive, x-hop\r\nx-hop: 1\r\nKeep-Alive: 5\r\n"
        b"TE: trailers\r\nUpgrade: h2c\r\nProxy-Authorization: secret\r\nX-Forwarded-For: 1.2.3.4\r\nAccept: */*\r\n\r\n"))
    assert line == "GET /books/1 HTTP/1.1"
    assert h["host"] == ["books.internal:8080"]
    assert h["x-forwarded-for"] == ["1.2.3.4, 10.0.0.7"]  # appended, one line
    assert h["x-forwarded-host"] == ["gw.example"] and h["x-forwarded-proto"] == ["http"]
    assert h["x-api"] == ["books"] and h["accept"] == ["*/*"]  # transform_request_headers.add_headers
    for hop in ("connection", "keep-alive", "te", "upgrade", "proxy-authorization", "x-hop"):
        assert hop not in h, hop
    assert "content-length" not in h and body == b""


def test_request_body_gets_its_length(make_gateway):
    g = make_gateway(PROXY_CONFIG_FILE=json.dumps(APIS))
    _, h, body = upstream_request(g, b"POST /books HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n"
                                     b"3\r\nabc\r\n0\r\n\r\n")
    assert body == b"abc" and h["content-length"] == ["3"] and "transfer-encoding" not in h


def test_forwarded_proto_and_host_kept_from_a_load_balancer(make_gateway):
    g = make_gateway(PROXY_CONFIG_FILE=json.dumps(APIS))
    _, h, _ = upstream_request(g, b"GET /books HTTP/1.1\r\nhost: x\r\nx-forwarded-proto: https\r\nx-forwarded-host: lb\r\n\r\n")
    assert h["x-forwarded-proto"] == ["https"] and h["x-forwarded-host"] == ["lb"]


def test_answer_headers_rewritten(make_gateway):
    """The upstream's answer: hop-by-hop and Connection-named headers dropped, length set by the proxy."""
    g = make_gateway(PROXY_CONFIG_FILE=json.dumps(APIS))
    proto, req = captured(g, http_request("GET", "/books"))
    proto.transport.take()
    g.gw.proxy._pass_back(proto, req, 200, [(b"content-type", b"text/plain"), (b"connection", b"x-up"), (b"x-up", b"1"),
                                            (b"transfer-encoding", b"chunked"), (b"content-length", b"99"),
                                            (b"x-kept", b"yes")], b"hello")
    status, headers, body = parse_responses(proto.transport.take())[0]
    assert status == 200 and body == b"hello"
    assert headers["content-length"] == "5" and headers["x-kept"] == "yes"
    assert "x-up" not in headers and "transfer-encoding" not in headers and "connection" not in headers


def test_no_matching_endpoint_is_404(make_gateway):
    g = make_gateway(PROXY_CONFIG_FILE=json.dumps(APIS))
    c = g.client()
    c.send(http_request("GET", "/nothing/here"))
    assert parse_responses(c.read())[0][0] == 404


@pytest.mark.parametrize("kept", [0, 3])
def test_length_lines_kept_are_bounded_by_the_setting(make_gateway, kept):
    """RIGFAST_PROXY_LENGTH_LINES bounds the Content-Length lines the proxy keeps (0: none); each is right."""
    proxy = make_gateway(RIGFAST_PROXY_LENGTH_LINES=str(kept)).gw.proxy
    for n in (0, 1, 7, 1234, 7, 99999):
        assert proxy.length_line(n) == b"content-length: %d\r\n" % n
        assert len(proxy.length_lines) <= kept
    assert len(proxy.length_lines) == kept  # emptied once when full, then filled again
