"""The dashboard's transports in headless Chromium against the live stack: fallback
from WebSocket to SSE to polling, a forced transport, and a lost batch noticed by its
prev_seq and read from the log."""

import json
import re

import pytest
from playwright.sync_api import expect

from tests.browser.dashboard_page import cell, db, engagement_reported, open_acme_live, record_id

pytestmark = [pytest.mark.timeout(120)]


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
