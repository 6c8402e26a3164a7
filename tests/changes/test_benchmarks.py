"""Benchmark recomputes go through capture and publication, carrying their impact."""

from decimal import Decimal

import pytest

from changes.publisher import change_batch_publish
from changes.services import benchmarks_schedule, publish_and_schedule
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


def test_publishing_record_changes_schedules_a_debounced_recompute(world, settings):
    from django.core.cache import cache

    settings.CELERY_TASK_ALWAYS_EAGER = True
    from config.celery import app

    app.conf.task_always_eager = True
    try:
        cache.delete(f"benchmarks-due:{world['steel']}")
        publish_and_schedule()
        assert sql(
            "SELECT count(*) FROM industry_benchmarks WHERE industry_id = %s", [world["steel"]]
        ) == [(4,)]
        # Within the debounce window a second batch schedules nothing more.
        sql("DELETE FROM industry_benchmarks")
        benchmarks_schedule(industry_ids={str(world["steel"])})
        assert sql("SELECT count(*) FROM industry_benchmarks") == [(0,)]
    finally:
        app.conf.task_always_eager = False
        cache.delete(f"benchmarks-due:{world['steel']}")
