"""The official Phoenix JS client (npm ``phoenix`` 1.8, installed by the test) in headless Chromium.

For WebSocket and the forced LongPoll transport: connect with a JWT, join with
subscriptions, receive an event, change subscriptions with a push, survive a
kill of its connections mid-stream with every event exactly once (the page
passes its last resume id through the join params function), and be refused
once its session is blacklisted.

The kill: the page talks to the gateway through a loopback relay. WebSocket:
the relay's connections are reset, which drops the socket under the client
as a server crash would (close 1006). Long-polling outlives its HTTP
connections, so there the gateway itself drops the session: the relay holds
the traffic while a burst overflows the session's message buffer
(``RIGFAST_PHOENIX_LONGPOLL_BUFFER``, the slow-consumer rule), and the
client's next poll gets ``410``. Events keep being published meanwhile.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import httpx
import jwt as pyjwt
import pytest

from tests.conftest import JWT_SECRET
from tests.helpers import PageServer, T, make_event, publish_ok, uid
from tests.integration.test_browser import CHROMIUM, CHROMIUM_ARGS

PHOENIX_VERSION = "1.8"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is not installed"),
]

@pytest.fixture(scope="session")
def phoenix_js(tmp_path_factory) -> Path:
    """phoenix.mjs from npm (``npm install phoenix@1.8`` into a temporary prefix); skip when npm cannot fetch it."""
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip("npm is not installed (needed to fetch the phoenix client)")
    prefix = tmp_path_factory.mktemp("phoenix-js")
    try:
        proc = subprocess.run([npm, "install", "--prefix", str(prefix), "--no-audit", "--no-fund", "--silent",
                               f"phoenix@{PHOENIX_VERSION}"], capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        pytest.skip("npm install phoenix timed out: registry unreachable?")
    mjs = prefix / "node_modules" / "phoenix" / "priv" / "static" / "phoenix.mjs"
    if proc.returncode != 0 or not mjs.exists():
        pytest.skip(f"npm install phoenix@{PHOENIX_VERSION} failed (registry unreachable?): {proc.stderr.strip()[-300:]}")
    return mjs


PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>rigfast phoenix test</title></head>
<body>
<script type="module">
import {Socket, LongPoll} from "/phoenix.mjs";
const CFG = __CONFIG__;
const R = window.R = {events: [], other: [], joins: 0, joinErrors: [], opens: 0, closes: 0, chanErrors: 0, token: null, subs: null};
let last = null;
let subs = CFG.subscriptions;
const opts = {
  params: {token: CFG.jwt},
  heartbeatIntervalMs: 2000,
  reconnectAfterMs: () => 100,
  rejoinAfterMs: () => 100,
};
if (CFG.longpoll) opts.transport = LongPoll;
const socket = new Socket(CFG.socketUrl, opts);
socket.onOpen(() => { R.opens++; });
socket.onClose(() => { R.closes++; });
socket.connect();
const ch = socket.channel("rig:page", () => ({subscriptions: subs, last_event_id: last}));
ch.on(CFG.type, (payload, ref) => { R.events.push(payload.data.n); if (ref) last = ref; });
ch.on(CFG.type2, (payload, ref) => { R.other.push(payload.data.n); if (ref) last = ref; });
ch.onError(() => { R.chanErrors++; });
ch.join()
  .receive("ok", (resp) => { R.joins++; R.token = resp.connection_token; R.subs = resp.subscriptions; })
  .receive("error", (e) => { R.joinErrors.push(e); });
window.changeSubs = (next) => new Promise((resolve) => {
  subs = next;  // a rejoin asks for these too
  ch.push("subscriptions", {subscriptions: next})
    .receive("ok", (r) => resolve({ok: r}))
    .receive("error", (e) => resolve({error: e}))
    .receive("timeout", () => resolve({timeout: true}));
});
</script>
</body></html>
"""


class Relay:
    """A loopback TCP relay to the gateway whose connections can be cut at once."""

    def __init__(self, upstream_port: int):
        self.upstream = ("127.0.0.1", upstream_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.conns: list[socket.socket] = []
        self.lock = threading.Lock()
        self.stopped = False
        self.flowing = threading.Event()
        self.flowing.set()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.stopped:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                up = socket.create_connection(self.upstream, timeout=T)
                up.settimeout(None)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.conns += [client, up]
            for a, b in ((client, up), (up, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                self.flowing.wait(4 * T)  # held while frozen
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def freeze(self) -> None:
        self.flowing.clear()

    def thaw(self) -> None:
        self.flowing.set()

    def cut(self) -> int:
        """Reset every relayed connection now; returns how many there were."""
        with self.lock:
            conns, self.conns = self.conns, []
        for s in conns:
            try:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # RST
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
        return len(conns)

    def close(self):
        self.stopped = True
        self.listener.close()
        self.cut()


def wait_dropped(gw) -> None:
    """Until the gateway has dropped a Phoenix session as a slow consumer."""
    deadline = time.monotonic() + 2 * T
    while time.monotonic() < deadline:
        text = httpx.get(gw.api + "/metrics", timeout=T).text
        if 'rig_slow_consumer_disconnects_total{transport="phoenix"}' in text:
            return
        time.sleep(0.05)
    raise AssertionError("the long-polling session was not dropped")


def mint(sid: str, **claims) -> str:
    return pyjwt.encode({"jti": sid, "exp": int(time.time()) + 600, **claims}, JWT_SECRET, algorithm="HS256")


@pytest.mark.parametrize("transport", ["websocket", "longpoll"])
def test_official_phoenix_client(gateway_factory, phoenix_js, transport):
    os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
    from playwright.sync_api import sync_playwright

    gw = gateway_factory(RIGFAST_PHOENIX_POLL_TIMEOUT_S="2", RIGFAST_PHOENIX_LONGPOLL_BUFFER="5")
    relay = Relay(int(gw.inbound.rsplit(":", 1)[1]))
    etype, etype2 = uid("phx-page"), uid("phx-page2")
    sid = uid("page-session")
    cfg = {
        "socketUrl": f"ws://127.0.0.1:{relay.port}/socket",
        "longpoll": transport == "longpoll",
        "jwt": mint(sid, username=uid("page-user")),
        "type": etype,
        "type2": etype2,
        "subscriptions": [{"eventType": etype}],
    }
    html = PAGE.replace("__CONFIG__", json.dumps(cfg)).encode()
    n = 0

    def publish(kind=etype, count=1):
        nonlocal n
        for _ in range(count):
            n += 1
            publish_ok(gw.inbound, make_event(kind, {"n": n}))

    with PageServer(html, {"/phoenix.mjs": (phoenix_js.read_bytes(), "text/javascript; charset=utf-8")}) as server, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True, timeout=4 * T * 1000)
        console: list[str] = []

        def wait(js: str, what: str, timeout=4 * T):
            try:
                page.wait_for_function(js, timeout=timeout * 1000)
            except Exception:
                pytest.fail(f"{transport}: {what}: {page.evaluate('window.R')}, console: {console[-20:]}")

        try:
            page = browser.new_page()
            page.on("console", lambda m: console.append(m.text))
            page.goto(server.origin + "/", timeout=2 * T * 1000)
            wait("() => window.R && window.R.joins === 1", "no join")
            r = page.evaluate("window.R")
            assert r["subs"][0] == {"eventType": etype, "oneOf": []}, r  # + the JWT's automatic subscription
            # a published event arrives
            publish()
            wait("() => window.R.events.length === 1", "first event not received")
            # survive a kill mid-stream: a burst, the socket killed, more published while the client reconnects
            if transport == "websocket":
                publish(count=9)
                assert relay.cut() >= 1
                publish(count=10)
            else:
                relay.freeze()
                publish(count=19)  # more than the 5 a session may hold: the gateway drops it
                wait_dropped(gw)
                relay.thaw()
            wait("() => window.R.joins >= 2", "no rejoin after the kill")
            publish(count=5)
            wait(f"() => window.R.events.length >= {n}", "events missing after the kill")
            events = page.evaluate("window.R.events")
            assert events == list(range(1, n + 1)), f"{transport}: not every event exactly once, in order: {events}"
            # change subscriptions with a push: etype2 from now on, etype no longer
            res = page.evaluate(f"window.changeSubs([{{eventType: {json.dumps(etype2)}}}])")
            assert "ok" in res and res["ok"]["subscriptions"][0]["eventType"] == etype2, res
            publish(etype)
            publish(etype2)
            wait("() => window.R.other.length === 1", "event after the subscription change not received")
            assert page.evaluate("window.R.events.length") == n - 2, "an event of the old subscription arrived"
            # blacklisted: phx_error on the channel, the socket closes, reconnects are refused
            opens = page.evaluate("window.R.opens")
            errors = page.evaluate("window.R.chanErrors")
            r = httpx.post(gw.api + "/v3/session-blacklist", json={"sessionId": sid, "validityInSeconds": 60}, timeout=T)
            assert r.status_code == 201
            wait(f"() => window.R.chanErrors > {errors} && window.R.closes >= 3", "not refused after the blacklist")
            publish(etype2)
            assert page.evaluate("window.R.opens") == opens, page.evaluate("window.R")
            assert page.evaluate("window.R.other") == [n - 1], page.evaluate("window.R")
        finally:
            browser.close()
            relay.close()
