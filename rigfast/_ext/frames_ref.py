"""Wire encoders, plain Python: the reference for the compiled ``frames`` module.

Each takes an event's compact JSON once and returns the bytes shared by every
recipient of that wire kind.
"""

from __future__ import annotations

from urllib.parse import unquote as _unquote


def encode_sse(event_type: str, event_id: str, json: bytes) -> bytes:
    """``event:``/``id:``/``data:`` lines and the blank line. JSON is single-line by construction."""
    if event_id:
        return b"event: %s\nid: %s\ndata: %s\n\n" % (event_type.encode(), event_id.encode(), json)
    return b"event: %s\ndata: %s\n\n" % (event_type.encode(), json)


def encode_ws_text(payload: bytes) -> bytes:
    """One unmasked, unfragmented server text frame (RFC 6455)."""
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 65536:
        return bytes((0x81, 126, n >> 8, n & 0xFF)) + payload
    return b"\x81\x7f" + n.to_bytes(8, "big") + payload


def unquote(text: str, plus: bool = False) -> str:
    """Percent-decoding of a URL part (UTF-8, invalid sequences replaced), exactly
    ``urllib.parse.unquote``; ``plus``: ``+`` is a space first (``unquote_plus``, query strings)."""
    if plus:
        text = text.replace("+", " ")
    return _unquote(text)
