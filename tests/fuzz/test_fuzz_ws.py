"""Fuzz the WebSocket reader: a real handshake in process, then generated (often broken) client frames.

Properties: nothing escapes; the server's output stays a sequence of well-formed unmasked frames;
whenever the server ends the connection it has sent a close frame first (never a bare TCP close),
with a code the client may see (1000, 1002, 1007, 1008, 1009, or the code the client's own close
frame carried).
"""

from __future__ import annotations

import struct

from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz.conftest import FUZZ
from tests.fuzz.engine import inprocess_gateway
from tests.helpers import ws_client_frame

HANDSHAKE = (
    b"GET /_rig/v1/connection/ws HTTP/1.1\r\nhost: t\r\nupgrade: websocket\r\nconnection: Upgrade\r\n"
    b"sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n\r\n"
)


@st.composite
def client_frame(draw) -> bytes:
    opcode = draw(st.sampled_from([0, 1, 2, 8, 9, 10]) | st.integers(0, 15))
    fin = draw(st.booleans()) if draw(st.booleans()) else True
    rsv = draw(st.sampled_from([0, 0, 0, 1, 2, 4, 7]))
    masked = draw(st.sampled_from([True, True, True, False]))
    if opcode == 8 and draw(st.booleans()):
        payload = struct.pack("!H", draw(st.sampled_from([1000, 1001, 1005, 1006, 999, 1015, 3000, 4999, 5000]) | st.integers(0, 65535)))
        payload += draw(st.binary(max_size=10) | st.text(max_size=10).map(str.encode))
    elif opcode == 1:
        payload = draw(st.text(max_size=60).map(str.encode) | st.binary(max_size=60))
    else:
        payload = draw(st.binary(max_size=200))
    n = len(payload)
    if draw(st.integers(0, 9)) == 0:
        n = draw(st.sampled_from([125, 126, 65535, 65536, 1 << 31, (1 << 63) - 1, 1 << 63, (1 << 64) - 1]))
    if masked:
        return ws_client_frame(opcode, payload, fin, rsv=rsv, length=n, key=draw(st.binary(min_size=4, max_size=4)))
    return ws_client_frame(opcode, payload, fin, masked=False, rsv=rsv, length=n)


def server_frames(data: bytes) -> list[tuple[int, bytes]]:
    """Parse unmasked server frames; fails on anything malformed or masked."""
    out = []
    i = 0
    while i < len(data):
        assert len(data) - i >= 2, data[i:]
        b0, b1 = data[i], data[i + 1]
        assert b1 & 0x80 == 0, "server frames are never masked"
        assert b0 & 0x70 == 0, "no reserved bits"
        n, i = b1 & 0x7F, i + 2
        if n == 126:
            (n,) = struct.unpack("!H", data[i:i + 2])
            i += 2
        elif n == 127:
            (n,) = struct.unpack("!Q", data[i:i + 8])
            i += 8
        assert len(data) - i >= n, "truncated frame"
        out.append((b0 & 0x0F, data[i:i + n]))
        i += n
    return out


def test_fuzz_ws_reader():
    with inprocess_gateway(RIGFAST_WS_MAX_MESSAGE_BYTES="300") as g:

        @FUZZ
        @given(st.lists(client_frame(), min_size=1, max_size=5), st.binary(max_size=20), st.integers(1, 64))
        def run(frames, tail, chunk):
            c = g.client()
            c.send(HANDSHAKE)
            g.settle()
            head, _, rest = c.read().partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 101"), head
            raw = b"".join(frames) + tail
            for i in range(0, len(raw), chunk):
                c.send(raw[i:i + chunk])
                g.settle()
                if c.closed:
                    break
            frames_out = server_frames(rest + c.read())
            closes = [p for op, p in frames_out if op == 8]
            if c.closed:
                assert closes, "closed without a close frame"
            for p in closes:
                if len(p) >= 2:
                    code = struct.unpack("!H", p[:2])[0]
                    assert 1000 <= code <= 4999 and code not in (1004, 1005, 1006, 1015), code
                    p[2:].decode("utf-8")  # the reason is UTF-8
            c.lose()
            g.settle()

        run()
