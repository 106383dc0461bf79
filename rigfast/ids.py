"""Unguessable tokens, cheaply: connection tokens, correlation ids; and unique event ids (UUIDs).

Random bytes come from ``os.urandom`` (the kernel CSPRNG) for 256 tokens at a time, encoded
at once: a token is a slice of that text, not one system call and one encoding each. UUIDs are
made the same way from the process PRNG (they are unique, not secret): 64 at a time, as one text
whose dashes, version and variant are set in all of them at once. A forked child starts fresh pools
so no two processes ever hand out the same bytes.
"""

from __future__ import annotations

import os
from binascii import b2a_base64
from random import getrandbits

TOKEN_BYTES = 18  # random bits of a token: 144, whole base64 groups (no padding)
TOKEN_CHARS = TOKEN_BYTES // 3 * 4
_POOL_TOKENS = 256
_URLSAFE = bytes.maketrans(b"+/", b"-_")  # base64 -> its URL-safe alphabet


class _Pool:
    """Random text handed out in slices of ``width`` characters: the text and where the next slice
    starts; :meth:`fill` makes the next text when this one is used up."""

    __slots__ = ("text", "pos", "width")

    def __init__(self, width: int):
        self.text = ""
        self.pos = 0
        self.width = width

    def reset(self) -> None:
        self.text, self.pos = "", 0

    def take(self) -> str:
        i = self.pos
        text = self.text
        if i >= len(text):
            text = self.text = self.fill()
            i = 0
        self.pos = i + self.width
        return text[i:i + self.width]

    def fill(self) -> str:
        raise NotImplementedError


class _TokenPool(_Pool):
    """URL-safe base64 of random bytes: TOKEN_CHARS characters a token (each slice that starts at a
    whole group of 3 bytes is the encoding of those bytes)."""

    __slots__ = ()

    def fill(self) -> str:
        return b2a_base64(os.urandom(TOKEN_BYTES * _POOL_TOKENS), newline=False).translate(_URLSAFE).decode("ascii")


class _UuidPool(_Pool):
    """UUID text, 36 characters a UUID (see _UUID_LAYOUT)."""

    __slots__ = ()

    def fill(self) -> str:
        n = len(_UUID_LAYOUT) * _POOL_UUIDS
        return ((getrandbits(8 * n) & _UUID_CLEAR) | _UUID_SET).to_bytes(n, "big").translate(_UUID_TEXT).decode("ascii")


_tokens = _TokenPool(TOKEN_CHARS)
_POOL_UUIDS = 64
# A pool of UUIDs is made as one byte a character: random bytes, masked so that each is a hex digit's
# value (0-15) or a fixed character (16, a dash; the version 4; the RFC 4122 variant's high bits 10),
# then translated to the text at once.
_UUID_LAYOUT = "xxxxxxxx-xxxx-4xxx-vxxx-xxxxxxxxxxxx"  # x: a random hex digit, v: 8, 9, a or b
_UUID_MASK = bytes({"x": 15, "v": 3}.get(c, 0) for c in _UUID_LAYOUT)
_UUID_FIXED = bytes({"-": 16, "4": 4, "v": 8}.get(c, 0) for c in _UUID_LAYOUT)
_UUID_CLEAR = int.from_bytes(_UUID_MASK * _POOL_UUIDS, "big")
_UUID_SET = int.from_bytes(_UUID_FIXED * _POOL_UUIDS, "big")
_UUID_TEXT = bytes.maketrans(bytes(range(17)), b"0123456789abcdef-")
_uuids = _UuidPool(len(_UUID_LAYOUT))


def _reset_pool() -> None:
    _tokens.reset()
    _uuids.reset()


os.register_at_fork(after_in_child=_reset_pool)


def random_token() -> str:
    """TOKEN_BYTES random bytes as unpadded URL-safe base64."""
    p = _tokens
    return p.take()


def random_uuid4() -> str:
    """A version-4 UUID string (RFC 4122 variant) from the process PRNG: unique ids for gateway
    events, not secrets."""
    p = _uuids
    return p.take()


class TokenIssuer:
    """Connection tokens and correlation ids: ``<prefix><144 random bits>``.

    The prefix (``<node>.w<worker>.`` when clustered, else empty) routes a token to
    the worker that issued it; the random part makes it unguessable."""

    __slots__ = ("prefix",)

    def __init__(self, prefix: str = ""):
        self.prefix = prefix

    def new(self) -> str:
        return self.prefix + random_token()
