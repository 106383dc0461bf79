"""SUBSCRIPTION_CHECK / SUBMISSION_CHECK implementations (rigfast.auth.checks)."""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import time
from pathlib import Path

import jwt
import pytest

from rigfast.auth.blacklist import Blacklist
from rigfast.auth.checks import JwtValidationCheck, NoCheck, UrlCheck, make_check
from rigfast.auth.tokens import TokenVerifier
from rigfast.config import ConfigError
from rigfast.errors import Forbidden
from tests.certs import make_cert

SECRET = "checks-test-secret-0123456789abcdef-0123456789abcdef-0123456789abcdef"
WAIT_S = 5.0  # upper bound on any single test's network activity


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, WAIT_S))


def token(**claims):
    c = {"exp": time.time() + 300, "jti": "sess-1"}
    c.update(claims)
    return jwt.encode(c, SECRET, algorithm="HS256")


@pytest.fixture
def verifier():
    return TokenVerifier("HS256", SECRET)


@pytest.fixture
def blacklist():
    return Blacklist()


# -- a loopback HTTP server for the URL check ---------------------------------


class CheckServer:
    """Answers each request per ``mode``; records requests and connection count."""

    def __init__(self, mode: str = "200", ssl_ctx: ssl.SSLContext | None = None):
        self.mode = mode
        self.ssl_ctx = ssl_ctx
        self.requests: list[dict] = []
        self.connections = 0
        self.server: asyncio.base_events.Server | None = None
        self.port = 0
        self._hang = asyncio.Event()

    async def __aenter__(self):
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=self.ssl_ctx)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc):
        self._hang.set()
        self.server.close()
        await asyncio.wait_for(self.server.wait_closed(), WAIT_S)

    def url(self, path: str = "/check?x=1") -> str:
        scheme = "https" if self.ssl_ctx else "http"
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.connections += 1
        served = 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                headers = [tuple(x.strip() for x in ln.split(":", 1)) for ln in lines[1:] if ln]
                length = int(next(v for k, v in headers if k.lower() == "content-length"))
                body = await reader.readexactly(length)
                self.requests.append({"method": method, "target": target, "headers": headers, "body": body})
                mode = self.mode
                served += 1
                if mode == "200-drop-second" and served == 2:
                    return  # close without an answer
                if mode == "hang":
                    await self._hang.wait()
                    return
                if mode == "chunked":
                    writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
                else:
                    status = int(mode.split("-")[0])  # "200", "403", "200-close", "200-drop-second"
                    text = b"ok" if status < 300 else b"no"
                    writer.write(b"HTTP/1.1 %d X\r\ncontent-length: %d\r\n\r\n%s" % (status, len(text), text))
                await writer.drain()
                if mode.endswith("-close"):
                    # Close without announcing it: the client's pooled connection goes stale.
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            writer.close()


def header_values(req: dict, name: str) -> list[str]:
    return [v for k, v in req["headers"] if k.lower() == name]


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# -- make_check ---------------------------------------------------------------


def test_make_check_kinds(verifier, blacklist):
    """no_check, jwt_validation and URLs map to their check classes; only the URL check needs I/O."""
    assert isinstance(make_check("no_check", verifier, blacklist, 1), NoCheck)
    assert isinstance(make_check("", verifier, blacklist, 1), NoCheck)
    jc = make_check("jwt_validation", verifier, blacklist, 1)
    assert isinstance(jc, JwtValidationCheck) and not jc.needs_io
    uc = make_check("http://127.0.0.1:9/x", verifier, blacklist, 1)
    assert isinstance(uc, UrlCheck) and uc.needs_io
    assert isinstance(make_check("https://auth.example/check", verifier, blacklist, 1), UrlCheck)


@pytest.mark.parametrize("spec", ["allow_all", "ftp://host/x", "http://", "http://host:notaport/"])
def test_make_check_config_error_names_variable(verifier, blacklist, spec):
    """An unknown value is a ConfigError naming the variable it came from."""
    with pytest.raises(ConfigError, match="SUBMISSION_CHECK"):
        make_check(spec, verifier, blacklist, 1, "SUBMISSION_CHECK")


# -- no_check / jwt_validation -------------------------------------------------


def test_no_check_allows_everything(verifier, blacklist):
    """no_check allows without tokens, sync and async."""
    c = make_check("no_check", verifier, blacklist, 1)
    c.authorize_sync([])
    run(c.authorize([], b"[]"))


def test_jwt_validation_valid_token(verifier, blacklist):
    """jwt_validation allows a request with a valid, unexpired token."""
    make_check("jwt_validation", verifier, blacklist, 1).authorize_sync([token()])


def test_jwt_validation_no_token(verifier, blacklist):
    """jwt_validation denies a request without tokens (403)."""
    c = make_check("jwt_validation", verifier, blacklist, 1, "SUBSCRIPTION_CHECK")
    with pytest.raises(Forbidden, match="no authorization token") as ei:
        c.authorize_sync([])
    assert ei.value.status == 403
    assert "subscription denied" in ei.value.message


def test_jwt_validation_expired_and_bad(verifier, blacklist):
    """jwt_validation denies expired or badly signed tokens, saying why."""
    c = make_check("jwt_validation", verifier, blacklist, 1)
    with pytest.raises(Forbidden, match="expired"):
        c.authorize_sync([token(exp=time.time() - 100)])
    with pytest.raises(Forbidden, match="signature"):
        c.authorize_sync([jwt.encode({"exp": time.time() + 60}, "y" * 64, algorithm="HS256")])


def test_jwt_validation_one_good_token_suffices(verifier, blacklist):
    """Among several tokens one valid one is enough."""
    c = make_check("jwt_validation", verifier, blacklist, 1)
    c.authorize_sync(["garbage", token(exp=time.time() - 100), token()])


def test_jwt_validation_blacklisted_session(verifier, blacklist):
    """A valid token whose session is blacklisted is denied; another session still passes."""
    c = make_check("jwt_validation", verifier, blacklist, 1)
    blacklist.add("sess-1", 60)
    with pytest.raises(Forbidden, match="blacklisted"):
        c.authorize_sync([token(jti="sess-1")])
    with pytest.raises(Forbidden, match="blacklisted"):
        run(c.authorize([token(jti="sess-1")], b"{}"))
    c.authorize_sync([token(jti="sess-2")])
    c.authorize_sync([token(jti="sess-1"), token(jti="sess-2")])


def test_jwt_validation_custom_session_field(blacklist):
    """The session is read through JWT_SESSION_FIELD."""
    v = TokenVerifier("HS256", SECRET, session_field="/user/session")
    c = make_check("jwt_validation", v, blacklist, 1)
    blacklist.add("u-77", 60)
    with pytest.raises(Forbidden, match="blacklisted"):
        c.authorize_sync([token(user={"session": "u-77"})])
    c.authorize_sync([token(user={"session": "u-78"})])


# -- URL check ----------------------------------------------------------------


def test_url_check_allows_on_200_and_forwards(verifier, blacklist):
    """A 200 allows; the payload is POSTed as JSON with one Bearer header per token."""
    payload = json.dumps([{"eventType": "greeting", "oneOf": [{"name": "alice"}]}]).encode()

    async def main():
        async with CheckServer("200") as srv:
            c = make_check(srv.url("/check?x=1"), verifier, blacklist, 2)
            await c.authorize(["tok-a", "tok-b"], payload)
            await c.close()
            return srv.requests

    (req,) = run(main())
    assert req["method"] == "POST" and req["target"] == "/check?x=1"
    assert req["body"] == payload
    assert header_values(req, "content-type") == ["application/json"]
    assert header_values(req, "authorization") == ["Bearer tok-a", "Bearer tok-b"]
    assert header_values(req, "host")[0].startswith("127.0.0.1:")


def test_url_check_without_tokens_sends_no_authorization(verifier, blacklist):
    """With no tokens, no Authorization header is sent and a 2xx still allows."""

    async def main():
        async with CheckServer("204") as srv:
            c = make_check(srv.url("/"), verifier, blacklist, 2)
            await c.authorize([], b"{}")
            await c.close()
            return srv.requests

    (req,) = run(main())
    assert header_values(req, "authorization") == []


@pytest.mark.parametrize("status", [403, 401, 500, 302])
def test_url_check_denies_on_non_2xx(verifier, blacklist, status):
    """Any status outside 2xx denies, and the message gives the status."""

    async def main():
        async with CheckServer(str(status)) as srv:
            c = make_check(srv.url(), verifier, blacklist, 2, "SUBMISSION_CHECK")
            with pytest.raises(Forbidden) as ei:
                await c.authorize(["t"], b"{}")
            await c.close()
            return ei.value

    err = run(main())
    assert err.status == 403
    assert str(status) in err.message and "submission denied" in err.message


def test_url_check_timeout_denies(verifier, blacklist):
    """A checker that never answers is denied after the timeout, with a message saying so."""

    async def main():
        async with CheckServer("hang") as srv:
            c = make_check(srv.url(), verifier, blacklist, 0.2)
            t0 = time.monotonic()
            with pytest.raises(Forbidden, match="did not answer within 0.2 s"):
                await c.authorize(["t"], b"{}")
            elapsed = time.monotonic() - t0
            await c.close()
            return elapsed, len(srv.requests)

    elapsed, n = run(main())
    assert 0.15 < elapsed < 2.0
    assert n == 1


def test_url_check_unreachable_denies(verifier, blacklist):
    """A checker on a closed port is denied as unreachable."""
    c = make_check(f"http://127.0.0.1:{closed_port()}/check", verifier, blacklist, 2)
    with pytest.raises(Forbidden, match="unreachable"):
        run(c.authorize(["t"], b"{}"))


def test_url_check_reuses_connection(verifier, blacklist):
    """Sequential checks share one keep-alive connection, also after a chunked answer."""

    async def main():
        async with CheckServer("200") as srv:
            c = make_check(srv.url(), verifier, blacklist, 2)
            for _ in range(3):
                await c.authorize(["t"], b"{}")
            srv.mode = "chunked"
            await c.authorize(["t"], b"{}")
            srv.mode = "200"
            await c.authorize(["t"], b"{}")
            await c.close()
            return srv.connections, len(srv.requests)

    assert run(main()) == (1, 5)


def test_url_check_retries_stale_pooled_connection(verifier, blacklist):
    """If the checker closed an idle keep-alive connection, the next check reconnects and succeeds."""

    async def main():
        async with CheckServer("200-close") as srv:
            c = make_check(srv.url(), verifier, blacklist, 2)
            for _ in range(3):
                await c.authorize(["t"], b"{}")
            await c.close()
            return srv.connections, len(srv.requests)

    conns, reqs = run(main())
    assert reqs == 3 and conns == 3


def test_url_check_concurrent(verifier, blacklist):
    """Many concurrent checks all get their answer."""

    async def main():
        async with CheckServer("200") as srv:
            c = make_check(srv.url(), verifier, blacklist, 2)
            await asyncio.gather(*(c.authorize([f"t{i}"], b"{}") for i in range(20)))
            await c.close()
            return len(srv.requests)

    assert run(main()) == 20


def test_url_check_has_no_sync_path(verifier, blacklist):
    """authorize_sync refuses on a URL check (it needs I/O)."""
    c = make_check("http://127.0.0.1:9/", verifier, blacklist, 1)
    with pytest.raises(NotImplementedError):
        c.authorize_sync(["t"])


def test_url_check_https(verifier, blacklist, tmp_path):
    """An https:// checker is reached over TLS (certificate verified against the given trust store)."""
    cert_path, key_path = map(Path, make_cert(tmp_path))
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert_path, key_path)
    client_ctx = ssl.create_default_context(cafile=str(cert_path))

    async def main():
        async with CheckServer("200", ssl_ctx=server_ctx) as srv:
            c = make_check(srv.url(), verifier, blacklist, 2, ssl_context=client_ctx)
            await c.authorize(["t"], b'{"a":1}')
            await c.authorize(["t"], b'{"a":2}')
            await c.close()
            return [r["body"] for r in srv.requests], srv.connections

    bodies, conns = run(main())
    assert bodies == [b'{"a":1}', b'{"a":2}'] and conns == 1


def test_url_check_https_untrusted_denied(verifier, blacklist, tmp_path):
    """A TLS checker whose certificate is not trusted counts as unreachable."""
    cert_path, key_path = map(Path, make_cert(tmp_path))
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert_path, key_path)

    async def main():
        async with CheckServer("200", ssl_ctx=server_ctx) as srv:
            c = make_check(srv.url(), verifier, blacklist, 2)
            with pytest.raises(Forbidden, match="unreachable"):
                await c.authorize(["t"], b"{}")

    run(main())


def test_url_check_retry_path_when_stale_not_detected(verifier, blacklist):
    """A pooled connection that looked alive but that the checker closes when the next check arrives (its
    keep-alive timeout racing the request) is retried once on a fresh one: the check is allowed."""

    async def main():
        async with CheckServer("200-drop-second") as srv:
            c = make_check(srv.url(), verifier, blacklist, 2)
            await c.authorize(["t"], b"{}")
            await c.authorize(["t"], b"{}")
            await c.close()
            return srv.connections, len(srv.requests)

    assert run(main()) == (2, 3)  # the second check went out twice: dropped unanswered, then answered


def test_url_check_under_uvloop(verifier, blacklist):
    """The URL check works on uvloop (the gateway's loop): allow, deny and timeout."""
    uvloop = pytest.importorskip("uvloop")

    async def main():
        async with CheckServer("200") as srv:
            c = make_check(srv.url(), verifier, blacklist, 0.2)
            await c.authorize(["t"], b"{}")
            srv.mode = "403"
            with pytest.raises(Forbidden, match="403"):
                await c.authorize(["t"], b"{}")
            srv.mode = "hang"
            with pytest.raises(Forbidden, match="did not answer"):
                await c.authorize(["t"], b"{}")
            await c.close()

    loop = uvloop.new_event_loop()
    try:
        loop.run_until_complete(asyncio.wait_for(main(), WAIT_S))
    finally:
        loop.close()
