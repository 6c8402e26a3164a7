"""Browser tests: headless Chromium (Debian's `chromium` package) driven by Playwright,
against the live stack of tests/live (the web server and the publisher as processes).

`.ci/run` installs chromium when /usr/bin/chromium is missing; Playwright comes from the
dev extra (pip). `playwright install` is never run: its browser downloads are not how
this project gets a browser. Screenshots go to test-artifacts/browser/ (gitignored).
"""

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from django.db import connections

from tests.live.conftest import REPO, live_stack  # noqa: F401 (the fixture, reused)

CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
ARTIFACTS = REPO / "test-artifacts" / "browser"


@pytest.fixture
def browser(browser_stack):
    """Headless Chromium for one test. Without the browser, the tests are skipped on a
    developer's machine and fail in CI (where .ci/run installs it).

    While it is open, Playwright's synchronous API keeps an asyncio loop running in this
    thread, and Django refuses ORM calls inside a running loop. So it opens after the
    live stack and its test database (set up and flushed around it, outside its
    lifetime), and the test's own ORM calls go through `orm()`. Request data fixtures
    (`world`) before `page`."""
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} is missing: apt-get install chromium"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start.
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"]
        )
        yield launched
        launched.close()


@pytest.fixture
def page(browser):
    """A fresh browser context (cookies, storage) and page."""
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    yield context.new_page()
    context.close()


def orm(function, *args, **kwargs):
    """Run a database call in a thread of its own (see `browser`), closing its connection."""

    def run():
        try:
            return function(*args, **kwargs)
        finally:
            connections.close_all()

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(run).result()


@pytest.fixture
def page_errors(page) -> list[str]:
    """Uncaught errors of the page's scripts, collected as they happen."""
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    return errors


@pytest.fixture
def fast_monitor(monkeypatch):
    """Live stacks started after this send monitor snapshots every 0.5 s."""
    monkeypatch.setenv("MONITOR_INTERVAL_S", "0.5")
    monkeypatch.setenv("PUBLISHER_METRICS_FLUSH_S", "0.2")


@pytest.fixture
def browser_stack(fast_monitor, live_stack):  # noqa: F811 (the reused fixture)
    """The live stack (web server and publisher processes on the test database)."""
    return live_stack


def screenshot(page, name: str) -> Path:
    """Save a full-page screenshot under test-artifacts/browser/."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
