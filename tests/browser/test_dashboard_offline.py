"""The dashboard offline and from its cache in headless Chromium against the live
stack: the data stays with a banner and catches up when back, a reload shows the
cached view, a hovered link is prefetched."""

import re

import pytest
from playwright.sync_api import expect

from tests.browser.dashboard_page import (
    cell,
    db,
    open_acme_live,
    open_acme_scope1,
    open_live,
    record_id,
)

pytestmark = [pytest.mark.timeout(120)]


def test_offline_keeps_the_data_with_a_banner_and_catches_up_when_back(
    live_stack, world, page, page_errors
):
    record, scope1 = open_acme_scope1(page, live_stack, world)
    banner = page.locator("[data-offline-banner]")
    expect(banner).to_be_hidden()

    page.context.set_offline(True)
    expect(page.locator("body")).to_have_attribute("data-live-state", "offline", timeout=5_000)
    expect(banner).to_be_visible()
    expect(banner).to_contain_text(re.compile(r"Offline since \d\d:\d\d"))
    expect(page.locator("[data-live-label]")).to_have_text("offline")
    expect(scope1).to_have_text("200")  # the data stays on screen

    db("UPDATE emission_records SET scope1_tonnes = 8100 WHERE id = %s", [record])
    db("UPDATE companies SET data_quality_score = 12.5 WHERE id = %s", [world["acme"]])
    page.context.set_offline(False)

    expect(page.locator("body")).to_have_attribute("data-live-state", "live", timeout=15_000)
    expect(scope1).to_have_text("8,100", timeout=5_000)
    expect(page.locator('[data-fact="data_quality_score"]')).to_have_text("12.5")
    expect(banner).to_be_hidden()
    assert page.evaluate("window.__notReloaded") is True
    assert page_errors == []


def test_a_reload_shows_the_cached_view_when_the_api_cannot_answer(live_stack, world, page):
    record = open_acme_live(page, live_stack, world)
    db("UPDATE emission_records SET scope1_tonnes = 9100 WHERE id = %s", [record])
    scope1 = cell(page, "emissions", record, "scope1_tonnes")
    expect(scope1).to_have_text("9,100", timeout=2_000)
    page.wait_for_timeout(1_500)  # the cache is written at most once a second

    # The snapshot endpoint fails: the page shows what it cached, then catches up live.
    page.route(re.compile(r"/api/companies/"), lambda route: route.abort())
    page.reload()
    expect(scope1).to_have_text("9,100", timeout=5_000)
    expect(page.locator('[data-fact="verification_status"]')).to_have_text("verified")
    expect(page.locator("body")).to_have_attribute("data-live-state", "live", timeout=15_000)
    db("UPDATE emission_records SET scope1_tonnes = 9200 WHERE id = %s", [record])
    expect(scope1).to_have_text("9,200", timeout=2_000)


def test_hovering_a_company_link_prefetches_it_for_an_instant_page(live_stack, world, page):
    open_live(page, "/companies/", live_stack.http_url)
    link = page.locator(f'[data-table="directory"] tr[data-key="{world["beta"]}"] a')
    link.hover()
    page.wait_for_function(
        "async (id) => !!(await import('/static/js/cache.js')).cacheGet"
        " && !!(await (await import('/static/js/cache.js')).cacheGet('company:' + id))",
        arg=str(world["beta"]),
        timeout=5_000,
    )
    # With the company's API blocked, the page still opens with its data.
    page.route(re.compile(rf"/api/companies/{world['beta']}/"), lambda route: route.abort())
    link.click()
    expect(page.locator('[data-fact="verification_status"]')).to_have_text("pending")
    expect(cell(page, "emissions", record_id(world["beta"], 2024), "total_tonnes")).to_have_text(
        "55"
    )
