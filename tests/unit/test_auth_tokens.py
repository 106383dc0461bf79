"""Bearer token extraction and JWT verification (rigfast.auth.tokens)."""

from __future__ import annotations

import base64
import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from rigfast.auth.tokens import InvalidToken, TokenVerifier, tokens_from_request
from rigfast.config import ConfigError

SECRET = "a-test-secret-that-is-long-enough-for-hs512-0123456789abcdef-0123456789"


def _pem_public(private_key) -> str:
    return (
        private_key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def _pem_private(private_key) -> str:
    return private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


@pytest.fixture(scope="module")
def rsa_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec256_key():
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def ec384_key():
    return ec.generate_private_key(ec.SECP384R1())


def _claims(**extra):
    now = time.time()
    c = {"exp": now + 300, "jti": "session-1", "sub": "alice"}
    c.update(extra)
    return {k: v for k, v in c.items() if v is not None}


def _hs(claims, alg="HS256", key=SECRET, headers=None):
    return jwt.encode(claims, key, algorithm=alg, headers=headers)


# -- tokens_from_request ------------------------------------------------------


def test_single_bearer_header():
    """One Authorization: Bearer header gives its token."""
    assert tokens_from_request([(b"authorization", b"Bearer abc.def.ghi")], []) == ["abc.def.ghi"]


def test_several_bearer_headers_and_case_insensitivity():
    """Several headers, any header-name case and any scheme case are all collected, in order."""
    headers = [
        (b"Authorization", b"Bearer one"),
        (b"content-type", b"application/json"),
        (b"AUTHORIZATION", b"bearer two"),
        (b"authorization", b"BEARER   three  "),
    ]
    assert tokens_from_request(headers, []) == ["one", "two", "three"]


def test_comma_separated_list_in_one_header():
    """A comma-separated list of bearer credentials in one header yields each token."""
    assert tokens_from_request([(b"authorization", b"Bearer a.b.c, Bearer d.e.f")], []) == ["a.b.c", "d.e.f"]


def test_other_schemes_ignored():
    """Basic credentials and a bare scheme are not tokens."""
    headers = [(b"authorization", b"Basic dXNlcjpwYXNz"), (b"authorization", b"Bearer"), (b"authorization", b"")]
    assert tokens_from_request(headers, []) == []


def test_str_headers_accepted():
    """Headers given as str pairs work the same as bytes."""
    assert tokens_from_request([("Authorization", "Bearer tok")], []) == ["tok"]


def test_jwt_query_parameter_with_and_without_bearer_prefix():
    """jwt query values are tokens; a leading 'Bearer ' is stripped; header tokens come first."""
    out = tokens_from_request([(b"authorization", b"Bearer h")], ["q1", "Bearer q2", "bearer q3", ""])
    assert out == ["h", "q1", "q2", "q3"]


def test_duplicates_dropped():
    """The same token in a header and the query counts once."""
    assert tokens_from_request([(b"authorization", b"Bearer t")], ["t"]) == ["t"]


def test_control_characters_dropped():
    """A query token with CR/LF or spaces is dropped, so it can never be forwarded as a header."""
    assert tokens_from_request([], ["evil\r\nx-injected: 1", "a b", "ok"]) == ["ok"]


# -- TokenVerifier: HS --------------------------------------------------------


def test_hs256_valid_token():
    """A token signed with the secret verifies and returns its claims."""
    v = TokenVerifier("HS256", SECRET)
    claims = v.verify(_hs(_claims(username="alice")))
    assert claims["username"] == "alice"


@pytest.mark.parametrize("alg", ["HS384", "HS512"])
def test_hs384_hs512(alg):
    """HS384 and HS512 verify with the configured secret."""
    v = TokenVerifier(alg, SECRET)
    assert v.verify(_hs(_claims(), alg=alg))["sub"] == "alice"


def test_bad_signature():
    """A token signed with another secret is rejected as a bad signature."""
    v = TokenVerifier("HS256", SECRET)
    with pytest.raises(InvalidToken, match="signature"):
        v.verify(_hs(_claims(), key="another-secret-also-long-enough-for-hs256-xxxxxxxx"))


def test_other_hs_alg_than_configured_rejected():
    """An HS512 token is refused when HS256 is configured (only the configured alg)."""
    v = TokenVerifier("HS256", SECRET)
    with pytest.raises(InvalidToken, match="algorithm"):
        v.verify(_hs(_claims(), alg="HS512"))


def test_expired_token():
    """A token past exp (beyond the leeway) is rejected."""
    v = TokenVerifier("HS256", SECRET, leeway_s=10)
    with pytest.raises(InvalidToken, match="expired"):
        v.verify(_hs(_claims(exp=time.time() - 60)))


def test_expiry_leeway():
    """A token expired by less than the leeway is still accepted."""
    v = TokenVerifier("HS256", SECRET, leeway_s=10)
    assert v.verify(_hs(_claims(exp=time.time() - 3)))


def test_not_yet_valid():
    """A token whose nbf is in the future (beyond the leeway) is rejected, and not cached."""
    now = [time.time()]
    v = TokenVerifier("HS256", SECRET, leeway_s=10, clock=lambda: now[0])
    tok = _hs(_claims(nbf=now[0] + 60))
    with pytest.raises(InvalidToken, match="not yet valid"):
        v.verify(tok)
    now[0] += 61
    assert v.verify(tok)["sub"] == "alice"


def test_missing_exp():
    """A token without exp is rejected (RIG accepts only tokens with exp)."""
    v = TokenVerifier("HS256", SECRET)
    with pytest.raises(InvalidToken, match="exp"):
        v.verify(_hs({"sub": "alice"}))


def test_non_numeric_exp():
    """An exp that is not a number is rejected."""
    v = TokenVerifier("HS256", SECRET)
    with pytest.raises(InvalidToken):
        v.verify(_hs({"sub": "alice", "exp": "tomorrow"}))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_alg_none_rejected():
    """An unsigned token (alg none) is rejected."""
    header = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    payload = _b64(json.dumps(_claims()).encode())
    v = TokenVerifier("HS256", SECRET)
    with pytest.raises(InvalidToken):
        v.verify(f"{header}.{payload}.")


def test_malformed_token():
    """Garbage is rejected as malformed."""
    v = TokenVerifier("HS256", SECRET)
    with pytest.raises(InvalidToken, match="malformed"):
        v.verify("not-a-jwt")


def test_empty_key_rejects_everything():
    """With JWT_SECRET_KEY empty every token is invalid, saying so."""
    v = TokenVerifier("HS256", "")
    assert not v.configured
    with pytest.raises(InvalidToken, match="JWT_SECRET_KEY is not set"):
        v.verify(_hs(_claims()))


def test_unsupported_alg_config_error():
    """An unknown JWT_ALG is a ConfigError naming it."""
    with pytest.raises(ConfigError, match="JWT_ALG"):
        TokenVerifier("PS256", SECRET)


def test_bad_session_field_config_error():
    """A JWT_SESSION_FIELD that is not a JSON pointer is a ConfigError naming it."""
    with pytest.raises(ConfigError, match="JWT_SESSION_FIELD"):
        TokenVerifier("HS256", SECRET, session_field="jti")


# -- TokenVerifier: RS / ES ---------------------------------------------------


def test_rs256_inline_pem(rsa_key):
    """RS256 with an inline PEM public key verifies a token signed with the private key."""
    v = TokenVerifier("RS256", _pem_public(rsa_key))
    tok = jwt.encode(_claims(), rsa_key, algorithm="RS256")
    assert v.verify(tok)["jti"] == "session-1"


def test_rs256_pem_file(rsa_key, tmp_path):
    """RS256 with JWT_SECRET_KEY as the path of a PEM file."""
    path = tmp_path / "pub.pem"
    path.write_text(_pem_public(rsa_key))
    v = TokenVerifier("RS256", str(path))
    assert v.verify(jwt.encode(_claims(), rsa_key, algorithm="RS256"))["sub"] == "alice"


def test_rs256_inline_pem_with_escaped_newlines(rsa_key):
    """Inline PEM whose newlines arrived as literal \\n (env files) is accepted."""
    v = TokenVerifier("RS256", _pem_public(rsa_key).replace("\n", "\\n"))
    assert v.verify(jwt.encode(_claims(), rsa_key, algorithm="RS256"))


def test_rs256_wrong_key(rsa_key):
    """A token signed by another RSA key fails the signature check."""
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    v = TokenVerifier("RS256", _pem_public(rsa_key))
    with pytest.raises(InvalidToken, match="signature"):
        v.verify(jwt.encode(_claims(), other, algorithm="RS256"))


def test_algorithm_confusion_rejected(rsa_key):
    """An HS256 token using the RSA public PEM as HMAC secret fails against an RS256 config."""
    pub_pem = _pem_public(rsa_key)
    # pyjwt refuses to sign with a PEM as HMAC secret, so build the token by hand.
    import hashlib
    import hmac

    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = _b64(json.dumps(_claims()).encode())
    sig = hmac.new(pub_pem.encode(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
    forged = f"{header}.{payload}.{_b64(sig)}"
    v = TokenVerifier("RS256", pub_pem)
    with pytest.raises(InvalidToken, match="algorithm"):
        v.verify(forged)


def test_es256_inline_and_file(ec256_key, tmp_path):
    """ES256 verifies with the EC public key inline and from a file."""
    pem = _pem_public(ec256_key)
    path = tmp_path / "ec.pem"
    path.write_text(pem)
    tok = jwt.encode(_claims(), ec256_key, algorithm="ES256")
    assert TokenVerifier("ES256", pem).verify(tok)["sub"] == "alice"
    assert TokenVerifier("ES256", str(path)).verify(tok)["sub"] == "alice"


def test_es384(ec384_key):
    """ES384 verifies with a P-384 key."""
    tok = jwt.encode(_claims(), ec384_key, algorithm="ES384")
    assert TokenVerifier("ES384", _pem_public(ec384_key)).verify(tok)


def test_es_curve_mismatch_config_error(ec256_key):
    """ES384 configured with a P-256 key is a ConfigError naming JWT_SECRET_KEY."""
    with pytest.raises(ConfigError, match="JWT_SECRET_KEY"):
        TokenVerifier("ES384", _pem_public(ec256_key))


def test_rs_with_ec_key_config_error(ec256_key):
    """RS256 configured with an EC key is a ConfigError."""
    with pytest.raises(ConfigError, match="JWT_SECRET_KEY"):
        TokenVerifier("RS256", _pem_public(ec256_key))


def test_private_key_pem_accepted(rsa_key):
    """A private key PEM is accepted; only its public half is used."""
    v = TokenVerifier("RS256", _pem_private(rsa_key))
    assert v.verify(jwt.encode(_claims(), rsa_key, algorithm="RS256"))


def test_unreadable_key_file_config_error(tmp_path):
    """A key path that cannot be read is a ConfigError naming JWT_SECRET_KEY."""
    with pytest.raises(ConfigError, match="JWT_SECRET_KEY.*cannot read"):
        TokenVerifier("RS256", str(tmp_path / "missing.pem"))


def test_invalid_pem_config_error(tmp_path):
    """A file that holds no valid PEM key is a ConfigError naming JWT_SECRET_KEY."""
    path = tmp_path / "junk.pem"
    path.write_text("hello")
    with pytest.raises(ConfigError, match="JWT_SECRET_KEY"):
        TokenVerifier("RS256", str(path))
    with pytest.raises(ConfigError, match="JWT_SECRET_KEY"):
        TokenVerifier("RS256", "-----BEGIN PUBLIC KEY-----\ngarbage\n-----END PUBLIC KEY-----\n")


def test_pem_as_hs_secret_config_error(rsa_key):
    """A PEM key configured as an HS secret is a ConfigError (it would reject every token)."""
    with pytest.raises(ConfigError, match="JWT_SECRET_KEY"):
        TokenVerifier("HS256", _pem_public(rsa_key))


# -- cache --------------------------------------------------------------------


def test_cached_claims_rechecked_for_expiry():
    """A cached valid token is refused once the clock passes its exp."""
    now = [time.time()]
    v = TokenVerifier("HS256", SECRET, leeway_s=5, clock=lambda: now[0])
    tok = _hs(_claims(exp=now[0] + 100))
    assert v.verify(tok)["sub"] == "alice"
    assert v.cache_len() == 1
    assert v.verify(tok) is v.verify(tok)  # served from the cache
    now[0] += 104
    assert v.verify(tok)
    now[0] += 2
    with pytest.raises(InvalidToken, match="expired"):
        v.verify(tok)


def test_cache_is_bounded():
    """The cache never holds more than cache_size tokens and evicts the least recently used."""
    v = TokenVerifier("HS256", SECRET, cache_size=3)
    toks = [_hs(_claims(n=i)) for i in range(5)]
    for t in toks:
        v.verify(t)
    assert v.cache_len() == 3
    v.verify(toks[2])  # refresh
    v.verify(toks[0])  # re-verified, evicts toks[3]
    assert v.cache_len() == 3
    assert set(v._cache) == {toks[2], toks[4], toks[0]}


def test_failures_cached():
    """A token with a bad signature stays rejected when served from the cache."""
    v = TokenVerifier("HS256", SECRET)
    bad = _hs(_claims(), key="x" * 64)
    for _ in range(2):
        with pytest.raises(InvalidToken, match="signature"):
            v.verify(bad)
    assert v.cache_len() == 1


# -- helpers ------------------------------------------------------------------


def test_session_id_pointer():
    """session_id follows JWT_SESSION_FIELD; numbers become text; absent or null gives None."""
    v = TokenVerifier("HS256", SECRET, session_field="/ctx/sid")
    assert v.session_id({"ctx": {"sid": "s-9"}}) == "s-9"
    assert v.session_id({"ctx": {"sid": 42}}) == "42"
    assert v.session_id({"ctx": {}}) is None
    assert v.session_id({"ctx": {"sid": None}}) is None
    assert TokenVerifier("HS256", SECRET).session_id({"jti": "abc"}) == "abc"


def test_verify_all_and_verify_valid():
    """verify_all raises on any bad token; verify_valid keeps the good ones."""
    v = TokenVerifier("HS256", SECRET)
    good = _hs(_claims(sub="a"))
    bad = _hs(_claims(exp=time.time() - 100))
    assert [c["sub"] for c in v.verify_valid([bad, good])] == ["a"]
    with pytest.raises(InvalidToken):
        v.verify_all([good, bad])
