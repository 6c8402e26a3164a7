"""Notifications and maintenance messages on the dashboard in headless Chromium against
the live stack: toasts, acknowledgements (also made offline), the banner."""

import json
import uuid

import pytest
from asgiref.sync import async_to_sync
from playwright.sync_api import expect

from realtime.broadcast import system_message_send
from tests.browser.conftest import orm
from tests.browser.dashboard_page import head_seq, open_live

pytestmark = [pytest.mark.timeout(120)]


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
