"""Each dashboard page in headless Chromium against the live stack: the directory
takes in new companies, every page renders live (with a screenshot) and ticks its
freshness, the overview moves with the data."""

import re
import uuid

import pytest
from playwright.sync_api import expect

from tests.browser.dashboard_page import db, open_live, shot

pytestmark = [pytest.mark.timeout(120)]


def test_a_new_company_appears_in_the_directory(live_stack, world, page, page_errors):
    open_live(page, "/companies/", live_stack.http_url)
    rows = page.locator('[data-table="directory"] tbody tr[data-key]')
    expect(rows).to_have_count(2)  # Acme Steel, Beta Soft (the third is not public)

    new_id = str(uuid.uuid4())
    db(
        "INSERT INTO companies (id, name, country, industry_id, verification_status)"
        " VALUES (%s, 'Aardvark Metals', 'SE', %s, 'pending')",
        [new_id, world["steel"]],
    )
    row = page.locator(f'[data-table="directory"] tr[data-key="{new_id}"]')
    expect(row).to_be_visible(timeout=2_000)
    expect(rows.first).to_have_attribute("data-key", new_id)  # sorted by name: first
    expect(row.locator('[data-field="name"]')).to_have_text("Aardvark Metals")
    expect(row.locator('[data-field="industry"]')).to_have_text("Steel")
    expect(rows).to_have_count(3)

    # A company that does not match the filter stays out.
    page.select_option('[data-filters] select[name="industry"]', "software")
    expect(rows).to_have_count(1)
    db(
        "INSERT INTO companies (name, country, industry_id) VALUES ('Zeta Steel', 'NO', %s)",
        [world["steel"]],
    )
    db("UPDATE companies SET name = 'Beta Software' WHERE id = %s", [world["beta"]])
    expect(rows.first.locator('[data-field="name"]')).to_have_text("Beta Software", timeout=2_000)
    expect(rows).to_have_count(1)
    assert page_errors == []


def test_each_page_renders_live_and_ticks_its_freshness(live_stack, world, page, page_errors):
    base = live_stack.http_url
    pages = {
        "overview": "/",
        "directory": "/companies/",
        "company": f"/companies/{world['acme']}/",
        "industry": "/industries/steel/",
    }
    for name, path in pages.items():
        open_live(page, path, base)
        expect(page.locator("tr.skeleton")).to_have_count(0)
        freshness = page.locator("[data-freshness]").first
        expect(freshness).to_have_text(re.compile(r"updated (just now|\d+ s ago)"))
        shot(page, name)
    # The overview shows the world's figures.
    open_live(page, "/", base)
    expect(page.locator('[data-total="total_tonnes"]')).to_have_text("277")
    top = page.locator('[data-table="top-emitters"] tbody tr[data-key]')
    expect(top).to_have_count(2)
    expect(top.first.locator('[data-field="name"]')).to_have_text("Acme Steel")
    # The freshness line ticks on its own.
    line = page.locator('[data-freshness="totals"] time')
    expect(line).to_have_text(re.compile(r"\d+ s ago"), timeout=5_000)
    # An unknown company or industry is a 404 page, not a broken shell.
    assert page.goto(f"{base}/companies/{uuid.uuid4()}/").status == 404
    assert page.goto(f"{base}/companies/{world['hidden']}/").status == 404
    assert page.goto(f"{base}/industries/no-such-thing/").status == 404
    assert page_errors == []


def test_the_overview_moves_with_the_data(live_stack, world, page, page_errors):
    open_live(page, "/", live_stack.http_url)
    total = page.locator('[data-total="total_tonnes"]')
    expect(total).to_have_text("277")
    top = page.locator('[data-table="top-emitters"] tbody tr[data-key]')
    expect(top.first.locator('[data-field="name"]')).to_have_text("Acme Steel")

    # Beta Soft's 2024 total overtakes Acme's: the ranking reorders, the totals follow.
    db(
        "UPDATE emission_records SET scope1_tonnes = 5000 WHERE company_id = %s AND year = 2024",
        [world["beta"]],
    )
    expect(top.first.locator('[data-field="name"]')).to_have_text("Beta Soft", timeout=3_000)
    expect(total).to_have_text("5,227", timeout=3_000)
    expect(total).to_have_class(re.compile(r"\bflash-up\b"))
    # A significant move reaches the recent-changes feed and the movers.
    expect(page.locator("[data-feed] li").first).to_contain_text("Beta Soft")
    expect(page.locator('[data-table="movers"] tbody tr[data-key]').first).to_contain_text(
        "Beta Soft"
    )
    # A new company appears among the newest.
    db(
        "INSERT INTO companies (name, country, industry_id) VALUES ('Fresh Co', 'PT', %s)",
        [world["software"]],
    )
    newest = page.locator('[data-table="newest"] tbody tr[data-key]')
    expect(newest.first.locator('[data-field="name"]')).to_have_text("Fresh Co", timeout=3_000)
    assert page_errors == []
