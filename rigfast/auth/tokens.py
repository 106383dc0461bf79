"""Bearer tokens: finding them in a request and verifying them.

A request may carry several tokens (several ``Authorization`` headers, a
comma-separated list in one header, ``jwt`` query parameters). Each is
verified on its own; what a valid one means is up to the caller (see
``rigfast.auth.checks``).

Verification is the costly part of admitting a connection (an RSA or ECDSA
signature check), and a browser reconnecting presents the same token again
and again, so results are kept in a small LRU keyed by the token string.
A cached success is re-checked against ``exp`` on every use; only failures
that cannot heal with time (bad signature, malformed, missing ``exp``,
already expired) are cached, never "not yet valid".
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections import OrderedDict
from typing import Any, Callable, Iterable, Mapping

import jwt
import orjson
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key, load_pem_public_key

from rigfast.errors import ConfigError
from rigfast.subscriptions import MISSING, compile_pointer

log = logging.getLogger(__name__)

HS_ALGS = ("HS256", "HS384", "HS512")
RS_ALGS = ("RS256", "RS384", "RS512")
ES_ALGS = ("ES256", "ES384")
SUPPORTED_ALGS = HS_ALGS + RS_ALGS + ES_ALGS

_ES_CURVES = {"ES256": ec.SECP256R1, "ES384": ec.SECP384R1}
_HS_MIN_KEY_BYTES = {"HS256": 32, "HS384": 48, "HS512": 64}

# Registered claims are checked here, by our rules; pyjwt only checks the
# signature, the algorithm and that ``exp`` is present.
_DECODE_OPTIONS = {
    "require": ["exp"],
    "verify_signature": True,
    "verify_exp": False,
    "verify_nbf": False,
    "verify_iat": False,
    "verify_aud": False,
    "verify_iss": False,
}

# Tokens longer than this are verified but not cached (bounds cache memory).
_MAX_CACHED_TOKEN_CHARS = 4096


class InvalidToken(Exception):
    """A token that does not authorize anything; ``message`` says why."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


def _is_token_char_safe(tok: str) -> bool:
    # Visible ASCII only: a token is forwarded in a header to URL checks, so
    # a query parameter carrying CR/LF must never get that far.
    return tok.isascii() and tok.isprintable() and " " not in tok


def _strip_bearer(value: str) -> str | None:
    """``Bearer <t>`` -> ``<t>`` (scheme case-insensitive); other schemes -> None."""
    value = value.strip()
    scheme, _, rest = value.partition(" ")
    if scheme.lower() != "bearer":
        return None
    rest = rest.strip()
    return rest or None


def tokens_from_request(
    headers: Iterable[tuple[bytes | str, bytes | str]], query_jwt: Iterable[str] = ()
) -> list[str]:
    """Every bearer token of a request, header ones first, duplicates dropped.

    ``Authorization`` headers (any name case, several allowed, each possibly a
    comma-separated list) give their ``Bearer`` credentials; other schemes are
    ignored. Each ``jwt`` query value is a token, an optional ``Bearer ``
    prefix stripped. Tokens with spaces or control characters are dropped.
    """
    found: list[str] = []
    for name, value in headers:
        if isinstance(name, bytes):
            if len(name) != 13 or name.lower() != b"authorization":
                continue
            value = value.decode("latin-1") if isinstance(value, bytes) else value
        else:
            if len(name) != 13 or name.lower() != "authorization":
                continue
            value = value.decode("latin-1") if isinstance(value, bytes) else value
        for part in value.split(","):
            tok = _strip_bearer(part)
            if tok is not None:
                found.append(tok)
    for raw in query_jwt:
        raw = raw.strip()
        if raw[:7].lower() == "bearer ":
            raw = raw[7:].strip()
        if raw:
            found.append(raw)
    out: list[str] = []
    seen: set[str] = set()
    for tok in found:
        if tok not in seen and _is_token_char_safe(tok):
            seen.add(tok)
            out.append(tok)
    return out


def _load_public_key(alg: str, key: str) -> Any:
    """The verification key for an RS/ES algorithm from inline PEM or a PEM file."""
    text = key.strip()
    if text.startswith("-----BEGIN"):
        source = "inline PEM"
        # Inline PEM passed through env files often arrives with literal "\n".
        if "\n" not in text and "\\n" in text:
            text = text.replace("\\n", "\n")
        data = text.encode("ascii", "replace")
    else:
        source = f"file {key!r}"
        try:
            with open(key, "rb") as fh:
                data = fh.read()
        except OSError as exc:
            raise ConfigError(
                f"JWT_SECRET_KEY: with JWT_ALG={alg} it must be a PEM public key or the path of one; "
                f"cannot read file {key!r}: {exc.strerror}"
            ) from None
    try:
        if b"-----BEGIN CERTIFICATE-----" in data:
            pub = x509.load_pem_x509_certificate(data).public_key()
        elif b"PRIVATE KEY-----" in data:
            # Accepted for convenience; only the public half is kept.
            pub = load_pem_private_key(data, password=None).public_key()
        else:
            pub = load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"JWT_SECRET_KEY ({source}) is not a valid PEM key for {alg}: {exc}") from None
    if alg in RS_ALGS and not isinstance(pub, rsa.RSAPublicKey):
        raise ConfigError(f"JWT_SECRET_KEY ({source}) is not an RSA key, but JWT_ALG is {alg}")
    if alg in ES_ALGS:
        want = _ES_CURVES[alg]
        if not isinstance(pub, ec.EllipticCurvePublicKey) or not isinstance(pub.curve, want):
            raise ConfigError(f"JWT_SECRET_KEY ({source}) is not an EC {want.name} key, but JWT_ALG is {alg}")
    return pub


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class TokenVerifier:
    """Verifies JWTs against the one configured algorithm and key.

    Only ``alg`` is accepted (no ``none``, no HS/RS confusion). ``exp`` is
    required, ``nbf`` honoured, both with ``leeway_s`` of clock skew. Claims
    returned (also from the cache) are shared: treat them as read-only.
    """

    def __init__(
        self,
        alg: str,
        key: str,
        session_field: str = "/jti",
        leeway_s: float = 10,
        *,
        cache_size: int = 4096,
        clock: Callable[[], float] = time.time,
    ):
        if alg not in SUPPORTED_ALGS:
            raise ConfigError(f"JWT_ALG {alg!r} is not supported (one of {', '.join(SUPPORTED_ALGS)})")
        try:
            self._get_session = compile_pointer(session_field)
        except ValueError as exc:
            raise ConfigError(f"JWT_SESSION_FIELD: {exc}") from None
        self.alg = alg
        self.session_field = session_field
        self.leeway_s = float(leeway_s)
        self._clock = clock
        self._algorithms = [alg]
        self._cache_size = max(0, int(cache_size))
        # token -> (claims, exp) on success, or the InvalidToken message on permanent failure
        self._cache: OrderedDict[str, tuple[dict, float] | str] = OrderedDict()
        self._key: Any
        if not key:
            self._key = None
        elif alg in HS_ALGS:
            self._key = key.encode("utf-8")
            self._check_hmac_key(alg, self._key)
        else:
            self._key = _load_public_key(alg, key)

    @staticmethod
    def _check_hmac_key(alg: str, secret: bytes) -> None:
        try:
            jwt.get_algorithm_by_name(alg).prepare_key(secret)
        except jwt.InvalidKeyError as exc:
            raise ConfigError(f"JWT_SECRET_KEY cannot be used with JWT_ALG={alg}: {exc}") from None
        if len(secret) < _HS_MIN_KEY_BYTES[alg]:
            log.warning(
                "JWT_SECRET_KEY is %d bytes long; %s recommends at least %d (RFC 7518 3.2)",
                len(secret),
                alg,
                _HS_MIN_KEY_BYTES[alg],
            )
            # We said it once at start; pyjwt would say it again on every verification.
            category = getattr(getattr(jwt, "warnings", None), "InsecureKeyLengthWarning", None)
            if category is not None:
                warnings.filterwarnings("ignore", category=category)

    @property
    def configured(self) -> bool:
        """False when JWT_SECRET_KEY is empty (every token is then invalid)."""
        return self._key is not None

    def verify(self, token: str) -> dict:
        """The token's claims, or raise InvalidToken saying why not."""
        cache = self._cache
        hit = cache.get(token)
        if hit is not None:
            if type(hit) is str:
                cache.move_to_end(token)
                raise InvalidToken(hit)
            claims, exp = hit  # type: ignore[misc]
            if self._clock() > exp + self.leeway_s:
                cache[token] = "token has expired"
                raise InvalidToken("token has expired")
            cache.move_to_end(token)
            return claims
        try:
            claims, exp = self._verify_uncached(token)
        except InvalidToken as exc:
            if exc.message != "token is not yet valid":
                self._remember(token, exc.message)
            raise
        self._remember(token, (claims, exp))
        return claims

    def _remember(self, token: str, result: tuple[dict, float] | str) -> None:
        if self._cache_size == 0 or len(token) > _MAX_CACHED_TOKEN_CHARS:
            return
        cache = self._cache
        cache[token] = result
        if len(cache) > self._cache_size:
            cache.popitem(last=False)

    def _verify_uncached(self, token: str) -> tuple[dict, float]:
        if self._key is None:
            raise InvalidToken("JWT_SECRET_KEY is not set")
        try:
            claims = jwt.decode(token, self._key, algorithms=self._algorithms, options=_DECODE_OPTIONS)
        except jwt.MissingRequiredClaimError:
            raise InvalidToken("token has no exp claim") from None
        except jwt.InvalidSignatureError:
            raise InvalidToken("token signature is invalid") from None
        except jwt.InvalidAlgorithmError:
            raise InvalidToken(f"token algorithm is not allowed (only {self.alg})") from None
        except jwt.InvalidKeyError as exc:
            raise InvalidToken(f"token cannot be verified: {exc}") from None
        except jwt.DecodeError as exc:
            raise InvalidToken(f"token is malformed: {exc}") from None
        except jwt.InvalidTokenError as exc:
            raise InvalidToken(f"token is invalid: {exc}") from None
        if not isinstance(claims, dict):
            raise InvalidToken("token payload is not a JSON object")
        exp = claims.get("exp")
        if not _number(exp):
            raise InvalidToken("token exp claim is not a number")
        now = self._clock()
        if now > exp + self.leeway_s:
            raise InvalidToken("token has expired")
        nbf = claims.get("nbf")
        if nbf is not None:
            if not _number(nbf):
                raise InvalidToken("token nbf claim is not a number")
            if now < nbf - self.leeway_s:
                raise InvalidToken("token is not yet valid")
        return claims, float(exp)

    def verify_all(self, tokens: Iterable[str]) -> list[dict]:
        """Claims of every token, in order; raise InvalidToken on the first bad one."""
        return [self.verify(t) for t in tokens]

    def verify_valid(self, tokens: Iterable[str]) -> list[dict]:
        """Claims of the tokens that verify; invalid ones are skipped."""
        out = []
        for t in tokens:
            try:
                out.append(self.verify(t))
            except InvalidToken:
                pass
        return out

    def session_id(self, claims: Mapping[str, Any]) -> str | None:
        """The session a token belongs to: the claim at JWT_SESSION_FIELD, as a string.

        Strings are used as they are, numbers as their decimal text, other
        JSON values as their compact JSON. Missing or null: no session.
        """
        value = self._get_session(claims)
        if value is MISSING or value is None:
            return None
        if type(value) is str:
            return value
        if _number(value):
            if isinstance(value, float) and value.is_integer():
                return str(int(value))
            return str(value)
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()

    def cache_len(self) -> int:
        return len(self._cache)
