"""Fuzz the Phoenix Channels message decoder and dispatcher over a real in-process Phoenix socket.

Generated messages (serializer 2.0.0 arrays and 1.0.0 objects, well-formed or not): joins with
subscriptions (some over the limits), leaves, heartbeats, subscription pushes, junk. Properties:
nothing escapes; no reply is ever "internal error" (an exception in a handler); output frames
stay well formed; a socket the server ends got a close frame first.
"""

from __future__ import annotations

import json
import struct

from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz.conftest import FUZZ
from tests.fuzz.engine import inprocess_gateway
from tests.fuzz.test_fuzz_ws import server_frames

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 2**64 - 1) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
SUBS = st.lists(st.fixed_dictionaries({"eventType": st.sampled_from(["greeting", "order", ""]) | JSON},
                                      optional={"oneOf": st.lists(st.dictionaries(st.sampled_from(["name", "customer", "x"]), JSON, max_size=2), max_size=4) | JSON}),
                max_size=3) | JSON
PAYLOAD = st.fixed_dictionaries({}, optional={"subscriptions": SUBS, "last_event_id": st.text(max_size=8) | JSON}) | JSON
TOPIC = st.sampled_from(["phoenix", "rig:a", "rig:b", "rig:", "other", ""]) | st.text(max_size=6)
EVENT = st.sampled_from(["heartbeat", "phx_join", "phx_leave", "subscriptions", "x"]) | st.text(max_size=6)
REF = st.none() | st.integers(0, 5).map(str) | st.integers(0, 5) | JSON


@st.composite
def message(draw, fmt: str) -> bytes:
    parts = [draw(REF), draw(REF), draw(TOPIC), draw(EVENT), draw(PAYLOAD)]
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=30) | JSON.map(lambda v: json.dumps(v).encode()))
    if fmt == "2.0.0":
        return json.dumps(parts).encode()
    return json.dumps(dict(zip(("join_ref", "ref", "topic", "event", "payload"), parts))).encode()


def text_frame(payload: bytes) -> bytes:
    key = b"\x11\x22\x33\x44"
    n = len(payload)
    head = b"\x81" + (bytes((0x80 | n,)) if n < 126 else bytes((0x80 | 126,)) + struct.pack("!H", n))
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def test_fuzz_phoenix_messages():
    with inprocess_gateway(RIGFAST_MAX_ONEOF="3", RIGFAST_PHOENIX_MAX_CHANNELS="2") as g:

        @FUZZ
        @given(st.sampled_from(["2.0.0", "1.0.0"]).flatmap(lambda f: st.tuples(st.just(f), st.lists(message(f), min_size=1, max_size=6))))
        def run(case):
            fmt, msgs = case
            c = g.client()
            c.send((f"GET /socket/websocket?vsn={fmt} HTTP/1.1\r\nhost: t\r\nupgrade: websocket\r\nconnection: Upgrade\r\n"
                    "sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n\r\n").encode())
            g.settle()
            head, _, rest = c.read().partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 101"), head
            out = rest
            for m in msgs:
                c.send(text_frame(m))
                g.settle()
                out += c.read()
                if c.closed:
                    break
            frames = server_frames(out)
            for op, p in frames:
                if op == 1:
                    assert b'"internal error"' not in p, p
            if c.closed:
                assert any(op == 8 for op, _ in frames), "closed without a close frame"
            c.lose()
            g.settle()

        run()
