"""A real browser (headless Chromium via playwright) uses all three transports cross-origin."""

from __future__ import annotations

import json
import os

import pytest

from tests.helpers import PageServer, T, uid

CHROMIUM = "/usr/bin/chromium"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is not installed"),
]

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>rigfast browser test</title></head>
<body>
<script>
const CFG = __CONFIG__;
const GW = CFG.gateway;
const SUBS = encodeURIComponent(JSON.stringify(CFG.subscriptions));
window.results = {sse: [], ws: [], lp: [], ready: {sse: false, ws: false, lp: false}, errors: [], published: null};
const R = window.results;
function note(where, err) { R.errors.push(where + ": " + String(err)); }

// Server-Sent Events
const es = new EventSource(GW + "/_rig/v1/connection/sse?subscriptions=" + SUBS);
es.addEventListener("rig.subscriptions_set", () => { R.ready.sse = true; });
es.addEventListener(CFG.type, (e) => { R.sse.push(JSON.parse(e.data)); });
es.onerror = (e) => note("sse", "error event, readyState=" + es.readyState);

// WebSocket
const ws = new WebSocket(GW.replace(/^http/, "ws") + "/_rig/v1/connection/ws?subscriptions=" + SUBS);
ws.onmessage = (m) => {
  const ev = JSON.parse(m.data);
  if (ev.type === "rig.subscriptions_set") R.ready.ws = true;
  else if (ev.type === CFG.type) R.ws.push(ev);
};
ws.onerror = () => note("ws", "error");
ws.onclose = (c) => { if (!R.ws.length) note("ws", "closed " + c.code + " " + c.reason); };

// Long-polling with cookies
async function poll() {
  for (let i = 0; i < 200; i++) {
    try {
      const r = await fetch(GW + "/_rig/v1/connection/longpolling?subscriptions=" + SUBS, {credentials: "include"});
      if (r.status !== 200) { note("lp", "status " + r.status); return; }
      const body = await r.json();
      if (body === "ok") continue;
      for (const ev of body.events) {
        if (ev.type === "rig.subscriptions_set") R.ready.lp = true;
        else if (ev.type === CFG.type) R.lp.push(ev);
      }
    } catch (e) { note("lp", e); return; }
  }
}
poll();

window.publishGreeting = async function () {
  try {
    const r = await fetch(GW + "/_rig/v1/events", {
      method: "POST",
      headers: {"content-type": "application/json"},
      body: JSON.stringify(CFG.event),
    });
    R.published = {status: r.status, body: await r.text()};
  } catch (e) { note("publish", e); }
};
</script>
</body></html>
"""


def test_browser_receives_event_on_all_transports(gateway_factory):
    """EventSource, WebSocket and credentialed fetch long-polling in Chromium all receive one published event."""
    os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
    from playwright.sync_api import sync_playwright

    server = PageServer()
    origin = server.origin
    gw = gateway_factory(CORS=origin, RIGFAST_LONGPOLL_TIMEOUT_S="1")
    name = uid("browser")
    event = {
        "specversion": "1.0",
        "type": "greeting",
        "source": "/rigfast/tests/browser",
        "id": uid("browser-ev"),
        "data": {"name": name},
    }
    cfg = {
        "gateway": gw.inbound,
        "type": "greeting",
        "subscriptions": [{"eventType": "greeting", "oneOf": [{"name": name}]}],
        "event": event,
    }
    server.html = PAGE.replace("__CONFIG__", json.dumps(cfg)).encode()
    with server, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True, timeout=4 * T * 1000)
        try:
            page = browser.new_page()
            console = []
            page.on("console", lambda m: console.append(m.text))
            page.goto(origin + "/", timeout=2 * T * 1000)
            try:
                page.wait_for_function("() => { const r = window.results.ready; return r.sse && r.ws && r.lp; }",
                                       timeout=2 * T * 1000)
            except Exception:
                pytest.fail(f"transports not ready: {page.evaluate('window.results')}, console: {console}")
            page.evaluate("window.publishGreeting()")
            try:
                page.wait_for_function(
                    "() => { const r = window.results; return r.sse.length && r.ws.length && r.lp.length; }",
                    timeout=2 * T * 1000,
                )
            except Exception:
                pytest.fail(f"not every transport got the event: {page.evaluate('window.results')}, console: {console}")
            results = page.evaluate("window.results")
        finally:
            browser.close()

    assert results["published"]["status"] == 202, results
    for transport in ("sse", "ws", "lp"):
        assert [e["id"] for e in results[transport]] == [event["id"]], (transport, results)
        assert results[transport][0]["data"] == {"name": name}
