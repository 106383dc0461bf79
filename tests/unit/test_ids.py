"""Connection tokens (rigfast.ids): 144 random bits each, URL-safe, never repeated, across pool refills;
event ids: version-4 UUIDs of the RFC 4122 variant, never repeated, across pool refills."""

from __future__ import annotations

import base64
import re
import uuid

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
    left = ids._tokens.text[ids._tokens.pos:]
    ids._reset_pool()  # what a forked child runs
    assert ids.random_token() != left[:ids.TOKEN_CHARS] and ids._tokens.text[ids.TOKEN_CHARS:] != left


def test_uuids_are_version_4_rfc4122_and_unique():
    made = [ids.random_uuid4() for _ in range(3 * ids._POOL_UUIDS + 5)]  # three refills of the pool and some
    assert len(set(made)) == len(made)
    for u in made:
        assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", u), u
        parsed = uuid.UUID(u)
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122 and str(parsed) == u
    # the other bits are random: every hex digit of the free positions shows up over the ids
    free = "".join(u.replace("-", "")[:12] + u.replace("-", "")[13:16] + u.replace("-", "")[17:] for u in made)
    assert set(free) == set("0123456789abcdef")


def test_a_fresh_uuid_pool_after_fork_is_not_the_parents():
    ids.random_uuid4()
    left = ids._uuids.text[ids._uuids.pos:]
    ids._reset_pool()  # what a forked child runs
    assert ids.random_uuid4() != left[:36]
