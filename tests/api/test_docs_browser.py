"""The API docs page renders in a real Chromium and every request it makes stays on this server."""

from __future__ import annotations

import pytest

from tests.support import need_program

pytestmark = pytest.mark.browser


def test_swagger_ui_renders_the_schema_from_this_server_only(live_server):
    chromium = need_program("chromium")
    from playwright.sync_api import sync_playwright

    requested: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        try:
            page = browser.new_page()
            page.on("request", lambda request: requested.append(request.url))
            page.goto(f"{live_server.url}/api/docs/")
            page.wait_for_selector(".swagger-ui .info .title", timeout=15000)
            assert "mailhost API" in page.inner_text(".swagger-ui .info .title")
            page.wait_for_selector("text=/api/relay-credentials/{id}/revoke/", timeout=15000)
        finally:
            browser.close()
    assert f"{live_server.url}/api/schema/" in requested
    outside = [url for url in requested if not url.startswith(live_server.url) and not url.startswith("data:")]
    assert not outside, outside
