"""The gateway's authorization facade: tokens, checks, automatic-subscription claims, blacklist.

Wraps the pieces in ``rigfast.auth`` into what the routes need, so a route
never touches pyjwt or the checker's HTTP client directly.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any, Awaitable

import orjson

from rigfast.auth.blacklist import Blacklist
from rigfast.auth.checks import NoCheck, make_check
from rigfast.auth.ratelimit import ClientRateLimiter, ConnectionRateLimiter
from rigfast.auth.tokens import InvalidToken, TokenVerifier, tokens_from_request
from rigfast.errors import BadRequest, Forbidden, RigError


CLIENT_MIN_PER_MINUTE = 10


class Authorizer:
    def __init__(self, cfg):
        self.verifier = TokenVerifier(cfg.jwt_alg, cfg.jwt_secret_key, cfg.jwt_session_field)
        self.blacklist = Blacklist()
        self.subscription_check = make_check(
            cfg.subscription_check, self.verifier, self.blacklist, cfg.check_timeout_s, "SUBSCRIPTION_CHECK"
        )
        self.submission_check = make_check(
            cfg.submission_check, self.verifier, self.blacklist, cfg.check_timeout_s, "SUBMISSION_CHECK"
        )
        # MAX_CONNECTIONS_PER_MINUTE is per node: each worker takes its share (the kernel spreads accepts evenly)
        node_per_minute = cfg.max_connections_per_minute
        workers = max(cfg.worker_count, 1)
        per_minute = math.ceil(node_per_minute / workers) if node_per_minute > 0 else node_per_minute
        self.rate_limiter = ConnectionRateLimiter(per_minute)
        # one client address may spend RIGFAST_CLIENT_CONNECTION_SHARE of it (at least 10 a minute a node),
        # so a single client cannot lock every other one out
        per_client = 0
        if node_per_minute > 0 and cfg.client_connection_share < 1:
            per_client = math.ceil(max(CLIENT_MIN_PER_MINUTE, math.ceil(cfg.client_connection_share * node_per_minute)) / workers)
            if per_client >= per_minute:
                per_client = 0  # the node's limit comes first anyway
        self.client_limiter = ClientRateLimiter(per_client)
        # SUBMISSION_CHECK is no_check: a submission is refused only for a blacklisted session's token
        self.submissions_open = type(self.submission_check) is NoCheck

    def tokens(self, req) -> list[str]:
        jwt = req.query.get("jwt", ()) if req.query_string else ()
        if not jwt:
            # most requests carry no token: found so here, without the (plain-Python) parser's call;
            # it reads only fields named like "authorization" (13 characters, any case)
            for name, _ in req.headers:
                if len(name) == 13:
                    break
            else:
                return []
        return tokens_from_request(req.headers, jwt)

    def valid_claims(self, tokens: list[str]) -> list[dict]:
        """Claims of the tokens that verify and whose session is not blacklisted."""
        if not tokens:
            return []
        claims = self.verifier.verify_valid(tokens)
        if claims and len(self.blacklist):
            claims = [c for c in claims if not self._blacklisted(c)]
        return claims

    def _blacklisted(self, claims: dict) -> bool:
        sid = self.verifier.session_id(claims)
        return sid is not None and self.blacklist.contains(sid)

    def verified_claims(self, tokens: list[str]) -> list[dict]:
        """Claims of every token, or BadRequest naming the first that does not verify, has
        expired or belongs to a blacklisted session (RIG decodes every token it is given)."""
        if not tokens:
            return []
        out = []
        for i, tok in enumerate(tokens):
            try:
                claims = self.verifier.verify(tok)
            except InvalidToken as exc:
                raise BadRequest(f"invalid token{f' #{i + 1}' if len(tokens) > 1 else ''}: {exc.message}") from None
            if len(self.blacklist) and self._blacklisted(claims):
                raise BadRequest("the session of this token has been blacklisted")
            out.append(claims)
        return out

    def session_ids(self, claims: list[dict]) -> tuple[str, ...]:
        if not claims:
            return ()
        return tuple(sid for sid in (self.verifier.session_id(c) for c in claims) if sid is not None)

    def refuse_blacklisted(self, tokens: list[str]) -> None:
        """New requests carrying a blacklisted session's token are refused."""
        if tokens and len(self.blacklist):
            for c in self.verifier.verify_valid(tokens):
                if self._blacklisted(c):
                    raise Forbidden("the session of this token has been blacklisted")

    def _check(self, check, tokens: list[str], payload: Any, refuse: bool = True) -> Awaitable | None:
        if refuse:
            self.refuse_blacklisted(tokens)
        if not check.needs_io:
            check.authorize_sync(tokens)
            return None
        body = payload if isinstance(payload, bytes) else orjson.dumps(payload)
        return check.authorize(tokens, body)

    def check_subscription(self, tokens: list[str], subs) -> Awaitable | None:
        """SUBSCRIPTION_CHECK for a connect or a PUT. The tokens' own validity is the caller's
        (``verified_claims``: 400), so a blacklisted token is not refused here first."""
        payload = {"subscriptions": [s.to_json() for s in subs]} if self.subscription_check.needs_io else None
        return self._check(self.subscription_check, tokens, payload, refuse=False)

    def check_submission(self, tokens: list[str], event_json: bytes) -> Awaitable | None:
        if self.submissions_open and (not tokens or not len(self.blacklist)):
            return None  # nothing to check or refuse (the usual submission): no calls
        return self._check(self.submission_check, tokens, event_json)

    def check_submissions(self, tokens: list[str], events_json: list[bytes]) -> Awaitable | None:
        """A batch: the token checks once, an external check per event; a refusal names the event's index."""
        self.refuse_blacklisted(tokens)
        check = self.submission_check
        if not check.needs_io:
            check.authorize_sync(tokens)
            return None
        return self._check_each(check, tokens, events_json)

    async def _check_each(self, check, tokens: list[str], events_json: list[bytes]) -> None:
        results = await asyncio.gather(*(check.authorize(tokens, j) for j in events_json), return_exceptions=True)
        for i, r in enumerate(results):
            if isinstance(r, BaseException):
                if isinstance(r, RigError):
                    raise type(r)(f"event {i} of the batch: {r.message}", r.status)
                raise r

    async def close(self) -> None:
        for c in (self.subscription_check, self.submission_check):
            await c.close()
