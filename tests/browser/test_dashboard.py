"""The dashboard pages in headless Chromium against the live stack (web server and
publisher processes, real PostgreSQL and Redis): raw SQL writes reach the right cells
without a reload, interaction holds updates back, pause/resume, transport fallback,
offline mode and the cache, the directory, notifications, and screenshots of each page.

Data fixtures (`world`) come before `page` in every signature (see tests/browser/conftest.py:
Playwright keeps an event loop running in the test's thread, so database calls go through
`orm`)."""

import json
import re
import uuid
from pathlib import Path

import pytest
from asgiref.sync import async_to_sync
from playwright.sync_api import Locator, expect

from changes.selectors import change_log_state
from realtime.broadcast import system_message_send
from tests.browser.conftest import orm
from tests.helpers import sql

pytestmark = [pytest.mark.timeout(120)]

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
LIVE = re.compile(r"^(live|polling)$")


@pytest.fixture
def quick_heartbeats(monkeypatch):
    """Live stacks started after this send heartbeats every 2 s, so freshness turns stale
    (twice the heartbeat plus 5 s) within a test's patience."""
    monkeypatch.setenv("REALTIME_HEARTBEAT_S", "2")


def shot(page, name: str) -> Path:
    """A full-page screenshot under tests/artifacts/ (gitignored)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def db(statement: str, params=None):
    return orm(sql, statement, params)


def head_seq() -> int:
    return orm(change_log_state).head_seq


def wait_published(since: int, page) -> int:
    """Wait until the publisher has published something after `since`; the new head."""
    page.wait_for_function(
        "async (since) => (await (await fetch('/api/updates/status')).json()).head_seq > since",
        arg=since,
        timeout=10_000,
    )
    return head_seq()


def engagement_reported(page, kind: str, **fields) -> None:
    """Wait until the page has reported an engagement event (static/js/engagement.js sends
    them in batches every couple of seconds) and it is stored."""
    where = " AND ".join(["kind = %s", *(f"{name} = %s" for name in fields)])
    for _ in range(40):
        if db(f"SELECT count(*) FROM engagement_events WHERE {where}", [kind, *fields.values()])[0][
            0
        ]:
            return
        page.wait_for_timeout(250)
    raise AssertionError(f"no {kind} engagement event {fields} was reported")


def record_id(company, year: int) -> str:
    rows = db(
        "SELECT id FROM emission_records WHERE company_id = %s AND year = %s", [company, year]
    )
    return str(rows[0][0])


def open_live(page, path: str, base: str):
    page.goto(f"{base}{path}")
    expect(page.locator("body")).to_have_attribute("data-live-state", LIVE, timeout=15_000)
    # A marker that a reload would wipe out.
    page.evaluate("window.__notReloaded = true")


def cell(page, table: str, key: str, field: str):
    return page.locator(f'[data-table="{table}"] tr[data-key="{key}"] td[data-field="{field}"]')


def open_acme_live(page, live_stack, world) -> str:
    """Acme's company page, opened and live; the id of its 2024 record."""
    record = record_id(world["acme"], 2024)
    open_live(page, f"/companies/{world['acme']}/", live_stack.http_url)
    return record


def open_acme_scope1(page, live_stack, world) -> tuple[str, Locator]:
    """Acme's company page, live: its 2024 record's id and that record's scope 1 cell,
    showing the seeded 200 before the test changes it."""
    record = open_acme_live(page, live_stack, world)
    scope1 = cell(page, "emissions", record, "scope1_tonnes")
    expect(scope1).to_have_text("200")
    return record, scope1


# -- updates in place -------------------------------------------------------------------------


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


# -- transports ---------------------------------------------------------------------------------


def block_websocket(page) -> list[str]:
    """Refuse the dashboard WebSocket, as a proxy that does not pass WebSockets would."""
    refused: list[str] = []

    def refuse(ws):
        refused.append(ws.url)
        ws.close()

    page.route_web_socket(re.compile(r"/ws/dashboard/updates"), refuse)
    return refused


def test_with_websocket_blocked_the_page_falls_back_to_sse_and_stays_live(
    live_stack, world, page, page_errors
):
    refused = block_websocket(page)
    record = record_id(world["acme"], 2024)
    page.goto(f"{live_stack.http_url}/companies/{world['acme']}/")
    expect(page.locator("body")).to_have_attribute("data-transport", "sse", timeout=15_000)
    expect(page.locator("body")).to_have_attribute("data-live-state", "live")
    expect(page.locator("[data-live-label]")).to_have_text("live · SSE")
    assert refused, "the page tried the WebSocket first"
    engagement_reported(page, "transport_fallback", from_transport="websocket", transport="sse")

    db("UPDATE emission_records SET scope1_tonnes = 6100 WHERE id = %s", [record])
    expect(cell(page, "emissions", record, "scope1_tonnes")).to_have_text("6,100", timeout=2_000)
    assert page_errors == []


def test_with_websocket_and_sse_blocked_the_page_polls_and_stays_live(
    live_stack, world, page, page_errors
):
    block_websocket(page)
    streams: list[str] = []

    def refuse_stream(route):
        streams.append(route.request.url)
        route.abort()

    page.route(re.compile(r"/api/stream/dashboard"), refuse_stream)
    record = record_id(world["acme"], 2024)
    page.goto(f"{live_stack.http_url}/companies/{world['acme']}/")
    expect(page.locator("body")).to_have_attribute("data-live-state", "polling", timeout=20_000)
    expect(page.locator("body")).to_have_attribute("data-transport", "polling")
    assert streams, "the page tried SSE before polling"

    db("UPDATE emission_records SET scope1_tonnes = 7100 WHERE id = %s", [record])
    expect(cell(page, "emissions", record, "scope1_tonnes")).to_have_text("7,100", timeout=2_000)
    db("UPDATE companies SET verification_status = 'pending' WHERE id = %s", [world["acme"]])
    expect(page.locator('[data-fact="verification_status"]')).to_have_text("pending", timeout=2_000)
    assert page_errors == []


@pytest.mark.parametrize("transport", ["sse", "polling"])
def test_a_forced_transport_is_used_alone(live_stack, world, page, transport):
    requests: list[str] = []
    page.on("websocket", lambda ws: requests.append(ws.url))
    record = record_id(world["acme"], 2024)
    page.goto(f"{live_stack.http_url}/companies/{world['acme']}/?transport={transport}")
    expect(page.locator("body")).to_have_attribute("data-transport", transport, timeout=15_000)
    db("UPDATE emission_records SET scope2_tonnes = 333 WHERE id = %s", [record])
    expect(cell(page, "emissions", record, "scope2_tonnes")).to_have_text("333", timeout=2_000)
    assert requests == []


# -- offline, the cache and prefetch -------------------------------------------------------------


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


# -- the directory and the other pages -----------------------------------------------------------


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


# -- notifications -------------------------------------------------------------------------------


def test_a_critical_notification_toasts_and_is_acknowledged(live_stack, world, page, page_errors):
    sent_frames: list[str] = []
    page.on("websocket", lambda ws: ws.on("framesent", lambda frame: sent_frames.append(frame)))
    open_live(page, "/", live_stack.http_url)
    expect(page.locator("body")).to_have_attribute("data-transport", "websocket")
    notification_id = str(uuid.uuid4())
    notification = {
        "type": "notification",
        "id": notification_id,
        "level": "critical",
        "title": "Acme Steel: 2024 emissions up 90%",
        "body": "Total emissions for 2024 moved from 222 t to 422 t.",
        "context": f"company:{world['acme']}",
        "seq": head_seq(),
        "requires_ack": True,
    }
    orm(async_to_sync(system_message_send), notification)

    toast = page.locator(f'.toast[data-notification="{notification_id}"]')
    expect(toast).to_be_visible(timeout=5_000)
    expect(toast).to_have_attribute("role", "alert")
    expect(toast).to_contain_text("Acme Steel: 2024 emissions up 90%")
    expect(page.locator("[data-unread]")).to_have_text("1")

    # The same notification again (a retry) is shown once.
    orm(async_to_sync(system_message_send), notification)
    page.wait_for_timeout(500)
    expect(page.locator(".toast")).to_have_count(1)

    toast.get_by_role("button", name="Acknowledge").click()
    expect(toast).to_have_count(0)
    acks = [json.loads(frame) for frame in sent_frames if '"ack"' in frame]
    assert acks == [{"type": "ack", "notification": notification_id}]

    page.locator("[data-notifications-toggle]").click()
    item = page.locator(f'[data-notification-items] li[data-notification="{notification_id}"]')
    expect(item).to_contain_text("acknowledged")
    expect(page.locator("[data-unread]")).to_be_hidden()

    # An informational one under the default threshold goes to the list only.
    orm(
        async_to_sync(system_message_send),
        {**notification, "id": str(uuid.uuid4()), "level": "info", "requires_ack": False},
    )
    expect(page.locator("[data-notification-items] li")).to_have_count(2, timeout=5_000)
    expect(page.locator(".toast")).to_have_count(0)
    assert page_errors == []


def test_acknowledgements_made_offline_are_sent_when_back(live_stack, world, page):
    sent_frames: list[str] = []
    page.on("websocket", lambda ws: ws.on("framesent", lambda frame: sent_frames.append(frame)))
    open_live(page, "/", live_stack.http_url)
    notification_id = str(uuid.uuid4())
    orm(
        async_to_sync(system_message_send),
        {
            "type": "notification",
            "id": notification_id,
            "level": "critical",
            "title": "Check this",
            "body": "Please acknowledge.",
            "context": None,
            "seq": head_seq(),
            "requires_ack": True,
        },
    )
    toast = page.locator(f'.toast[data-notification="{notification_id}"]')
    expect(toast).to_be_visible(timeout=5_000)
    page.context.set_offline(True)
    expect(page.locator("body")).to_have_attribute("data-live-state", "offline", timeout=5_000)
    toast.get_by_role("button", name="Acknowledge").click()
    assert page.evaluate("JSON.parse(localStorage.getItem('carbon.acks'))") == [notification_id]
    page.context.set_offline(False)
    expect(page.locator("body")).to_have_attribute("data-live-state", "live", timeout=15_000)
    page.wait_for_function("JSON.parse(localStorage.getItem('carbon.acks')).length === 0")
    assert {"type": "ack", "notification": notification_id} in [
        json.loads(frame) for frame in sent_frames if '"ack"' in frame
    ]


def test_a_lost_batch_is_noticed_by_its_prev_seq_and_read_from_the_log(
    live_stack, world, page, page_errors
):
    """The first batch of the company's context never reaches the page (dropped between
    server and browser); the next one's prev_seq gives the gap away, and the client reads
    it over HTTP before applying anything."""
    context = f"company:{world['acme']}"
    dropped: list[dict] = []

    def lossy(ws):
        server = ws.connect_to_server()

        def from_server(message):
            frame = json.loads(message)
            if frame.get("type") == "batch" and frame["context"] == context and not dropped:
                dropped.append(frame)
                return
            ws.send(message)

        server.on_message(from_server)
        ws.on_message(lambda message: server.send(message))

    page.route_web_socket(re.compile(r"/ws/dashboard/updates"), lossy)
    record = open_acme_live(page, live_stack, world)
    expect(page.locator("body")).to_have_attribute("data-transport", "websocket")
    gap_reads: list[str] = []

    def note_gap_read(request):
        if "/api/updates/latest/" in request.url:
            gap_reads.append(request.url)

    page.on("request", note_gap_read)

    db("UPDATE emission_records SET scope2_tonnes = 2222 WHERE id = %s", [record])
    for _ in range(50):
        if dropped:
            break
        page.wait_for_timeout(100)
    assert dropped, "the first batch was dropped on its way"
    db("UPDATE emission_records SET scope3_tonnes = 3333 WHERE id = %s", [record])

    expect(cell(page, "emissions", record, "scope3_tonnes")).to_have_text("3,333", timeout=5_000)
    expect(cell(page, "emissions", record, "scope2_tonnes")).to_have_text("2,222")
    assert any(context in url.replace("%3A", ":") for url in gap_reads)
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


def test_maintenance_messages_show_a_banner(live_stack, world, page):
    open_live(page, "/", live_stack.http_url)
    banner = page.locator("[data-maintenance-banner]")
    expect(banner).to_be_hidden()
    orm(
        async_to_sync(system_message_send),
        {
            "type": "maintenance",
            "active": True,
            "message": "Upgrading the database.",
            "until": None,
        },
    )
    expect(banner).to_be_visible(timeout=5_000)
    expect(banner).to_contain_text("Upgrading the database.")
    orm(
        async_to_sync(system_message_send),
        {"type": "maintenance", "active": False, "message": "", "until": None},
    )
    expect(banner).to_be_hidden(timeout=5_000)
