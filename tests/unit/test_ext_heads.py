"""Response heads (rigfast._ext.heads): the compiled module and its Python twin, each against what
the contract says and against each other (random heads), and the heads llhttp accepts.

The compiled-engine tests skip with the reason when ``heads.pyx`` is not built or RIGFAST_NO_EXTENSIONS=1.
"""

from __future__ import annotations

import random

import httptools
import pytest

from rigfast._ext import heads_ref
from tests.unit.compiled import load_compiled

compiled_heads, needs_compiled = load_compiled("heads")
IMPLS = [pytest.param(heads_ref, id="python"), pytest.param(compiled_heads, id="cython", marks=needs_compiled)]

HEAD = (b"HTTP/1.1 200 OK\r\nServer: up\r\nContent-Type: text/event-stream; charset=utf-8\r\nConnection: keep-alive, X-Hop\r\n"
        b"X-Hop: 1\r\nKeep-Alive: timeout=5\r\nContent-Length: 12\r\nTE: trailers\r\nx-kept:\t spaced \t\r\nSet-Cookie: a=1\r\n"
        b"Set-Cookie: b=2\r\n\r\nhello world!")


@pytest.mark.parametrize("impl", IMPLS)
def test_the_fields_of_a_head(impl):
    fields, end, count, length, transfer, sse = impl.response_head(HEAD, 0)
    assert HEAD[:fields] == b"HTTP/1.1 200 OK\r\n" and HEAD[end:end + 2] == b"\r\n"
    assert (count, length, transfer, sse) == (10, 12, 0, True)
    assert impl.field_list(HEAD, fields, end)[:3] == [(b"server", b"up"),
                                                       (b"content-type", b"text/event-stream; charset=utf-8"),
                                                       (b"connection", b"keep-alive, X-Hop")]
    assert (b"x-kept", b"spaced") in impl.field_list(HEAD, fields, end)
    assert impl.forward_fields(HEAD, fields, end, False) == (
        b"Server: up\r\nContent-Type: text/event-stream; charset=utf-8\r\nx-kept:\t spaced \t\r\nSet-Cookie: a=1\r\n"
        b"Set-Cookie: b=2\r\n")
    assert b"Content-Length: 12\r\n" in impl.forward_fields(HEAD, fields, end, True)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("value,transfer", [(b"chunked", 1), (b"gzip, chunked", 1), (b"gzip,Chunked ", 1),
                                            (b"chunked, gzip", 2), (b"xchunked", 2), (b"gzip", 2)])
def test_the_last_transfer_coding_decides(impl, value, transfer):
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: " + value + b"\r\n\r\n"
    assert impl.response_head(head, 0)[4] == transfer


@pytest.mark.parametrize("impl", IMPLS)
def test_incomplete_empty_and_interim_heads(impl):
    assert impl.response_head(b"HTTP/1.1 200 OK\r\nServer: x\r\n", 0) is None
    assert impl.response_head(b"HTTP/1.1 200 OK", 0) is None
    assert impl.response_head(b"HTTP/1.1 204 No Content\r\n\r\n", 0) == (25, 25, 0, -1, 0, False)
    two = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
    first = impl.response_head(two, 0)
    assert first[:2] == (23, 23)
    second = impl.response_head(two, first[1] + 2)
    assert two[:second[0]].endswith(b"200 OK\r\n") and second[2] == 1 and second[3] == 0
    assert impl.response_head(b"\r\n\r\nHTTP/1.1 200 OK\r\nA: b\r\n\r\n", 0)[:2] == (21, 27)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("value", [b"", b"-1", b"1x", b"9" * 19, b"+5"])
def test_a_content_length_that_is_not_a_number_is_none(impl, value):
    assert impl.response_head(b"HTTP/1.1 200 OK\r\nContent-Length: " + value + b"\r\n\r\n", 0)[3] == -1


def random_head(rnd: random.Random) -> bytes:
    names = [b"Connection", b"connection", b"Keep-Alive", b"TE", b"Trailer", b"Transfer-Encoding", b"Upgrade",
             b"Proxy-Connection", b"Proxy-Authenticate", b"Proxy-Authorization", b"Content-Length", b"Content-Type",
             b"X-A", b"x-b", b"Set-Cookie", b"Server", b"close", b"X-Long-Name-" + b"n" * rnd.randrange(30)]
    values = [b"", b" ", b"\t", b"keep-alive", b"close, x-a", b"X-B ,, server", b"chunked", b"gzip, chunked", b"12",
              b"007", b"text/event-stream", b" text/html ", b"a" * rnd.randrange(5000), b"upgrade"]
    lines = [b"%s:%s%s\r\n" % (rnd.choice(names), rnd.choice([b"", b" ", b"\t "]), rnd.choice(values))
             for _ in range(rnd.randrange(12))]
    return rnd.choice([b"", b"\r\n"]) + b"HTTP/1.1 200 OK\r\n" + b"".join(lines) + rnd.choice([b"\r\n", b"", b"\r"])


def random_request(rnd: random.Random) -> bytes:
    names = [b"Host", b"host", b"Expect", b"Content-Length", b"Transfer-Encoding", b"X-A", b"Cookie"]
    values = [b"", b" ", b"100-continue", b"100-CONTINUE ", b"12", b"chunked", b"gzip, chunked", b"x" * rnd.randrange(300)]
    lines = [b"%s:%s%s\r\n" % (rnd.choice(names), rnd.choice([b"", b" ", b"\t "]), rnd.choice(values))
             for _ in range(rnd.randrange(10))]
    line = rnd.choice([b"GET / HTTP/1.1", b"OPTIONS * HTTP/1.1", b"GET /a?b=c%20d HTTP/1.0", b"PUT http://x/y HTTP/1.1"])
    return rnd.choice([b"", b"\r\n"]) + line + b"\r\n" + b"".join(lines) + rnd.choice([b"\r\n", b"", b"\r"])


@needs_compiled
@pytest.mark.parametrize("make, name", [(random_head, "response_head"), (random_request, "request_head")])
def test_both_twins_agree_on_random_heads(make, name):
    rnd = random.Random(13)
    for _ in range(3000):
        head = make(rnd)
        for start in (0, rnd.randrange(len(head))):
            got = getattr(heads_ref, name)(head, start)
            assert getattr(compiled_heads, name)(head, start) == got, (head, start)
        got = heads_ref.response_head(head, 0)
        if name == "response_head" and got is not None:
            fields, end = got[:2]
            assert compiled_heads.field_list(head, fields, end) == heads_ref.field_list(head, fields, end), head
            for keep in (False, True):
                assert (compiled_heads.forward_fields(head, fields, end, keep)
                        == heads_ref.forward_fields(head, fields, end, keep)), head


class _Fields:
    def __init__(self) -> None:
        self.fields: list[tuple[bytes, bytes]] = []
        self.done = False
        self.url = b""

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.fields.append((name.lower(), value.strip(b" \t")))

    def on_headers_complete(self) -> None:
        self.done = True


def llhttp_reads(make, parser, seed: int):
    """(head, what the parser's callbacks reported) of 1000 random heads, those llhttp accepts (>100)."""
    rnd = random.Random(seed)
    out = []
    for _ in range(1000):
        head = make(rnd)
        p = _Fields()
        try:
            parser(p).feed_data(head)
        except httptools.HttpParserError:
            continue
        if p.done:
            out.append((head, p))
    assert len(out) > 100
    return out


@pytest.mark.parametrize("impl", IMPLS)
def test_the_fields_are_those_llhttp_reads(impl):
    """Every random head llhttp accepts has the fields llhttp's callbacks report."""
    for head, p in llhttp_reads(random_head, httptools.HttpResponseParser, 7):
        fields, end = impl.response_head(head, 0)[:2]
        assert impl.field_list(head, fields, end) == p.fields, head


REQUEST = (b"\r\nPOST /a%20b?c=d HTTP/1.1\r\nHost: h\r\nexpect: 100-Continue\r\nContent-Length: 5\r\n"
           b"X-Spaced:\t v \t\r\nhost: again\r\n\r\nhello")


@pytest.mark.parametrize("impl", IMPLS)
def test_the_parts_of_a_request_head(impl):
    target, fields, end, length, transfer, hosts, expect = impl.request_head(REQUEST, 0)
    assert target == b"/a%20b?c=d" and REQUEST[end:] == b"\r\n\r\nhello"[2:] and REQUEST[end + 2:] == b"hello"
    assert fields == [(b"host", b"h"), (b"expect", b"100-Continue"), (b"content-length", b"5"), (b"x-spaced", b"v"),
                      (b"host", b"again")]
    assert (length, transfer, hosts, expect) == (5, 0, 2, 1)
    assert impl.request_head(b"GET / HTTP/1.0\r\n\r\n", 0) == (b"/", [], 16, -1, 0, 0, 0)
    assert impl.request_head(b"GET / HTTP/1.1\r\nExpect: nope\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 0)[3:] == (
        -1, 1, 0, 2)
    assert impl.request_head(REQUEST[:-8], 0) is None  # no empty line yet


@pytest.mark.parametrize("impl", IMPLS)
def test_the_target_and_fields_are_those_llhttp_reads(impl):
    """Every random request head llhttp accepts has the target and fields llhttp's callbacks report."""
    for head, p in llhttp_reads(random_request, httptools.HttpRequestParser, 9):
        assert impl.request_head(head, 0)[:2] == (p.url, p.fields), head
