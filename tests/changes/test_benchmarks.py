"""Benchmark recomputes go through capture and publication, carrying their impact."""

from decimal import Decimal

import pytest

from changes.publisher import change_batch_publish
from changes.services import publish_and_schedule
from emissions.publishing import benchmarks_schedule
from emissions.services import industry_benchmarks_recompute
from tests.helpers import sql

pytestmark = pytest.mark.django_db


def test_recompute_publishes_benchmark_changes_with_impact(world):
    assert industry_benchmarks_recompute(industry_id=world["steel"]) > 0
    change_batch_publish()
    # No change, no new benchmark rows.
    assert industry_benchmarks_recompute(industry_id=world["steel"]) == 0

    sql(
        "INSERT INTO companies (name, country, industry_id) VALUES ('Third Steel', 'IT', %s)",
        [world["steel"]],
    )
    sql(
        "INSERT INTO emission_records (company_id, year, scope1_tonnes)"
        " SELECT id, 2024, 400 FROM companies WHERE name = 'Third Steel'"
    )
    change_batch_publish()
    assert industry_benchmarks_recompute(industry_id=world["steel"]) == 2  # two metrics
    result = change_batch_publish()
    items = [
        item
        for frame in result.frames
        if frame.context == "industry:steel" and frame.audience == "public"
        for item in frame.message["changes"]
        if item["entity"] == "industry_benchmark"
    ]
    total = next(item for item in items if item["fields"]["metric"] == "total_tonnes")
    assert total["op"] == "update"
    assert total["fields"]["industry"] == "steel" and total["fields"]["year"] == 2024
    # 2024, public, not rejected: Acme 222 and Third Steel 400: median 311 (was 222).
    assert total["previous"]["median"] == Decimal("222.000")
    assert total["fields"]["median"] == Decimal("311.000")
    impact = total["fields"]["impact"]
    assert impact["median_before"] == Decimal("222.000")
    assert impact["median_after"] == Decimal("311.000")
    assert impact["median_change_pct"] == Decimal("40.09")
    assert impact["crossed_median"]["count"] == 0
    assert total["significance"] == "major"


def broker_queue_messages() -> list[dict]:
    """The task messages waiting in the broker's default queue (Redis, this run's prefix)."""
    import json

    import redis
    from django.conf import settings

    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    try:
        raw = client.lrange(f"{settings.REDIS_PREFIX}:celery:celery", 0, -1)
    finally:
        client.close()
    return [json.loads(message) for message in raw]


@pytest.fixture
def empty_broker_queue():
    import redis
    from django.conf import settings

    def empty():
        client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
        client.delete(f"{settings.REDIS_PREFIX}:celery:celery")
        client.close()

    empty()
    yield
    empty()


def test_publishing_record_changes_queues_one_debounced_recompute(world, empty_broker_queue):
    """The publisher's follow-up queues one recompute per industry and window on the
    configured broker (the real path: a worker runs it, tests/live/test_celery.py)."""
    from django.core.cache import cache

    steel = str(world["steel"])
    cache.delete(f"benchmarks-due:{steel}")
    try:
        publish_and_schedule()
        queued = [m["headers"] for m in broker_queue_messages()]
        recomputes = [h for h in queued if h["task"].endswith("industry_benchmarks_recompute_task")]
        assert [h["argsrepr"] for h in recomputes].count(repr([steel])) == 1
        assert recomputes[0]["eta"] is not None  # runs at the end of the debounce window
        # Within the window a second batch queues nothing more.
        benchmarks_schedule(industry_ids={steel})
        again = [m["headers"]["argsrepr"] for m in broker_queue_messages()]
        assert again.count(repr([steel])) == 1
    finally:
        cache.delete(f"benchmarks-due:{steel}")
