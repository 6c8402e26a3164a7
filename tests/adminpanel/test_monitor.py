"""The `monitor` context (staff only), its snapshots, the audit of staff-only
subscriptions, and the monitoring page."""

import asyncio

import pytest
from channels.db import database_sync_to_async
from django.templatetags.static import static

from adminpanel.models import AuditAction, AuditEntry
from adminpanel.monitor import (
    PROCESSES_KEY,
    ProcessFigures,
    PublisherRates,
    monitor_snapshot_collect,
    monitor_tick,
    processes_read,
)
from adminpanel.redis_store import key, redis_client
from realtime.hub import get_hub
from tests.adminpanel.conftest import auser_with_token, connected, next_of, token_header
from tests.offsite import offsite_assets
from tests.realtime.conftest import ORIGIN, make_client

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]


async def subscribe(communicator, contexts: list) -> dict:
    """Subscribe and wait until the connection has recorded it (messages are handled in
    order: the pong comes after the subscribe is done, active_connections included)."""
    await communicator.send_json_to({"type": "subscribe", "contexts": contexts})
    reply = await next_of(communicator, "subscribed")
    await communicator.send_json_to({"type": "ping"})
    await next_of(communicator, "pong")
    return reply


async def staff_subscriptions() -> list[tuple[str, str, str]]:
    return await database_sync_to_async(
        lambda: list(
            AuditEntry.objects.filter(action=AuditAction.STAFF_SUBSCRIPTION)
            .order_by("id")
            .values_list("actor_name", "target", "details__transport")
        )
    )()


async def test_monitor_is_refused_to_non_staff_exactly_like_a_hidden_company(world):
    _, viewer = await auser_with_token("viewer")
    for headers in ([ORIGIN], [token_header(viewer)]):
        client = await connected(headers)
        try:
            reply = await subscribe(client, ["monitor", f"company:{world['hidden']}", "overview"])
            assert reply["contexts"] == ["overview"]
            assert reply["rejected"] == [
                {"context": "monitor", "code": "forbidden_context"},
                {"context": f"company:{world['hidden']}", "code": "forbidden_context"},
            ]
        finally:
            await client.disconnect()
    assert await staff_subscriptions() == []


async def test_staff_only_subscriptions_are_audited_once(world):
    _, key_ = await auser_with_token("operator", staff=True)
    client = await connected([token_header(key_)])
    try:
        contexts = ["monitor", f"company:{world['hidden']}", f"company:{world['acme']}", "overview"]
        reply = await subscribe(client, contexts)
        assert reply["rejected"] == [] and set(reply["contexts"]) == set(contexts)
        # Subscribing again to what the connection has adds nothing.
        await subscribe(client, ["monitor"])
    finally:
        await client.disconnect()
    assert await staff_subscriptions() == [
        ("operator", "monitor", "websocket"),
        ("operator", f"company:{world['hidden']}", "websocket"),
    ]


async def test_a_snapshot_reaches_live_monitor_subscribers_only(world):
    _, key_ = await auser_with_token("operator", staff=True)
    watcher = await connected([token_header(key_)])
    paused = await connected([token_header(key_)])
    viewer = await connected()
    try:
        await subscribe(watcher, ["monitor"])
        await subscribe(paused, ["monitor"])
        await paused.send_json_to({"type": "pause"})
        await next_of(paused, "subscribed")
        await subscribe(viewer, ["overview"])

        hub = get_hub()
        snapshot = None
        for _ in range(3):  # another test run's leader may hold the key for a moment
            snapshot = await monitor_tick(hub, ProcessFigures(hub), PublisherRates())
            if snapshot is not None:
                break
        assert snapshot is not None
        message = await next_of(watcher, "monitor")
        assert message["type"] == "monitor"
        assert message["connections"]["websocket"] >= 3
        assert {"context": "monitor", "connections": 2} in message["top_contexts"]
        assert message["health"]["database"]["ok"] and message["health"]["redis"]["ok"]
        assert message["maintenance"] == {
            "type": "maintenance",
            "active": False,
            "message": "",
            "until": None,
        }
        assert set(message["publisher"]) >= {"lag_ms", "pending", "batches_per_s"}
        assert any(p["connections"] >= 3 for p in message["processes"])
        # Paused and unsubscribed connections get nothing.
        assert await viewer.receive_nothing(timeout=0.3)
        assert await paused.receive_nothing(timeout=0.3)
    finally:
        for communicator in (watcher, paused, viewer):
            await communicator.disconnect()


async def test_the_background_loop_sends_snapshots_by_itself(world, settings):
    settings.MONITOR_INTERVAL_S = 0.2
    _, key_ = await auser_with_token("operator", staff=True)
    watcher = await connected([token_header(key_)])
    try:
        await subscribe(watcher, ["monitor"])
        first = await next_of(watcher, "monitor", timeout=10)
        second = await next_of(watcher, "monitor", timeout=10)
        assert second["at"] >= first["at"]
    finally:
        await watcher.disconnect()


async def test_process_figures_count_errors_and_leave_stopped_processes_out(world):
    client = await connected()
    try:
        await client.send_to(text_data="[1, 2]")
        assert (await next_of(client, "error"))["code"] == "invalid_message"
        figures = ProcessFigures(get_hub()).read()
        assert figures["errors"]["invalid_message"] >= 1
        assert figures["connections"]["websocket"] >= 1
    finally:
        await client.disconnect()

    redis = redis_client()
    redis.hset(key(PROCESSES_KEY), "gone:1", b'{"server": "gone:1", "at": 0}')
    redis.hset(key(PROCESSES_KEY), "garbage", b"{not json")
    servers = [p["server"] for p in await database_sync_to_async(processes_read)()]
    assert "gone:1" not in servers
    assert not redis.hexists(key(PROCESSES_KEY), "gone:1")
    assert not redis.hexists(key(PROCESSES_KEY), "garbage")


def test_publisher_rates_between_snapshots():
    rates = PublisherRates()
    first = rates.figures({"batches": 10, "changes": 100, "lag_sum": 0.5})
    assert first["batches"] == 10 and first["batches_per_s"] is None
    rates.last = (rates.last[0] - 2.0, rates.last[1])  # two seconds ago
    second = rates.figures({"batches": 14, "changes": 140, "lag_sum": 0.7, "last_batch_size": 9})
    assert second["mean_batch_size"] == 10.0
    assert second["mean_lag_ms"] == 50.0
    assert 1.9 <= second["batches_per_s"] <= 2.0
    assert second["last_batch_size"] == 9
    # A Redis reset (counters going back) gives no rate rather than a negative one.
    rates.last = (rates.last[0] - 2.0, rates.last[1])
    assert rates.figures({"batches": 1, "changes": 1})["batches_per_s"] is None


def test_snapshot_from_a_view_has_every_section(world):
    snapshot = monitor_snapshot_collect(PublisherRates())
    assert snapshot["type"] == "monitor"
    assert set(snapshot) >= {
        "at",
        "interval_ms",
        "connections",
        "top_contexts",
        "deliveries_per_s",
        "deliveries_total",
        "processes",
        "publisher",
        "health",
        "errors",
        "rate_limited",
        "maintenance_refusals",
        "maintenance",
    }


# -- the page and its endpoints -------------------------------------------------------------


def test_the_monitoring_page_is_staff_only(client, regular_user, staff_user):
    response = client.get("/admin/monitor/")
    assert response.status_code == 302
    assert response["Location"] == "/admin/login/?next=/admin/monitor/"

    client.force_login(regular_user)
    assert client.get("/admin/monitor/").status_code == 403

    client.force_login(staff_user)
    page = client.get("/admin/monitor/")
    assert page.status_code == 200
    html = page.content.decode()
    assert 'type="module"' in html and static("js/admin/monitor.js") in html
    assert 'data-figure="connections.websocket"' in html
    assert static("vendor/uplot/uPlot.min.css") in html
    assert offsite_assets(html) == []


def test_the_monitor_snapshot_endpoint(staff_client, world):
    body = staff_client.get("/api/admin/monitor").json()
    assert body["type"] == "monitor" and "connections" in body


async def test_static_files_of_the_page_are_served():
    async with make_client() as http:
        for path in (
            "/static/js/admin/monitor.js",
            "/static/vendor/uplot/uPlot.esm.js",
            "/static/vendor/uplot/LICENSE",
        ):
            assert (await http.get(path)).status_code == 200, path


async def test_the_documented_monitor_and_maintenance_examples_match_the_server(world):
    from adminpanel.maintenance import maintenance_switch
    from tests.realtime.test_docs import examples

    documented = examples()
    _, key_ = await auser_with_token("operator", staff=True)
    watcher = await connected([token_header(key_)])
    try:
        await subscribe(watcher, ["monitor", "overview"])
        hub = get_hub()
        while await monitor_tick(hub, ProcessFigures(hub), PublisherRates()) is None:
            pass
        real = await next_of(watcher, "monitor")
        await database_sync_to_async(maintenance_switch)(actor=None, active=True, message="x")
        maintenance = await next_of(watcher, "maintenance")
    finally:
        await watcher.disconnect()

    example = documented["monitor"]
    assert set(example) == set(real)
    for section in ("connections", "publisher", "health", "maintenance"):
        assert set(example[section]) == set(real[section]), section
    assert set(example["health"]["database"]) == set(real["health"]["database"])
    assert set(example["processes"][0]) == set(real["processes"][0])
    assert set(example["top_contexts"][0]) == set(real["top_contexts"][0])
    assert set(documented["maintenance"]) == set(maintenance)


async def test_monitor_over_sse_and_polling(world):
    from tests.realtime.sse_stream import Stream

    _, key_ = await auser_with_token("operator", staff=True)
    auth = {"Authorization": f"Token {key_}"}
    async with make_client() as http:
        poll = await http.get("/api/updates/latest/0?contexts=monitor", headers=auth)
        assert poll.status_code == 200
        assert poll.json()["changes"] == [] and poll.json()["rejected"] == []
        anonymous = await http.get("/api/updates/latest/0?contexts=monitor")
        assert anonymous.json()["rejected"] == [{"context": "monitor", "code": "forbidden_context"}]

    stream = Stream("contexts=monitor", headers=[(b"authorization", f"Token {key_}".encode())])
    _, subscribed = await stream.opened()
    try:
        assert subscribed["contexts"] == ["monitor"]
        hub = get_hub()
        # The stream's `subscribed` comes before its session finishes subscribing.
        while not any(
            "monitor" in s.cursors and "monitor" not in s.switching for s in hub.sessions
        ):
            await asyncio.sleep(0.01)
        while await monitor_tick(hub, ProcessFigures(hub), PublisherRates()) is None:
            pass
        event = await stream.until("monitor")
        assert event["message"]["type"] == "monitor" and "id" not in event
    finally:
        await stream.close()
