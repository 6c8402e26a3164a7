"""The monitoring page updates live: signed in as staff in headless Chromium, the figures
change without a reload when connections open and changes are published."""

import json

import pytest
from django.contrib.auth import get_user_model
from websockets.sync.client import connect

from tests.browser.conftest import orm, screenshot
from tests.helpers import sql

pytestmark = [pytest.mark.timeout(120)]

FIGURE = "document.querySelector('[data-figure=\"{}\"]').textContent"


def figure(page, name: str) -> str:
    return page.evaluate(FIGURE.format(name))


def number(text: str) -> int:
    return int(text.replace(",", "").replace("\u202f", "").replace("\xa0", ""))


def wait_for_figure(page, name: str, predicate_js: str, timeout_ms: int = 20_000) -> None:
    """Wait until `predicate_js` (a JS expression of `v`, the figure as a number) holds."""
    page.wait_for_function(
        '([name, body]) => { const t = document.querySelector(`[data-figure="${name}"]`)'
        ".textContent.replace(/[^0-9.-]/g, ''); if (t === '') return false;"
        " const v = Number(t); return new Function('v', 'return ' + body)(v); }",
        arg=[name, predicate_js],
        timeout=timeout_ms,
    )


def test_the_monitoring_page_updates_live(browser_stack, world, page, page_errors):
    orm(
        get_user_model().objects.create_user,
        "operator",
        password="operator-pass-1",
        is_staff=True,
    )
    base = browser_stack.http_url

    page.goto(f"{base}/admin/monitor/")
    assert "/admin/login/" in page.url  # anonymous: sent to the admin login
    page.fill("#id_username", "operator")
    page.fill("#id_password", "operator-pass-1")
    page.click("input[type=submit]")
    page.wait_for_url(f"{base}/admin/monitor/")
    page.wait_for_selector("body[data-live-state=live]", timeout=20_000)

    # The page's own WebSocket is one connection.
    wait_for_figure(page, "connections.websocket", "v >= 1")
    before = number(figure(page, "connections.websocket"))
    url_before = page.url

    with connect(browser_stack.ws_url, open_timeout=10) as ws:
        assert json.loads(ws.recv(timeout=10))["type"] == "hello"
        ws.send(json.dumps({"type": "subscribe", "contexts": ["industry:steel"]}))
        while json.loads(ws.recv(timeout=10))["type"] != "subscribed":
            pass
        wait_for_figure(page, "connections.websocket", f"v >= {before + 1}")
        wait_for_figure(page, "publisher.changes", "v >= 0")
        changes_before = number(figure(page, "publisher.changes"))
        deliveries_before = number(figure(page, "deliveries_total"))

        # A raw SQL write: captured, published by the publisher process, delivered.
        orm(sql, "UPDATE companies SET name = 'Acme Steel Live' WHERE id = %s", [world["acme"]])
        while True:
            message = json.loads(ws.recv(timeout=15))
            if message["type"] == "batch" and any(
                item["fields"].get("name") == "Acme Steel Live" for item in message["changes"]
            ):
                break
        wait_for_figure(page, "publisher.changes", f"v > {changes_before}")
        wait_for_figure(page, "deliveries_total", f"v > {deliveries_before}")
        assert page.locator('[data-table="top_contexts"] td', has_text="industry:steel").count()
        screenshot(page, "monitor")

    wait_for_figure(page, "connections.websocket", f"v <= {before}")
    assert page.url == url_before  # no reload happened
    assert page.locator(".uplot").count() >= 2  # the vendored charts rendered
    assert page_errors == []
