"""Unguessable tokens, cheaply: connection tokens, correlation ids.

Random bytes come from ``os.urandom`` (the kernel CSPRNG) for 256 tokens at a time, encoded
at once: a token is a slice of that text, not one system call and one encoding each; a forked
child starts a fresh pool so no two processes ever hand out the same bytes.
"""

from __future__ import annotations

import os
from binascii import b2a_base64

TOKEN_BYTES = 18  # random bits of a token: 144, whole base64 groups (no padding)
TOKEN_CHARS = TOKEN_BYTES // 3 * 4
_POOL_TOKENS = 256
_URLSAFE = bytes.maketrans(b"+/", b"-_")  # base64 -> its URL-safe alphabet
_pool = ""  # URL-safe base64 of random bytes: TOKEN_CHARS characters a token
_pos = 0


def _reset_pool() -> None:
    global _pool, _pos
    _pool, _pos = "", 0


os.register_at_fork(after_in_child=_reset_pool)


def random_token() -> str:
    """TOKEN_BYTES random bytes as unpadded URL-safe base64 (each slice of the pool's encoding
    that starts at a whole group of 3 bytes is the encoding of those bytes)."""
    global _pool, _pos
    if _pos >= len(_pool):
        _pool = b2a_base64(os.urandom(TOKEN_BYTES * _POOL_TOKENS), newline=False).translate(_URLSAFE).decode("ascii")
        _pos = 0
    token = _pool[_pos:_pos + TOKEN_CHARS]
    _pos += TOKEN_CHARS
    return token


class TokenIssuer:
    """Connection tokens and correlation ids: ``<prefix><144 random bits>``.

    The prefix (``<node>.w<worker>.`` when clustered, else empty) routes a token to
    the worker that issued it; the random part makes it unguessable."""

    __slots__ = ("prefix",)

    def __init__(self, prefix: str = ""):
        self.prefix = prefix

    def new(self) -> str:
        return self.prefix + random_token()
