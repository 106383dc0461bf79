"""Hostile WebSocket clients: every protocol error ends with a close frame naming it (RFC 6455 7.4.1).

Before: wsproto reported the error as a close event and the gateway dropped the TCP connection
without a close frame. Each case sends one bad frame on a raw socket after the handshake and
reads the server's close frame: 1002 (protocol error), 1007 (text not UTF-8), 1009 (too big).
"""

from __future__ import annotations

import base64
import os
import socket
import struct

import pytest

from tests.helpers import T
from tests.helpers import ws_client_frame as frame  # a client frame; length= overrides the declared length

WS_PATH = "/_rig/v1/connection/ws"


class RawWs:
    """A WebSocket client on a plain socket: handshake, then raw frames (``path``: RIG's one-way
    endpoint, whose two greeting frames are read, or the Phoenix socket, which greets nobody)."""

    def __init__(self, gw, path: str = WS_PATH):
        self.sock = socket.create_connection(gw.hostport, timeout=T)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                f"GET {path} HTTP/1.1\r\nhost: x\r\nupgrade: websocket\r\nconnection: Upgrade\r\n"
                f"sec-websocket-key: {key}\r\nsec-websocket-version: 13\r\n\r\n"
            ).encode()
        )
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            self._more()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 101"), head
        for _ in range(2 if path == WS_PATH else 0):  # rig.connection.create, rig.subscriptions_set
            op, _ = self.read_frame()
            assert op == 1

    def _more(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed")
        self.buf += chunk

    def _need(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._more()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_frame(self) -> tuple[int, bytes]:
        b0, b1 = self._need(2)
        n = b1 & 0x7F
        if n == 126:
            (n,) = struct.unpack("!H", self._need(2))
        elif n == 127:
            (n,) = struct.unpack("!Q", self._need(8))
        return b0 & 0x0F, self._need(n)

    def close_code(self) -> tuple[int, str]:
        """Read frames until the close frame; (code, reason). Fails on a bare TCP close."""
        for _ in range(50):
            try:
                op, payload = self.read_frame()
            except ConnectionError:
                raise AssertionError("server closed the TCP connection without a close frame") from None
            if op == 8:
                return struct.unpack("!H", payload[:2])[0], payload[2:].decode()
        raise AssertionError("no close frame")

    def close(self) -> None:
        self.sock.close()


CASES = {
    "unmasked frame": (frame(1, b"hi", masked=False), 1002),
    "invalid utf-8": (frame(1, b"\xff\xfe\xfd"), 1007),
    "bad opcode": (frame(3, b"x"), 1002),
    "fragmented ping": (frame(9, b"x", fin=False), 1002),
    "bad close code": (frame(8, struct.pack("!H", 999)), 1002),
    "reserved bits": (frame(1, b"x", rsv=1), 1002),
    "2^63 length": (frame(2, b"", length=1 << 63), 1002),
    "control frame too long": (frame(9, b"x" * 126), 1002),
}


PHX_PATH = "/socket/websocket?vsn=2.0.0"


@pytest.mark.parametrize("path", [WS_PATH, PHX_PATH], ids=["rig", "phoenix"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_ws_protocol_error_closes_with_code(gateway, case, path):
    """A protocol error gets a close frame with its code (not a bare TCP close); the gateway stays up."""
    data, code = CASES[case]
    ws = RawWs(gateway, path)
    try:
        ws.sock.sendall(data)
        got, reason = ws.close_code()
        assert got == code, (case, got, reason)
        assert reason
    finally:
        ws.close()


@pytest.mark.parametrize("path, opcode", [(WS_PATH, 2), (PHX_PATH, 1)], ids=["rig", "phoenix"])
def test_ws_message_over_limit_closes_1009(gateway_factory, path, opcode):
    """A client message larger than RIGFAST_WS_MAX_MESSAGE_BYTES: close 1009 once the limit is passed,
    without waiting for (or keeping) the rest; a message within the limit gets the one-way close 1000."""
    gw = gateway_factory(RIGFAST_WS_MAX_MESSAGE_BYTES="1000")
    ws = RawWs(gw, path)
    try:
        # declares 100 MB but sends 2 KB: the limit is crossed on what arrived
        ws.sock.sendall(frame(opcode, b"x" * 2000, length=100_000_000)[: 14 + 2000])
        code, reason = ws.close_code()
        assert code == 1009, reason
        assert "1000 bytes" in reason
    finally:
        ws.close()
    if path != WS_PATH:
        return
    ws = RawWs(gw)
    try:
        ws.sock.sendall(frame(1, b"y" * 900))
        assert ws.close_code()[0] == 1000
    finally:
        ws.close()
    ws = RawWs(gw, PHX_PATH)
    try:  # one complete 2 KB Phoenix message in one segment: also 1009
        ws.sock.sendall(frame(1, b"[" + b" " * 2000 + b"]"))
        assert ws.close_code()[0] == 1009
    finally:
        ws.close()


def test_ws_fragmented_message_over_limit_closes_1009(gateway_factory):
    """The limit counts the whole message, across continuation frames."""
    gw = gateway_factory(RIGFAST_WS_MAX_MESSAGE_BYTES="1000")
    ws = RawWs(gw)
    try:
        ws.sock.sendall(frame(1, b"a" * 600, fin=False) + frame(0, b"b" * 600, fin=False))
        assert ws.close_code()[0] == 1009
    finally:
        ws.close()
