"""Connection tokens (rigfast.ids): 144 random bits each, URL-safe, never repeated, across pool refills."""

from __future__ import annotations

import base64
import re

from rigfast import ids


def test_tokens_are_unpadded_urlsafe_base64_of_18_random_bytes_and_unique():
    tokens = [ids.TokenIssuer().new() for _ in range(3 * 256 + 7)]  # three refills of the pool and some
    assert len(set(tokens)) == len(tokens)
    for t in tokens:
        assert re.fullmatch(r"[A-Za-z0-9_-]{24}", t), t
        assert len(base64.urlsafe_b64decode(t)) == 18
    assert ids.TokenIssuer("n1.w0.").new().startswith("n1.w0.")


def test_a_fresh_pool_after_fork_is_not_the_parents():
    ids.random_token()
    left = ids._pool[ids._pos:]
    ids._reset_pool()  # what a forked child runs
    assert ids.random_token() != left[:ids.TOKEN_CHARS] and ids._pool[ids.TOKEN_CHARS:] != left
