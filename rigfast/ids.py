"""Unguessable tokens, cheaply: connection tokens, correlation ids.

Random bytes come from ``os.urandom`` (the kernel CSPRNG) 4 KiB at a time
instead of one system call per token; a forked child starts a fresh pool so
no two processes ever hand out the same bytes.
"""

from __future__ import annotations

import os
from binascii import b2a_base64

_POOL_BYTES = 4096
_URLSAFE = bytes.maketrans(b"+/", b"-_")  # base64 -> its URL-safe alphabet
_pool = b""
_pos = 0


def _reset_pool() -> None:
    global _pool, _pos
    _pool, _pos = b"", 0


os.register_at_fork(after_in_child=_reset_pool)


def random_token(nbytes: int = 18) -> str:
    """``nbytes`` random bytes (default 144 bits) as unpadded URL-safe base64."""
    global _pool, _pos
    if _pos + nbytes > len(_pool):
        _pool, _pos = os.urandom(max(_POOL_BYTES, nbytes)), 0
    chunk = _pool[_pos:_pos + nbytes]
    _pos += nbytes
    # base64.urlsafe_b64encode, without its two Python-level calls
    return b2a_base64(chunk, newline=False).translate(_URLSAFE).rstrip(b"=").decode("ascii")


class TokenIssuer:
    """Connection tokens and correlation ids: ``<prefix><144 random bits>``.

    The prefix (``<node>.w<worker>.`` when clustered, else empty) routes a token to
    the worker that issued it; the random part makes it unguessable."""

    __slots__ = ("prefix",)

    def __init__(self, prefix: str = ""):
        self.prefix = prefix

    def new(self) -> str:
        return self.prefix + random_token()
