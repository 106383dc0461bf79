"""wire.http1.encode_response: the exact bytes, against a line-by-line statement of the head it must
write (status line, content-type, the given fields in order, content-length, connection: close, blank
line, body), for random statuses, bodies, content types, fields and keep-alive. Runs on whichever
engine is loaded (the compiled in-place module, or the .py with RIGFAST_NO_EXTENSIONS=1)."""

from __future__ import annotations

from http import HTTPStatus

from hypothesis import given, settings
from hypothesis import strategies as st

from rigfast.wire.http1 import encode_response

TOKEN = st.binary(min_size=1, max_size=12).map(lambda b: bytes(c % 26 + 97 for c in b))
VALUE = st.binary(max_size=40).map(lambda b: bytes(c % 94 + 32 for c in b))
STATUS = st.sampled_from([s.value for s in HTTPStatus]) | st.integers(100, 999)


def expected(status, body, content_type, headers, keep_alive):
    try:
        reason = HTTPStatus(status).phrase.encode()
    except ValueError:
        reason = b"Unknown"
    head = b"HTTP/1.1 " + str(status).encode() + b" " + reason + b"\r\n"
    if content_type is not None and (body or status not in (204, 304)):
        head += b"content-type: " + content_type + b"\r\n"
    for k, v in headers:
        head += k + b": " + v + b"\r\n"
    if status != 204 and not 100 <= status < 200:
        head += b"content-length: " + str(len(body)).encode() + b"\r\n"
    if not keep_alive:
        head += b"connection: close\r\n"
    return head + b"\r\n" + body


@settings(max_examples=400, deadline=None)
@given(status=STATUS, body=st.binary(max_size=40) | st.binary(min_size=1000, max_size=1100),
       content_type=st.none() | st.sampled_from([b"application/json", b"text/plain; charset=utf-8"]) | VALUE,
       headers=st.lists(st.tuples(TOKEN, VALUE), max_size=4), keep_alive=st.booleans())
def test_response_bytes(status, body, content_type, headers, keep_alive):
    want = expected(status, body, content_type, headers, keep_alive)
    assert encode_response(status, body, content_type, headers, keep_alive) == want
    # the second call takes the cached pieces
    assert encode_response(status, body, content_type, tuple(headers), keep_alive) == want


def test_defaults_and_large_body():
    assert encode_response(200) == b"HTTP/1.1 200 OK\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: 0\r\n\r\n"
    assert encode_response(204, content_type=None, keep_alive=False) == b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n"
    big = b"x" * 70000
    assert encode_response(413, big, None) == expected(413, big, None, (), True)
    assert expected(413, big, None, (), True).endswith(b"\r\ncontent-length: 70000\r\n\r\n" + big)
