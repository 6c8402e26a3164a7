"""refresh_metrics: the minute snapshot, pruning, and the chart series endpoint."""

import datetime as dt

import pytest
from django.utils import timezone

from adminpanel.models import EngagementEvent, RefreshMetric
from adminpanel.refresh_metrics import refresh_metrics_prune, refresh_metrics_snapshot
from adminpanel.tasks import refresh_metrics_prune_task, refresh_metrics_snapshot_task
from realtime.services import connection_open

SERIES = "/api/admin/refresh-metrics"


def events(kind: str, at: dt.datetime, count: int) -> None:
    EngagementEvent.objects.bulk_create(
        EngagementEvent(kind=kind, client="user:1", at=at) for _ in range(count)
    )


def values(at: dt.datetime) -> dict[tuple[str, str], float]:
    return {(m.metric, m.label): m.value for m in RefreshMetric.objects.filter(at=at)}


@pytest.mark.django_db
def test_the_snapshot_records_the_minute_and_counts_the_previous_one():
    now = timezone.now().replace(second=30, microsecond=0)
    minute = now.replace(second=0)
    previous = minute - dt.timedelta(minutes=1)
    for n in range(2):
        connection_open(
            session=f"s{n}",
            transport="websocket",
            user=None,
            audience="public",
            client_address="10.0.0.1",
        )
    connection_open(
        session="s9", transport="sse", user=None, audience="public", client_address="10.0.0.2"
    )
    events("pause", previous + dt.timedelta(seconds=5), 3)
    events("manual_refresh", previous + dt.timedelta(seconds=59), 1)
    events("pause", minute + dt.timedelta(seconds=1), 7)  # this minute: counted next time

    written = refresh_metrics_snapshot(now=now)
    sampled = values(minute)
    assert sampled[("connections", "websocket")] == 2
    assert sampled[("connections", "sse")] == 1
    assert sampled[("connections", "total")] == 3
    assert sampled[("maintenance", "")] == 0
    assert ("publisher_lag_ms", "") in sampled and ("pending_changes", "") in sampled
    counted = values(previous)
    assert counted[("engagement", "pause")] == 3
    assert counted[("engagement", "manual_refresh")] == 1
    assert counted[("engagement", "transport_fallback")] == 0

    # Again in the same minute: overwritten, never duplicated.
    events("resume", previous + dt.timedelta(seconds=10), 2)
    assert refresh_metrics_snapshot(now=now + dt.timedelta(seconds=10)) == written
    assert RefreshMetric.objects.count() == written
    assert values(previous)[("engagement", "resume")] == 2


@pytest.mark.django_db
def test_the_beat_tasks_call_the_services():
    assert refresh_metrics_snapshot_task() > 0
    assert refresh_metrics_prune_task() == {"refresh_metrics": 0, "engagement_events": 0}


@pytest.mark.django_db
def test_pruning_keeps_the_retention_and_works_in_batches(settings):
    settings.REFRESH_METRICS_RETENTION_DAYS = 30
    settings.ENGAGEMENT_RETENTION_DAYS = 7
    now = timezone.now()
    RefreshMetric.objects.bulk_create(
        [
            *(
                RefreshMetric(at=now - dt.timedelta(days=31, minutes=n), metric="m", value=n)
                for n in range(5)
            ),
            RefreshMetric(at=now - dt.timedelta(days=29), metric="m", value=1),
        ]
    )
    events("pause", now - dt.timedelta(days=8), 3)
    events("pause", now - dt.timedelta(days=6), 2)
    assert refresh_metrics_prune(now=now, batch=2) == {"refresh_metrics": 5, "engagement_events": 3}
    assert RefreshMetric.objects.count() == 1
    assert EngagementEvent.objects.count() == 2


@pytest.mark.django_db
def test_the_series_endpoint_buckets_sums_counts_and_averages_samples(staff_client):
    now = timezone.now()
    base = now.replace(minute=now.minute // 10 * 10, second=0, microsecond=0) - dt.timedelta(
        hours=1
    )
    RefreshMetric.objects.bulk_create(
        [
            RefreshMetric(at=base, metric="engagement", label="pause", value=2),
            RefreshMetric(
                at=base + dt.timedelta(minutes=3), metric="engagement", label="pause", value=5
            ),
            RefreshMetric(at=base, metric="connections", label="websocket", value=10),
            RefreshMetric(
                at=base + dt.timedelta(minutes=1), metric="connections", label="websocket", value=20
            ),
            RefreshMetric(
                at=now - dt.timedelta(hours=30), metric="engagement", label="pause", value=99
            ),
        ]
    )
    body = staff_client.get(SERIES, {"hours": 24, "bucket": 600}).json()
    assert body["bucket_s"] == 600
    position = body["times"].index(int(base.timestamp()))
    assert body["series"]["engagement.pause"][position] == 7
    assert body["series"]["connections.websocket"][position] == 15
    assert 99 not in body["series"]["engagement.pause"]
    assert len(body["times"]) in (144, 145)


@pytest.mark.django_db
@pytest.mark.parametrize(
    "query",
    [
        {"hours": 0},
        {"hours": 169},
        {"hours": "x"},
        {"hours": "-1"},
        {"hours": "1e3"},
        {"bucket": 61},
        {"bucket": 7200},
        {"other": 1},
        {"hours": "9" * 40},
    ],
)
def test_bad_series_queries_are_400(staff_client, query):
    response = staff_client.get(SERIES, query)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_parameter"
