"""The live dashboard (/dashboard, internal port) in headless Chromium, under load: its figures move
with the traffic (connections, events in, deliveries out, latency), fed by the gateway's own SSE.

RIGFAST_DASHBOARD_SCREENSHOT=<path.png> keeps a screenshot of the loaded page.
"""

from __future__ import annotations

import os
import threading
import time

import httpx
import pytest

from tests.conftest import start_gateway
from tests.helpers import T, make_event, open_sse, uid, wait_conn_count
from tests.integration.test_browser import CHROMIUM, CHROMIUM_ARGS

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is not installed"),
]


def _publish_until(stop: threading.Event, base: str, etype: str, sent: list) -> None:
    with httpx.Client(base_url=base, timeout=T) as c:
        deadline = time.monotonic() + 12 * T  # bounded even if the test never sets stop
        while not stop.is_set() and time.monotonic() < deadline:
            c.post("/_rig/v1/events", json=make_event(etype, {"n": len(sent)}))
            sent.append(1)
            stop.wait(0.01)


def test_dashboard_figures_move_under_load():
    from playwright.sync_api import sync_playwright

    gw = start_gateway(RIGFAST_WORKERS="2")
    etype = uid("dash")
    streams = []
    stop = threading.Event()
    sent: list = []
    publisher = threading.Thread(target=_publish_until, args=(stop, gw.inbound, etype, sent), daemon=True)
    try:
        for _ in range(4):
            s = open_sse(gw.inbound, [{"eventType": etype}])
            s.expect_handshake()
            streams.append(s)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True, timeout=4 * T * 1000)
            try:
                page = browser.new_page(viewport={"width": 1300, "height": 820})
                page.goto(gw.api + "/dashboard", timeout=2 * T * 1000)
                publisher.start()

                def last(pred: str) -> dict:
                    page.wait_for_function(f"() => window.dashboard.last && ({pred})", timeout=4 * T * 1000)
                    return page.evaluate("() => window.dashboard.last")

                first = last("window.dashboard.last.conns >= 4 && window.dashboard.last.out > 0")
                assert first["workers"] == 2
                # more connections: the connection figure follows
                for _ in range(4):
                    s = open_sse(gw.inbound, [{"eventType": etype}])
                    s.expect_handshake()
                    streams.append(s)
                wait_conn_count(gw.api, "sse", 8)
                later = last("window.dashboard.last.conns >= 8")
                assert later["conns"] > first["conns"]
                # deliveries keep coming with 8 subscribers, latency is measured, the page says so
                moving = last("window.dashboard.last.out > 0 && window.dashboard.last.p99 != null")
                assert float(page.text_content("#v-out").replace(",", "")) > 0
                assert page.text_content("#v-conns").strip() == str(moving["conns"])
                assert page.evaluate("() => document.querySelectorAll('#c-rates polyline').length") == 2
                shot = os.environ.get("RIGFAST_DASHBOARD_SCREENSHOT")
                if shot:
                    page.screenshot(path=shot, full_page=True)
                # traffic stops: deliveries per second fall to 0 on the page
                stop.set()
                publisher.join(T)
                last("window.dashboard.last.out === 0")
            finally:
                browser.close()
    finally:
        stop.set()
        for s in streams:
            s.close()
        gw.stop()
    assert sent
