"""Authorization end to end: JWTs (HS/RS/ES), SUBSCRIPTION_CHECK / SUBMISSION_CHECK, external checkers, rate limit."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import quote

import httpx
import jwt as pyjwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.conftest import JWT_SECRET, start_gateway
from tests.helpers import T, LongPoll, free_port, make_event, open_sse, publish, uid

SSE_PATH = "/_rig/v1/connection/sse"
WS_PATH = "/_rig/v1/connection/ws"
LP_PATH = "/_rig/v1/connection/longpolling"
# SUBSCRIPTION_CHECK runs on connect only when the request names subscriptions (as in RIG)
NAMED = [{"eventType": "auth-test"}]
NAMED_Q = "?subscriptions=" + quote(json.dumps(NAMED), safe="")


def mint(claims: dict | None = None, key=JWT_SECRET, alg: str = "HS256", exp_in: float | None = 300, **extra) -> str:
    """A real token signed by pyjwt; ``exp`` is ``exp_in`` seconds from now (None: no exp)."""
    body = {"jti": uid("jti")}
    if exp_in is not None:
        body["exp"] = int(time.time() + exp_in)
    body.update(claims or {})
    body.update(extra)
    return pyjwt.encode(body, key, algorithm=alg)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forged(header: dict, claims: dict, signature: bytes = b"") -> str:
    """A token assembled by hand (alg none, algorithm confusion)."""
    head = _b64(json.dumps(header).encode()) + "." + _b64(json.dumps(claims).encode())
    return head + "." + _b64(signature)


def bearer(token: str) -> dict:
    return {"authorization": f"Bearer {token}"}


def sse_status(gw, token: str | None = None, headers=None, subscriptions=None) -> tuple[int, str]:
    """Status and (for refusals) body of an SSE connect; a 200 stream is closed after its handshake."""
    with open_sse(gw.inbound, subscriptions, jwt=token, headers=headers) as s:
        if s.status_code != 200:
            return s.status_code, s.body_text()
        s.expect_handshake()
        return 200, ""


def ws_url(gw, token: str | None = None, subscriptions=None, scheme: str = "ws") -> str:
    q = []
    if subscriptions is not None:
        q.append("subscriptions=" + quote(json.dumps(subscriptions), safe=""))
    if token is not None:
        q.append("jwt=" + quote(token, safe=""))
    return f"{scheme}://127.0.0.1:{gw.port}{WS_PATH}" + ("?" + "&".join(q) if q else "")


async def ws_first_or_close(url: str, **kw):
    """('event', first JSON frame) or ('close', (code, reason)) for a WS connect."""
    async with connect(url, ping_interval=None, open_timeout=T, close_timeout=T, **kw) as ws:
        try:
            msg = await asyncio.wait_for(ws.recv(), T)
        except ConnectionClosed as exc:
            assert exc.rcvd is not None, "closed without a close frame"
            return "close", (exc.rcvd.code, exc.rcvd.reason)
        return "event", json.loads(msg)


# ------------------------------------------------------------------ jwt_validation


@pytest.fixture(scope="module")
def jwt_gw():
    """SUBSCRIPTION_CHECK and SUBMISSION_CHECK both jwt_validation (HS256)."""
    gw = start_gateway(SUBSCRIPTION_CHECK="jwt_validation", SUBMISSION_CHECK="jwt_validation")
    yield gw
    gw.stop()


def test_sse_without_token_is_403_with_message(jwt_gw):
    """jwt_validation: an SSE connect naming subscriptions without any token is refused with 403 and a reason."""
    status, body = sse_status(jwt_gw, subscriptions=NAMED)
    assert status == 403
    assert "denied" in body and "token" in body


def test_sse_with_query_token_accepted(jwt_gw):
    """jwt_validation: a valid token in the jwt query parameter opens the stream."""
    assert sse_status(jwt_gw, mint())[0] == 200


def test_sse_with_authorization_header_accepted(jwt_gw):
    """jwt_validation: a valid token in an Authorization: Bearer header opens the stream."""
    assert sse_status(jwt_gw, headers=bearer(mint()))[0] == 200


def test_one_valid_among_several_authorization_headers(jwt_gw):
    """Several Authorization headers: all valid opens the stream; RIG decodes every token, so one bad one is 400."""
    headers = [("authorization", f"Bearer {mint()}"), ("authorization", f"Bearer {mint()}")]
    with httpx.Client(timeout=T) as c, c.stream("GET", jwt_gw.inbound + SSE_PATH + NAMED_Q, headers=headers) as r:
        assert r.status_code == 200
        assert next(r.iter_lines()).startswith("event: rig.connection.create")
    headers = [("authorization", "Bearer not.a.jwt"), ("authorization", f"Bearer {mint()}")]
    r = httpx.get(jwt_gw.inbound + SSE_PATH + NAMED_Q, headers=headers, timeout=T)
    assert r.status_code == 400 and "token #1" in r.text, r.text


@pytest.mark.parametrize(
    "make_token, why",
    [
        (lambda: mint(exp_in=-120), "expired"),
        (lambda: mint(exp_in=None), "exp"),
        (lambda: mint(nbf=int(time.time()) + 300), "not yet valid"),
        (lambda: mint(key="another-secret-of-sufficient-length-0123"), "signature"),
        (lambda: forged({"alg": "none", "typ": "JWT"}, {"exp": int(time.time()) + 300}), "algorithm"),
        (lambda: "garbage", "malformed"),
    ],
    ids=["expired", "no-exp", "nbf-future", "wrong-secret", "alg-none", "garbage"],
)
def test_bad_tokens_refused(jwt_gw, make_token, why):
    """Expired, exp-less, not-yet-valid, wrongly signed, alg=none and malformed tokens are all 400 (as RIG)."""
    status, body = sse_status(jwt_gw, make_token())
    assert status == 400, body
    assert why in body


def test_exp_within_leeway_accepted(jwt_gw):
    """A token that expired a couple of seconds ago is still accepted (clock-skew leeway)."""
    assert sse_status(jwt_gw, mint(exp_in=-2))[0] == 200


def test_ws_without_token_closed_with_reason(jwt_gw):
    """jwt_validation: a WS connect naming subscriptions without a token: close 1000 "Bad request." (RIG's)."""
    kind, val = asyncio.run(ws_first_or_close(ws_url(jwt_gw, subscriptions=NAMED)))
    assert kind == "close"
    assert val == (1000, "Bad request.")


def test_ws_with_token_accepted(jwt_gw):
    """jwt_validation: a WS connect with a valid token starts with rig.connection.create."""
    kind, val = asyncio.run(ws_first_or_close(ws_url(jwt_gw, mint())))
    assert kind == "event" and val["type"] == "rig.connection.create"


def test_longpolling_needs_token(jwt_gw):
    """jwt_validation: long-polling naming subscriptions without a token is 403, with one it creates a session."""
    lp = LongPoll(jwt_gw.inbound, subscriptions=NAMED)
    try:
        r = lp.poll()
        assert r.status_code == 403, r.text
        lp.headers = bearer(mint())
        r = lp.poll()
        assert r.status_code == 200 and r.json() == "ok"
        assert [e["type"] for e in lp.events()][:2] == ["rig.connection.create", "rig.subscriptions_set"]
    finally:
        lp.close()


def test_put_subscriptions_checked(jwt_gw):
    """PUT .../subscriptions is checked with that request's own token: 403 without, 204 with."""
    etype = uid("put-auth")
    with open_sse(jwt_gw.inbound, jwt=mint()) as s:
        conn, _ = s.expect_handshake()
        url = f"{jwt_gw.inbound}/_rig/v1/connection/sse/{conn}/subscriptions"
        body = {"subscriptions": [{"eventType": etype}]}
        r = httpx.put(url, json=body, timeout=T)
        assert r.status_code == 403, r.text
        r = httpx.put(url, json=body, headers=bearer(mint()), timeout=T)
        assert r.status_code == 204, r.text
        assert s.next_event().data["data"] == [{"eventType": etype, "oneOf": []}]


def test_submission_checked_but_v3_messages_trusted(jwt_gw):
    """SUBMISSION_CHECK guards POST /_rig/v1/events; /v3/messages on the internal port is not checked."""
    etype = uid("sub-auth")
    with open_sse(jwt_gw.inbound, [{"eventType": etype}], jwt=mint()) as s:
        s.expect_handshake()
        r = publish(jwt_gw.inbound, make_event(etype, {"n": 0}))
        assert r.status_code == 403 and "denied" in r.text
        r = publish(jwt_gw.inbound, make_event(etype, {"n": 1}), headers=bearer(mint()))
        assert r.status_code == 202, r.text
        r = publish(jwt_gw.api, make_event(etype, {"n": 2}), path="/v3/messages")
        assert r.status_code == 202, r.text
        assert [s.next_event().data["data"]["n"] for _ in range(2)] == [1, 2]


# ------------------------------------------------------------- automatic subscriptions


def test_automatic_subscriptions_merged_and_recomputed_on_put(gateway):
    """JWT claims give automatic subscriptions merged with manual ones; PUT recomputes them from its own token."""
    alice, bob, etype = uid("alice"), uid("bob"), uid("manual")
    manual = [{"eventType": etype}]
    with open_sse(gateway.inbound, manual, jwt=mint({"username": alice})) as s:
        conn, subs = s.expect_handshake()
        assert {"eventType": "greeting", "oneOf": [{"name": alice}]} in subs
        assert {"eventType": etype, "oneOf": []} in subs
        etype2 = uid("manual2")
        r = httpx.put(
            f"{gateway.inbound}/_rig/v1/connection/sse/{conn}/subscriptions",
            json={"subscriptions": [{"eventType": etype2}]},
            headers=bearer(mint({"username": bob})),
            timeout=T,
        )
        assert r.status_code == 204, r.text
        subs = s.next_event().data["data"]
        assert sorted(subs, key=json.dumps) == sorted(
            [{"eventType": "greeting", "oneOf": [{"name": bob}]}, {"eventType": etype2, "oneOf": []}], key=json.dumps
        )
        publish(gateway.inbound, make_event("greeting", {"name": alice}))
        hit = make_event("greeting", {"name": bob})
        assert publish(gateway.inbound, hit).status_code == 202
        assert s.next_event().data["id"] == hit["id"]


# ------------------------------------------------------------------ RS / ES keys


def _pem_public(private_key) -> str:
    return private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def test_rs256_inline_pem_and_algorithm_confusion(gateway_factory):
    """RS256 with an inline PEM public key: RS tokens verify; an HS256 token keyed with the public PEM is refused."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = _pem_public(key)
    gw = gateway_factory(JWT_ALG="RS256", JWT_SECRET_KEY=pem, SUBSCRIPTION_CHECK="jwt_validation")
    assert sse_status(gw, mint(key=key, alg="RS256"))[0] == 200
    head = {"alg": "HS256", "typ": "JWT"}
    claims = {"exp": int(time.time()) + 300, "jti": uid()}
    unsigned = forged(head, claims).rsplit(".", 1)[0]
    sig = hmac.new(pem.encode(), unsigned.encode(), hashlib.sha256).digest()
    status, body = sse_status(gw, unsigned + "." + _b64(sig))
    assert status == 400 and "algorithm" in body
    assert sse_status(gw, mint(key=rsa.generate_private_key(public_exponent=65537, key_size=2048), alg="RS256"))[0] == 400


def test_es256_public_key_file(gateway_factory, tmp_path):
    """ES256 with JWT_SECRET_KEY naming a PEM file: tokens of that key verify, tokens of another key do not."""
    key = ec.generate_private_key(ec.SECP256R1())
    path = tmp_path / "es256.pub.pem"
    path.write_text(_pem_public(key))
    gw = gateway_factory(JWT_ALG="ES256", JWT_SECRET_KEY=str(path), SUBSCRIPTION_CHECK="jwt_validation")
    assert sse_status(gw, mint(key=key, alg="ES256"))[0] == 200
    status, body = sse_status(gw, mint(key=ec.generate_private_key(ec.SECP256R1()), alg="ES256"))
    assert status == 400 and "signature" in body


# ------------------------------------------------------------------ external checker


class Checker:
    """An authorization service on loopback: answers by ``mode`` and records what it was sent."""

    def __init__(self) -> None:
        self.mode = "allow"
        self.requests: list[dict] = []
        self.release = threading.Event()
        checker = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):  # noqa: N802
                n = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(n)
                checker.requests.append(
                    {"path": self.path, "auth": self.headers.get_all("authorization") or [], "body": json.loads(body)}
                )
                if checker.mode == "slow":
                    checker.release.wait(3 * T)
                allow = checker.mode == "allow" or (
                    checker.mode == "deny_marked" and not (checker.requests[-1]["body"].get("data") or {}).get("deny")
                )
                status = 204 if allow else 403
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def checker():
    c = Checker()
    yield c
    c.close()


@pytest.fixture(scope="module")
def url_gw(checker):
    """Both checks point at the test's checker; short check timeout."""
    gw = start_gateway(
        SUBSCRIPTION_CHECK=checker.url + "/subscribe",
        SUBMISSION_CHECK=checker.url + "/submit",
        RIGFAST_CHECK_TIMEOUT_S="0.5",
    )
    yield gw
    gw.stop()


@pytest.fixture
def mode(checker):
    """Set the checker's mode for one test; back to allow afterwards."""
    checker.requests.clear()

    def set_mode(m: str) -> None:
        checker.mode = m

    yield set_mode
    checker.mode = "allow"


def test_url_check_allows_and_gets_subscriptions_and_authorization(url_gw, checker, mode):
    """An allowing checker (2xx) lets the SSE connect; it got the subscriptions JSON and the forwarded token."""
    mode("allow")
    token, etype = mint(), uid("chk")
    assert sse_status(url_gw, headers=bearer(token), subscriptions=[{"eventType": etype}])[0] == 200
    req = checker.requests[-1]
    assert req["path"] == "/subscribe"
    assert req["auth"] == [f"Bearer {token}"]
    assert {"eventType": etype, "oneOf": []} in req["body"]["subscriptions"]


def test_url_check_denies(url_gw, mode):
    """A checker answering 403 refuses SSE (403), WS (close 1000 "Bad request.") and long-polling (403)."""
    mode("deny")
    status, body = sse_status(url_gw, subscriptions=NAMED)
    assert status == 403 and "403" in body
    kind, (code, reason) = asyncio.run(ws_first_or_close(ws_url(url_gw, subscriptions=NAMED)))
    assert kind == "close" and (code, reason) == (1000, "Bad request.")
    assert httpx.get(url_gw.inbound + LP_PATH + NAMED_Q, timeout=T).status_code == 403


def test_url_check_timeout_denies(url_gw, checker, mode):
    """A checker that does not answer within RIGFAST_CHECK_TIMEOUT_S denies with 403."""
    mode("slow")
    checker.release.clear()
    started = time.monotonic()
    status, body = sse_status(url_gw, subscriptions=NAMED)
    elapsed = time.monotonic() - started
    checker.release.set()
    assert status == 403 and "did not answer" in body
    assert elapsed < T


def test_url_submission_check(url_gw, checker, mode):
    """SUBMISSION_CHECK URL: the checker gets the event JSON; 2xx accepts (202), anything else refuses (403)."""
    mode("allow")
    ev = make_event(uid("sub"), {"x": 1})
    r = publish(url_gw.inbound, ev, headers=bearer("opaque-token"))
    assert r.status_code == 202, r.text
    req = checker.requests[-1]
    assert req["path"] == "/submit" and req["body"] == ev and req["auth"] == ["Bearer opaque-token"]
    mode("deny")
    assert publish(url_gw.inbound, make_event(uid("sub"))).status_code == 403


def test_url_submission_check_batch_refuses_all_naming_the_index(url_gw, checker, mode):
    """A batch: the checker sees every event; one refused event refuses the batch (403, its index), none is delivered."""
    mode("deny_marked")
    etype = uid("bchk")
    with open_sse(url_gw.inbound, [{"eventType": etype}]) as s:
        s.expect_handshake()
        batch = [make_event(etype, {"i": 0}), make_event(etype, {"i": 1}), make_event(etype, {"i": 2, "deny": True})]
        r = httpx.post(url_gw.inbound + "/_rig/v1/events", content=json.dumps(batch),
                       headers={"content-type": "application/cloudevents-batch+json"}, timeout=T)
        assert r.status_code == 403, r.text
        assert "event 2" in r.text
        assert sorted(q["body"]["data"]["i"] for q in checker.requests if q["path"] == "/submit") == [0, 1, 2]
        mode("allow")
        marker = make_event(etype, {"marker": True})
        assert publish(url_gw.inbound, marker).status_code == 202
        assert s.next_event().data == marker  # nothing of the refused batch came first


def test_url_check_put_subscriptions(url_gw, mode):
    """PUT .../subscriptions goes through the URL check too: 204 allowed, 403 denied."""
    mode("allow")
    with open_sse(url_gw.inbound) as s:
        conn, _ = s.expect_handshake()
        url = f"{url_gw.inbound}/_rig/v1/connection/sse/{conn}/subscriptions"
        body = {"subscriptions": [{"eventType": uid("p")}]}
        assert httpx.put(url, json=body, timeout=T).status_code == 204
        mode("deny")
        assert httpx.put(url, json=body, timeout=T).status_code == 403


def test_unreachable_checker_denies(gateway_factory):
    """A checker URL nobody listens on denies (403), for subscriptions and submissions."""
    url = f"http://127.0.0.1:{free_port()}/check"
    gw = gateway_factory(SUBSCRIPTION_CHECK=url, SUBMISSION_CHECK=url)
    status, body = sse_status(gw, subscriptions=NAMED)
    assert status == 403 and "unreachable" in body
    assert publish(gw.inbound, make_event(uid("u"))).status_code == 403


# ------------------------------------------------------------------ rate limit


def test_connection_rate_limit_429_with_retry_after(gateway_factory):
    """MAX_CONNECTIONS_PER_MINUTE: past the allowance new connections get 429 with Retry-After."""
    gw = gateway_factory(MAX_CONNECTIONS_PER_MINUTE="2")
    assert sse_status(gw)[0] == 200
    assert sse_status(gw)[0] == 200
    for path in (SSE_PATH, LP_PATH):
        r = httpx.get(gw.inbound + path, timeout=T)
        assert r.status_code == 429, r.text
        assert "MAX_CONNECTIONS_PER_MINUTE" in r.text
        assert 1 <= int(r.headers["retry-after"]) <= 60
    r = httpx.get(gw.inbound + "/_rig/health", timeout=T)
    assert r.status_code == 200
