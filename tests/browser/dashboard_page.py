"""The dashboard pages as the browser tests drive them: open a page and wait until it
is live, find a table cell, write to the database (through `orm`) and wait for the
publisher, screenshots under tests/artifacts/."""

import re
from pathlib import Path

from playwright.sync_api import Locator, expect

from changes.selectors import change_log_state
from tests.browser.conftest import orm
from tests.helpers import sql

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
LIVE = re.compile(r"^(live|polling)$")


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
