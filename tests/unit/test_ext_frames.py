"""Wire encoders: reference output, and the compiled twin byte-identical to it.

The compiled-build tests skip with the reason when ``frames.pyx`` is not
built or RIGFAST_NO_EXTENSIONS=1.
"""

from __future__ import annotations


import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.compiled import load_compiled
from rigfast._ext import frames_ref


compiled_frames, needs_compiled = load_compiled("frames")

IMPLS = [
    pytest.param(frames_ref, id="python"),
    pytest.param(compiled_frames, id="cython", marks=needs_compiled),
]
PROPS = settings(max_examples=200, deadline=None)


@pytest.mark.parametrize("impl", IMPLS)
def test_sse_with_id(impl):
    """An SSE frame has event, id and data lines and ends with a blank line."""
    assert impl.encode_sse("greeting", "42", b'{"a":1}') == b'event: greeting\nid: 42\ndata: {"a":1}\n\n'


@pytest.mark.parametrize("impl", IMPLS)
def test_sse_without_id(impl):
    """An empty event id leaves the id line out."""
    assert impl.encode_sse("greeting", "", b"{}") == b"event: greeting\ndata: {}\n\n"


@pytest.mark.parametrize("impl", IMPLS)
def test_sse_utf8(impl):
    """Event type and id are written as UTF-8."""
    assert impl.encode_sse("grüß", "ïd", b"{}") == "event: grüß\nid: ïd\ndata: {}\n\n".encode()


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize(
    "n, header",
    [
        (0, b"\x81\x00"),
        (125, b"\x81\x7d"),
        (126, b"\x81\x7e\x00\x7e"),
        (65535, b"\x81\x7e\xff\xff"),
        (65536, b"\x81\x7f\x00\x00\x00\x00\x00\x01\x00\x00"),
    ],
)
def test_ws_text_length_forms(impl, n, header):
    """The WS text frame uses the 7-bit, 16-bit or 64-bit length form at the RFC 6455 boundaries."""
    payload = b"x" * n
    assert impl.encode_ws_text(payload) == header + payload


@needs_compiled
@PROPS
@given(st.text(max_size=40), st.text(max_size=40), st.binary(max_size=600))
def test_sse_compiled_identical(event_type, event_id, json):
    """Compiled encode_sse returns the reference's bytes for any type, id and body."""
    assert compiled_frames.encode_sse(event_type, event_id, json) == frames_ref.encode_sse(event_type, event_id, json)


@needs_compiled
@PROPS
@given(st.one_of(st.binary(max_size=300), st.integers(0, 70_000).map(lambda n: b"\xa5" * n)))
def test_ws_text_compiled_identical(payload):
    """Compiled encode_ws_text returns the reference's bytes for any payload length."""
    assert compiled_frames.encode_ws_text(payload) == frames_ref.encode_ws_text(payload)


@needs_compiled
def test_compiled_other_types_behave_like_reference():
    """Non-str/bytes arguments get the reference's result or error."""
    c, r = compiled_frames, frames_ref
    assert c.encode_sse("t", "1", bytearray(b"{}")) == r.encode_sse("t", "1", bytearray(b"{}"))
    assert c.encode_ws_text(bytearray(b"hi")) == r.encode_ws_text(bytearray(b"hi"))
    for impl in (c, r):
        with pytest.raises(UnicodeEncodeError):
            impl.encode_sse("\ud800", "", b"{}")
        with pytest.raises((TypeError, AttributeError)):
            impl.encode_sse(b"t", "", b"{}")
        with pytest.raises(TypeError):
            impl.encode_ws_text("text")


@needs_compiled
def test_compiled_is_in_use():
    """With the extension built and not disabled, rigfast._ext exports the compiled encoders."""
    import rigfast._ext as ext

    assert ext.FRAMES_BUILD == "cython"
    assert ext.encode_sse is compiled_frames.encode_sse


# ------------------------------------------------------------------ percent-decoding

UNQUOTE_CASES = [
    "", "plain", "%5B%7B%22eventType%22%3A%22a%22%7D%5D", "a+b", "%2B+%20", "%", "%4", "%zz", "%%41",
    "%e2%82%ac", "%E2%82%AC", "%ff%fe", "%e2%82", "caf%C3%A9 x", "ü%20", "%C3%BC+ü",
]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("text", UNQUOTE_CASES)
def test_unquote_is_urllib(impl, text):
    """unquote / unquote(plus=True) give exactly urllib's unquote / unquote_plus."""
    from urllib.parse import unquote, unquote_plus

    assert impl.unquote(text) == unquote(text)
    assert impl.unquote(text, True) == unquote_plus(text)


@needs_compiled
@PROPS
@given(st.text(alphabet=st.sampled_from("%+aZ09fFgG/ ?=&\u00fc\u20ac"), max_size=40), st.booleans())
def test_unquote_compiled_matches_reference(text, plus):
    """Any mix of escapes, broken escapes, pluses and non-ASCII: the compiled twin equals the reference."""
    assert compiled_frames.unquote(text, plus) == frames_ref.unquote(text, plus)


@needs_compiled
@PROPS
@given(st.binary(max_size=30), st.booleans())
def test_unquote_compiled_matches_reference_on_escaped_bytes(raw, plus):
    """Escaped arbitrary bytes (valid or invalid UTF-8) decode the same in both."""
    text = "".join("%%%02x" % b if i % 2 else "%%%02X" % b for i, b in enumerate(raw))
    assert compiled_frames.unquote(text, plus) == frames_ref.unquote(text, plus)
