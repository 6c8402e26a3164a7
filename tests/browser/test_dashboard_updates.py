"""Updates in place on the dashboard in headless Chromium against the live stack (web
server and publisher processes, real PostgreSQL and Redis): raw SQL writes reach the
right cells without a reload, interaction and manual mode hold updates back,
pause/resume."""

import re

import pytest
from playwright.sync_api import expect

from tests.browser.dashboard_page import (
    cell,
    db,
    engagement_reported,
    head_seq,
    open_acme_live,
    open_acme_scope1,
    open_live,
    record_id,
    wait_published,
)

pytestmark = [pytest.mark.timeout(120)]


@pytest.fixture
def quick_heartbeats(monkeypatch):
    """Live stacks started after this send heartbeats every 2 s, so freshness turns stale
    (twice the heartbeat plus 5 s) within a test's patience."""
    monkeypatch.setenv("REALTIME_HEARTBEAT_S", "2")


def test_raw_sql_update_reaches_the_right_cell_with_a_highlight_and_no_reload(
    live_stack, world, page, page_errors
):
    record, scope1 = open_acme_scope1(page, live_stack, world)
    total = cell(page, "emissions", record, "total_tonnes")
    untouched = cell(page, "emissions", record_id(world["acme"], 2023), "scope1_tonnes")

    db("UPDATE emission_records SET scope1_tonnes = 1700 WHERE id = %s", [record])

    expect(scope1).to_have_text("1,700", timeout=2_000)
    expect(scope1).to_have_class(re.compile(r"\bflash-up\b"))
    expect(total).to_have_text("1,722")
    expect(total).to_have_class(re.compile(r"\bflash-up\b"))
    expect(untouched).to_have_text("100")
    expect(untouched).not_to_have_class(re.compile("flash"))
    # The detail panel says which value changed while it was on screen.
    expect(page.locator("[data-conflicts]")).to_contain_text("Latest total was updated")
    expect(page.locator("[data-announcer]")).to_contain_text("Latest total was updated")
    assert page.evaluate("window.__notReloaded") is True

    db("UPDATE emission_records SET scope1_tonnes = 150 WHERE id = %s", [record])
    expect(scope1).to_have_text("150", timeout=2_000)
    expect(scope1).to_have_class(re.compile(r"\bflash-down\b"))
    assert page.evaluate("window.__notReloaded") is True
    assert page_errors == []


def test_reduced_motion_keeps_the_highlight_without_animation(live_stack, world, browser):
    context = browser.new_context(reduced_motion="reduce")
    page = context.new_page()
    try:
        record = open_acme_live(page, live_stack, world)
        db("UPDATE emission_records SET scope1_tonnes = 900 WHERE id = %s", [record])
        scope1 = cell(page, "emissions", record, "scope1_tonnes")
        expect(scope1).to_have_text("900", timeout=2_000)
        expect(scope1).to_have_class(re.compile(r"\bflash-up\b"))
        assert scope1.evaluate("el => getComputedStyle(el).animationName") == "none"
        skeleton_animation = page.evaluate(
            "() => { const s = document.createElement('span'); s.className = 'sk';"
            " document.body.append(s); const a = getComputedStyle(s).animationName;"
            " s.remove(); return a; }"
        )
        assert skeleton_animation == "none"
    finally:
        context.close()


def test_pointer_on_the_table_holds_the_update_and_shows_the_pending_control(
    live_stack, world, page, page_errors
):
    record, scope1 = open_acme_scope1(page, live_stack, world)
    control = page.locator("[data-pending]")

    page.hover(f'[data-table="emissions"] tr[data-key="{record}"]')
    db("UPDATE emission_records SET scope1_tonnes = 4200 WHERE id = %s", [record])

    # Received, but held while the pointer rests on the table.
    page.wait_for_function("liveDashboard.scheduler.pendingCount > 0", timeout=5_000)
    expect(control).to_be_visible()
    expect(control).to_have_text(re.compile(r"^\d+ updates?, show now$"))
    expect(scope1).to_have_text("200")

    # The pointer leaves: the person is idle, the update applies and the control goes.
    page.mouse.move(5, 5)
    expect(scope1).to_have_text("4,200", timeout=5_000)
    expect(control).to_be_hidden()

    # Held again; this time "show now" applies it at once, pointer or not.
    page.hover(f'[data-table="emissions"] tr[data-key="{record}"]')
    db("UPDATE emission_records SET scope1_tonnes = 4300 WHERE id = %s", [record])
    page.wait_for_function("liveDashboard.scheduler.pendingCount > 0", timeout=5_000)
    expect(scope1).to_have_text("4,200")
    control.click()
    expect(scope1).to_have_text("4,300")
    assert page.evaluate("window.__notReloaded") is True
    assert page_errors == []


def test_focus_in_a_form_field_holds_directory_updates(live_stack, world, page):
    open_live(page, "/companies/", live_stack.http_url)
    name = cell(page, "directory", str(world["beta"]), "name")
    expect(name).to_have_text("Beta Soft")
    page.focus('[data-filters] input[name="search"]')
    db("UPDATE companies SET name = 'Beta Software' WHERE id = %s", [world["beta"]])
    page.wait_for_function("liveDashboard.scheduler.pendingCount > 0", timeout=5_000)
    expect(name).to_have_text("Beta Soft")
    expect(page.locator("[data-pending]")).to_be_visible()
    page.locator("h1").click()  # focus leaves the field
    expect(name).to_have_text("Beta Software", timeout=5_000)


def test_pause_stops_updates_is_remembered_and_resume_catches_up(
    quick_heartbeats, live_stack, world, page, page_errors
):
    record, scope1 = open_acme_scope1(page, live_stack, world)
    pause = page.locator("[data-pause]")

    pause.click()
    expect(page.locator("body")).to_have_attribute("data-live-state", "paused")
    expect(pause).to_have_text("Resume")
    expect(pause).to_have_attribute("aria-pressed", "true")
    engagement_reported(page, "pause")
    before = head_seq()
    db("UPDATE emission_records SET scope1_tonnes = 5100 WHERE id = %s", [record])
    wait_published(before, page)
    page.wait_for_timeout(1_000)  # room for a delivery that must not happen
    expect(scope1).to_have_text("200")
    # Nothing confirms the panels while paused: they turn stale.
    expect(page.locator('[data-freshness="emissions"]')).to_have_attribute(
        "data-stale", "true", timeout=20_000
    )

    # Remembered across a reload (the reload itself shows the data as of now).
    page.reload()
    expect(page.locator("body")).to_have_attribute("data-live-state", "paused")
    expect(scope1).to_have_text("5,100")
    before = head_seq()
    db("UPDATE emission_records SET scope1_tonnes = 5200 WHERE id = %s", [record])
    wait_published(before, page)
    page.wait_for_timeout(1_000)
    expect(scope1).to_have_text("5,100")

    page.locator("[data-pause]").click()
    expect(page.locator("body")).to_have_attribute("data-live-state", "live", timeout=5_000)
    expect(scope1).to_have_text("5,200", timeout=5_000)
    engagement_reported(page, "resume")
    expect(page.locator('[data-freshness="emissions"]')).to_have_attribute("data-stale", "false")
    assert page_errors == []


def test_a_category_set_to_manual_waits_for_show_now(live_stack, world, page, page_errors):
    record = open_acme_live(page, live_stack, world)
    page.locator("[data-settings-toggle]").click()
    page.select_option('[data-settings] select[name="company_metrics"]', "manual")
    page.locator("[data-settings-toggle]").click()
    page.mouse.move(5, 5)
    scope1 = cell(page, "emissions", record, "scope1_tonnes")

    db("UPDATE emission_records SET scope1_tonnes = 777 WHERE id = %s", [record])
    page.wait_for_function("liveDashboard.scheduler.pendingCount > 0", timeout=5_000)
    page.wait_for_timeout(1_000)
    expect(scope1).to_have_text("200")
    expect(page.locator("[data-pending]")).to_be_visible()
    page.locator("[data-pending]").click()
    expect(scope1).to_have_text("777")

    # Remembered (without the preferences API, in this browser) across a reload.
    page.reload()
    expect(page.locator('[data-settings] select[name="company_metrics"]')).to_have_value("manual")
    assert page_errors == []
