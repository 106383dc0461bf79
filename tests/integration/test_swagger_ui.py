"""Swagger UI at /swagger-ui (internal port) from the packaged swagger-ui files, showing /openapi.json."""

from __future__ import annotations

import os

import httpx
import pytest

from tests.helpers import T
from tests.integration.test_browser import CHROMIUM, CHROMIUM_ARGS


def test_swagger_ui_files_are_served_and_nothing_else(gateway):
    page = httpx.get(gateway.api + "/swagger-ui", timeout=T)
    assert page.status_code == 200 and b'url: "/openapi.json"' in page.content
    js = httpx.get(gateway.api + "/swagger-ui/swagger-ui-bundle.js", timeout=T)
    assert js.status_code == 200 and js.headers["content-type"].startswith("application/javascript") and len(js.content) > 100_000
    for bad in ("/swagger-ui/../../../etc/passwd", "/swagger-ui/index.j2", "/swagger-ui/nope.js"):
        assert httpx.get(gateway.api + bad, timeout=T).status_code == 404


@pytest.mark.browser
@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is not installed")
def test_swagger_ui_renders_the_internal_api_in_chromium(gateway):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True, timeout=4 * T * 1000)
        try:
            page = browser.new_page()
            requests = []
            page.on("request", lambda r: requests.append(r.url))
            page.goto(gateway.api + "/swagger-ui", timeout=2 * T * 1000)
            page.wait_for_selector(".opblock-summary-path", timeout=4 * T * 1000)
            assert "/v3/session-blacklist" in page.inner_text("#swagger-ui")
            assert page.locator(".opblock").count() >= 8  # one block per operation of the document
            # everything came from the gateway itself
            assert requests and all(u.startswith(gateway.api) for u in requests), requests
        finally:
            browser.close()
