"""Authorization: bearer tokens and JWT verification, the session blacklist,
SUBSCRIPTION_CHECK / SUBMISSION_CHECK, and the new-connection rate limit."""

from rigfast.auth.blacklist import Blacklist
from rigfast.auth.checks import Check, make_check
from rigfast.auth.ratelimit import ConnectionRateLimiter
from rigfast.auth.tokens import InvalidToken, TokenVerifier, tokens_from_request

__all__ = [
    "Blacklist",
    "Check",
    "ConnectionRateLimiter",
    "InvalidToken",
    "TokenVerifier",
    "make_check",
    "tokens_from_request",
]
