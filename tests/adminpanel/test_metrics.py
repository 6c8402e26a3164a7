"""`/metrics`: the named Prometheus metrics, the publisher's histograms through Redis."""

import re

import pytest
from channels.db import database_sync_to_async
from redis import Redis

from adminpanel import metrics as operator_metrics
from adminpanel import redis_store
from adminpanel.metrics import publisher_counters, publisher_metrics_flush
from changes.services import publish_fan_out_schedule
from tests.adminpanel.conftest import connected, next_of
from tests.helpers import sql

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]

NAMED = (
    "carbon_publisher_lag_seconds",
    "carbon_publisher_batch_size",
    "carbon_publisher_batches_total",
    "carbon_publisher_changes_total",
    "carbon_publisher_suppressed_frames_total",
    "carbon_publisher_pending_changes",
    "carbon_publisher_backlog_age_seconds",
    "carbon_maintenance_active",
    "carbon_engagement_events_total",
    "carbon_realtime_connections",
    "carbon_realtime_process_connections",
    "carbon_realtime_deliveries_total",
    "carbon_realtime_errors_total",
    "carbon_realtime_rate_limited_total",
    "carbon_realtime_maintenance_refusals_total",
)


def scrape(client) -> str:
    response = client.get("/metrics")
    assert response.status_code == 200
    return response.content.decode()


def sample(text: str, name: str, labels: str = "") -> float:
    pattern = re.escape(name) + (re.escape("{" + labels + "}") if labels else "") + r" (\S+)"
    match = re.search(r"^" + pattern + r"$", text, re.MULTILINE)
    assert match, f"{name}{{{labels}}} not in /metrics"
    return float(match.group(1))


def test_every_named_metric_is_exposed(client, world):
    text = scrape(client)
    for name in NAMED:
        # Counters are typed with or without `_total`, by prometheus_client's version.
        typed = rf"^# TYPE ({name}|{name.removesuffix('_total')}) "
        assert re.search(typed, text, re.MULTILINE), name
    assert 'carbon_publisher_lag_seconds_bucket{le="+Inf"}' in text
    assert 'carbon_publisher_batch_size_bucket{le="20000.0"}' in text
    assert 'carbon_engagement_events_total{kind="manual_refresh"}' in text


async def test_a_published_batch_lands_in_the_histograms_of_any_web_process(world):
    from django.test import AsyncClient

    http = AsyncClient()
    await publish_fan_out_schedule()  # the world's own inserts
    await database_sync_to_async(publisher_metrics_flush)()
    before = (await http.get("/metrics")).content.decode()
    count = sample(before, "carbon_publisher_batch_size_count")
    changes = sample(before, "carbon_publisher_changes_total")

    await database_sync_to_async(sql)("UPDATE companies SET name = name || ' Ltd'")
    result = await publish_fan_out_schedule()
    assert result.changes == 3
    await database_sync_to_async(publisher_metrics_flush)()

    after = (await http.get("/metrics")).content.decode()
    assert sample(after, "carbon_publisher_batch_size_count") == count + 1
    assert sample(after, "carbon_publisher_changes_total") == changes + 3
    assert sample(after, "carbon_publisher_lag_seconds_count") == count + 1
    bucket = "carbon_publisher_batch_size_bucket"
    assert sample(after, bucket, 'le="5.0"') == sample(before, bucket, 'le="5.0"') + 1
    assert sample(after, bucket, 'le="2.0"') == sample(before, bucket, 'le="2.0"')
    counters = await database_sync_to_async(publisher_counters)()
    assert counters["last_batch_size"] == 3


def test_a_flush_while_redis_is_away_keeps_the_counts_for_the_next(monkeypatch, world):
    from changes.publisher import PublishResult

    publisher_metrics_flush()  # what other tests recorded, out of the way
    before = publisher_counters().get("batches", 0)
    away = Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2, socket_timeout=0.2)
    monkeypatch.setattr(redis_store, "_sync_client", away)
    operator_metrics.publisher_batch_record(PublishResult(changes=4, lag_ms=12.0))
    assert publisher_metrics_flush() is False
    operator_metrics.publisher_batch_record(PublishResult(changes=6, lag_ms=30.0))
    monkeypatch.setattr(redis_store, "_sync_client", None)
    assert publisher_metrics_flush() is True
    counters = publisher_counters()
    assert counters["batches"] == before + 2
    assert counters["last_batch_size"] == 6


async def test_error_frames_are_counted(world):
    from django.test import AsyncClient

    http = AsyncClient()
    before = (await http.get("/metrics")).content.decode()
    code = 'code="invalid_message"'
    start = sample(before, "carbon_realtime_errors_total", code) if code in before else 0
    ws = await connected()
    try:
        await ws.send_to(text_data="not json")
        await next_of(ws, "error")
    finally:
        await ws.disconnect()
    after = (await http.get("/metrics")).content.decode()
    assert sample(after, "carbon_realtime_errors_total", code) == start + 1
