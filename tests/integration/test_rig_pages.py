"""RIG's example frontends, replayed in headless Chromium against rigfast.

RIG ships demo pages (examples/*.html in its repository) for SSE, WebSocket and long-polling, each
as a plain page (connect, then PUT the subscription on rig.connection.create), a single-call page
(subscriptions in the connect URL), a simple-extractors page (a oneOf constraint), a
JWT-extractors page (PUT with a bearer token whose claim makes an automatic subscription, beside a
constraint on a field no extractor defines) and a -3-demo-jwt page for SUBSCRIPTION_CHECK=
jwt_validation (connect without a token, PUT with one). These pages are our own, written to make
the same requests the same way: the same URLs and query parameters, EventSource / WebSocket /
XMLHttpRequest with credentials (what axios uses in a browser) / fetch with mode "cors", 0.1
CloudEvent envelopes published from the page, the connection token from rig.connection.create
(long-polling: kept in localStorage), cookies left to the browser. Two differences, both timing or
loading only: the long-polling pages poll again after ``POLL_DELAY_MS`` instead of RIG's 10 s,
and axios / the EventSource polyfill are not loaded from unpkg (no internet here; Chromium has
EventSource, and axios's browser adapter is XMLHttpRequest). Each test types a greeting into the
page's form, submits it, and checks that the page shows it in its list.
"""

from __future__ import annotations

import json
import os
import time

import jwt as pyjwt
import pytest

from tests.conftest import JWT_SECRET, start_gateway
from tests.helpers import PageServer, T, uid
from tests.integration.test_browser import CHROMIUM, CHROMIUM_ARGS

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is not installed"),
]

POLL_DELAY_MS = 300  # RIG's long-polling pages wait 10 s between polls
FAR_FUTURE = 4103258143  # the iat/exp RIG's demo tokens carry

# page part shared by every transport: the list, the form, publishing a 0.1 CloudEvent from the page
COMMON = r"""
const CFG = __CONFIG__;
const eventList = document.getElementById("eventList");
const baseUrl = CFG.gateway + "/_rig/v1";
window.seen = [];          // event types the page received, for the test to wait on
window.putStatus = [];     // statuses of the page's PUT .../subscriptions
function addEvent(cloudEvent) {
  const { eventTime, data } = cloudEvent;
  const li = document.createElement("li");
  const shown = CFG.dataIsObject ? JSON.stringify(data) : data;
  li.textContent = `[${new Date(eventTime).toLocaleTimeString()}] ${shown}`;
  eventList.appendChild(li);
}
function randomString() {
  return Math.random().toString(36).substring(2, 15) + Math.random().toString(36).substring(2, 15);
}
function sendGreeting() {
  const input = document.getElementById("greeting");
  const greeting = input.value;
  input.value = "";
  const nameInput = document.getElementById("name");  // the simple-extractors pages ask for a name too
  const name = nameInput ? nameInput.value : null;
  if (nameInput) nameInput.value = "";
  return fetch(`${baseUrl}/events`, {
    method: "POST",
    mode: "cors",
    headers: { "Content-Type": CFG.publishType },
    body: JSON.stringify({
      cloudEventsVersion: "0.1",
      eventID: randomString(),
      eventType: CFG.eventType,
      eventTime: new Date().toISOString(),
      source: CFG.transport + "-demo-ui",
      contentType: "text/plain",
      data: nameInput ? { name, greeting } : CFG.dataIsObject ? { name: greeting } : greeting,
    }),
  }).then((r) => r.json()).then((json) => console.log("CloudEvent sent:", json))
    .catch((err) => console.log("Failed to send CloudEvent:", err));
}
function createSubscription(connectionToken) {
  const headers = { "Content-Type": "application/json; charset=utf-8" };
  if (CFG.jwt) headers.Authorization = "Bearer " + CFG.jwt;
  return fetch(`${baseUrl}/connection/${CFG.putTransport || CFG.transport}/${connectionToken}/subscriptions`, {
    method: "PUT", mode: "cors", headers, body: JSON.stringify({ subscriptions: CFG.putSubscriptions }),
  }).then((r) => { window.putStatus.push(r.status); console.log("Subscription created:", r); return r; })
    .catch((err) => { window.putStatus.push(String(err)); console.log("Failed to create subscription:", err); });
}
const connectQuery = CFG.connectSubscriptions ? "?subscriptions=" + JSON.stringify(CFG.connectSubscriptions) : "";
"""

SSE_PAGE = r"""
const source = new EventSource(`${baseUrl}/connection/sse${connectQuery}`);
source.onerror = (e) => console.log("error", e);
source.addEventListener("rig.connection.create", function (e) {
  window.seen.push("rig.connection.create");
  const connectionToken = JSON.parse(e.data).data["connection_token"];
  if (CFG.putSubscriptions) createSubscription(connectionToken);
}, false);
source.addEventListener("rig.subscriptions_set", function () {
  window.seen.push("rig.subscriptions_set");
  document.getElementById("submit-button").removeAttribute("disabled");
});
source.addEventListener(CFG.eventType, function (e) { window.seen.push(CFG.eventType); addEvent(JSON.parse(e.data)); });
"""

WS_PAGE = r"""
const wsUrl = baseUrl.replace(/^http/, "ws");
const source = new WebSocket(`${wsUrl}/connection/ws${connectQuery}`);
source.onclose = (e) => console.log("closed", e.code, e.reason);
source.onmessage = (e) => {
  const cloudEvent = JSON.parse(e.data);
  window.seen.push(cloudEvent.type || cloudEvent.eventType);
  if (cloudEvent.type === "rig.connection.create") {
    if (CFG.putSubscriptions) createSubscription(cloudEvent.data["connection_token"]);
  } else if (cloudEvent.type === "rig.subscriptions_set") {
    document.getElementById("submit-button").removeAttribute("disabled");
  } else if (cloudEvent.eventType === CFG.eventType) {
    addEvent(cloudEvent);
  }
};
"""

# what axios({method: "GET", url, withCredentials: true}) does in a browser: XHR, JSON body parsed
LP_PAGE = r"""
function axiosGet(url) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("GET", url, true);
    xhr.withCredentials = true;
    xhr.setRequestHeader("Accept", "application/json, text/plain, */*");
    xhr.onload = () => {
      let data = xhr.responseText;
      try { data = JSON.parse(data); } catch (e) { /* axios keeps text that is not JSON */ }
      if (xhr.status >= 200 && xhr.status < 300) resolve({ status: xhr.status, data });
      else reject(new Error("Request failed with status code " + xhr.status));
    };
    xhr.onerror = () => reject(new Error("Network Error"));
    xhr.send();
  });
}
function lpSubscribe() {
  const connectionToken = localStorage.getItem("connection_token");
  if (!connectionToken) {
    console.error("Missing connectionToken > can't do subscriptions");
    if (!CFG.putWithoutToken) return;  // lp-1-demo PUTs .../sse/null/subscriptions anyway (400, ignored)
  }
  return createSubscription(connectionToken);
}
function fetchEvents() {
  document.getElementById("submit-button").removeAttribute("disabled");
  axiosGet(`${baseUrl}/connection/longpolling`).then((response) => {
    if (response.data && response.data.events) {
      response.data.events.forEach((event) => {
        window.seen.push(event.type || event.eventType);
        if (event.type === "rig.connection.create") {
          localStorage.setItem("connection_token", event.data.connection_token);
          if (CFG.putSubscriptions) lpSubscribe();  // re-subscribe when the connection is new
          return;
        }
        if (event.type === "rig.subscriptions_set") return;
        addEvent(event);
      });
    }
    setTimeout(fetchEvents, CFG.pollDelay);
  }).catch((err) => { window.seen.push("poll failed: " + err); console.log("Failed to fetch events:", err); });
}
axiosGet(`${baseUrl}/connection/longpolling${connectQuery}`)
  .then(() => (CFG.putSubscriptions ? lpSubscribe() : null))
  .then(() => fetchEvents())
  .catch((err) => { window.seen.push("connect failed: " + err); console.log("Failed to create subscription:", err); });
"""

HTML = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>RIG demo replay</title></head>
<body>
<form onsubmit="sendGreeting(); return false;">
  __NAME_INPUT__<input type="text" id="greeting" placeholder="Your greeting here" autofocus>
  <input type="submit" id="submit-button" __DISABLED__>
</form>
<ul id="eventList" style="list-style:none;padding-left:0"></ul>
<script>__SCRIPT__</script>
</body></html>
"""

TRANSPORT_JS = {"sse": SSE_PAGE, "ws": WS_PAGE, "longpolling": LP_PAGE}


def demo_token(**claims) -> str:
    """A token shaped like the demo pages' (sub, a name, iat/exp far ahead), signed with the test key."""
    return pyjwt.encode({"sub": "1234567890", "iat": FAR_FUTURE, "exp": FAR_FUTURE, **claims}, JWT_SECRET, "HS256")


def page_config(transport: str, variant: str, gateway: str) -> tuple[dict, str]:
    """(CFG of the page, the text the test types into the form) for one RIG demo page."""
    simple = "greeting.simple" if transport == "longpolling" or variant == "3-demo-jwt" and transport == "sse" else "greeting"
    cfg = {"gateway": gateway, "transport": transport, "pollDelay": POLL_DELAY_MS, "jwt": None,
           "eventType": simple, "dataIsObject": False, "connectSubscriptions": None, "putSubscriptions": None,
           "publishType": "application/json; charset=utf-8"}
    text = uid("hello")
    if variant == "plain":  # *-1-demo.html
        cfg["putSubscriptions"] = [{"eventType": simple}]
        if transport == "longpolling":
            # lp-1-demo.html: PUTs on the .../sse/<token>/ path, also once before it has a token
            cfg.update(putTransport="sse", putWithoutToken=True, publishType="application/cloudevents+json; charset=utf-8")
    elif variant == "single-call":  # *-demo-single-call.html: one request, subscriptions in the URL
        cfg["connectSubscriptions"] = [{"eventType": simple}]
        cfg["publishType"] = "application/cloudevents+json; charset=utf-8"
    elif variant == "simple-extractors":  # *-2-demo-simple-extractors.html: a name and a greeting; oneOf on the name
        # (RIG's page subscribes to the name "john"; a fresh one keeps the tests apart)
        cfg.update(eventType="greeting", dataIsObject=True, nameField=uid("john"),
                   putSubscriptions=[{"eventType": "greeting", "oneOf": [{"name": None}]}])
        cfg["putSubscriptions"][0]["oneOf"][0]["name"] = cfg["nameField"]
    elif variant == "jwt-extractors":  # *-demo-jwt-extractors.html: the token's username subscribes automatically
        text = uid("john.doe")
        cfg.update(eventType="greeting", dataIsObject=True, jwt=demo_token(fullname="John Doe", username=text),
                   putSubscriptions=[{"eventType": "example", "oneOf": [{"name": "yolo"}]}])
    elif variant == "3-demo-jwt":  # *-3-demo-jwt.html, under SUBSCRIPTION_CHECK=jwt_validation
        cfg.update(jwt=demo_token(name="John Doe"), putSubscriptions=[{"eventType": simple}])
        if transport == "sse":
            cfg["publishType"] = "application/cloudevents+json; charset=utf-8"
    else:
        raise AssertionError(variant)
    return cfg, text


@pytest.fixture(scope="module")
def browser():
    os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True, timeout=4 * T * 1000)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def pages():
    server = PageServer()
    with server:
        yield server


@pytest.fixture(scope="module")
def demo_gw():
    """RIG's defaults (CORS=*, no_check) with the test extractors (greeting.name, jwt /username)."""
    gw = start_gateway(RIGFAST_LONGPOLL_TIMEOUT_S="1")
    yield gw
    gw.stop()


@pytest.fixture(scope="module")
def jwt_demo_gw():
    gw = start_gateway(SUBSCRIPTION_CHECK="jwt_validation", RIGFAST_LONGPOLL_TIMEOUT_S="1")
    yield gw
    gw.stop()


VARIANTS = ["plain", "single-call", "simple-extractors", "jwt-extractors", "3-demo-jwt"]


@pytest.mark.parametrize("transport", ["sse", "ws", "longpolling"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_rig_demo_page_shows_the_greeting(browser, pages, demo_gw, jwt_demo_gw, transport, variant):
    gw = jwt_demo_gw if variant == "3-demo-jwt" else demo_gw
    cfg, text = page_config(transport, variant, gw.inbound)
    disabled = "disabled" if transport != "ws" else ""
    name_input = '<input type="text" id="name" placeholder="Your name here">' if cfg.get("nameField") else ""
    pages.html = HTML.replace("__DISABLED__", disabled).replace("__NAME_INPUT__", name_input).replace(
        "__SCRIPT__", COMMON.replace("__CONFIG__", json.dumps(cfg)) + TRANSPORT_JS[transport]).encode()
    context = browser.new_context()  # own localStorage and cookies per page
    page = context.new_page()
    console: list[str] = []
    page.on("console", lambda m: console.append(m.text))
    refused: list[str] = []
    page.on("response", lambda r: refused.append(f"{r.request.method} {r.url} {r.status}") if r.status >= 400 else None)
    try:
        page.goto(pages.origin + "/?" + uid("p"), timeout=2 * T * 1000)
        wanted = 2 if cfg["putSubscriptions"] else 1  # the connect's rig.subscriptions_set, then the PUT's
        try:
            page.wait_for_function(
                f"() => window.seen.filter((t) => t === 'rig.subscriptions_set').length >= {wanted}",
                timeout=3 * T * 1000)
        except Exception:
            pytest.fail(f"page not subscribed: seen={page.evaluate('window.seen')} put={page.evaluate('window.putStatus')}"
                        f" refused={refused} console={console[-10:]}")
        expected_puts = [400, 204] if cfg.get("putWithoutToken") else [204]  # .../null/...: 400, as RIG
        if cfg["putSubscriptions"]:
            wait = f"() => window.putStatus.length >= {len(expected_puts)}"
            page.wait_for_function(wait, timeout=T * 1000)
            assert page.evaluate("window.putStatus") == expected_puts, console
        if cfg.get("nameField"):
            page.fill("#name", cfg["nameField"])
        page.fill("#greeting", text)
        page.click("#submit-button", timeout=T * 1000)
        data = {"name": cfg["nameField"], "greeting": text} if cfg.get("nameField") else {"name": text}
        shown = json.dumps(data, separators=(",", ":")) if cfg["dataIsObject"] else text
        try:
            page.wait_for_function("(s) => [...document.querySelectorAll('#eventList li')].some((li) => li.textContent.endsWith('] ' + s))",
                                   arg=shown, timeout=3 * T * 1000)
        except Exception:
            pytest.fail(f"greeting not shown: list={page.inner_text('#eventList')!r} seen={page.evaluate('window.seen')}"
                        f" refused={refused} console={console[-10:]}")
        items = page.eval_on_selector_all("#eventList li", "(lis) => lis.map((li) => li.textContent)")
        assert [i for i in items if i.endswith("] " + shown)] and len(items) >= 1, items
        if cfg.get("putWithoutToken"):
            assert len(refused) == 1 and "/connection/sse/null/subscriptions 400" in refused[0], refused
        else:
            assert not refused, refused
    finally:
        context.close()
