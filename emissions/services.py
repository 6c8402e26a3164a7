"""Writes of the tracked domain that the platform itself makes."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

from django.db import connection, transaction

from common.json import json_dumps

# Benchmarks describe what anonymous users see: public companies, records that are not
# rejected. Metrics are columns of emission_records.
BENCHMARK_METRICS = ("total_tonnes", "scope1_tonnes")
# Companies named per crossing in a benchmark's impact; the count is always complete.
IMPACT_SAMPLE = 5

_STATS_SQL = """
SELECT er.year, m.metric,
       round(percentile_cont(0.25) WITHIN GROUP (ORDER BY m.value)::numeric, 3),
       round(percentile_cont(0.5) WITHIN GROUP (ORDER BY m.value)::numeric, 3),
       round(percentile_cont(0.75) WITHIN GROUP (ORDER BY m.value)::numeric, 3),
       round(avg(m.value), 3),
       count(*)
  FROM emission_records er
  JOIN companies c ON c.id = er.company_id
 CROSS JOIN LATERAL (VALUES ('total_tonnes', er.total_tonnes),
                            ('scope1_tonnes', er.scope1_tonnes)) AS m(metric, value)
 WHERE c.industry_id = %s AND c.is_public AND er.verification_status <> 'rejected'
 GROUP BY er.year, m.metric
"""

# Companies whose value lies between a percentile's old and new position: the
# percentile moved past them, so they changed side.
_CROSSED_SQL = """
SELECT c.id::text, c.name, m.value
  FROM emission_records er
  JOIN companies c ON c.id = er.company_id
 CROSS JOIN LATERAL (VALUES ('total_tonnes', er.total_tonnes),
                            ('scope1_tonnes', er.scope1_tonnes)) AS m(metric, value)
 WHERE c.industry_id = %s AND er.year = %s AND m.metric = %s
   AND c.is_public AND er.verification_status <> 'rejected'
   AND m.value > %s AND m.value <= %s
 ORDER BY m.value DESC
"""


def _pct(before: Decimal | None, after: Decimal) -> float | None:
    if before is None or before == 0:
        return None
    return round(float((after - before) / before * 100), 2)


def _crossed(cursor, industry_id, year, metric, before, after) -> dict[str, Any]:
    if before is None or before == after:
        return {"count": 0, "companies": []}
    low, high = min(before, after), max(before, after)
    cursor.execute(_CROSSED_SQL, [industry_id, year, metric, low, high])
    rows = cursor.fetchall()
    # The percentile rose past them: they are now below it (and the other way round).
    side = "below" if after > before else "above"
    return {
        "count": len(rows),
        "now": side,
        "companies": [{"id": cid, "name": name} for cid, name, _ in rows[:IMPACT_SAMPLE]],
    }


@transaction.atomic
def industry_benchmarks_recompute(*, industry_id: uuid.UUID | str) -> int:
    """Recompute one industry's benchmarks in SQL and store those that moved, with their
    impact. The rows change through the normal path, so capture publishes them.
    Returns how many benchmark rows changed."""
    changed = 0
    with connection.cursor() as cursor:
        # Serialise recomputes of one industry (Celery may run two at once).
        cursor.execute(
            "SELECT id FROM industries WHERE id = %s FOR NO KEY UPDATE", [str(industry_id)]
        )
        if cursor.fetchone() is None:
            return 0
        cursor.execute(_STATS_SQL, [str(industry_id)])
        stats = cursor.fetchall()
        cursor.execute(
            "SELECT year, metric, p25, median, p75, mean, company_count"
            " FROM industry_benchmarks WHERE industry_id = %s",
            [str(industry_id)],
        )
        current = {(row[0], row[1]): row[2:] for row in cursor.fetchall()}
        for year, metric, p25, median, p75, mean, count in stats:
            old = current.get((year, metric))
            if old is not None and tuple(old) == (p25, median, p75, mean, count):
                continue
            old_median = old[1] if old else None
            old_p75 = old[2] if old else None
            impact = {
                "median_before": old_median,
                "median_after": median,
                "median_change_pct": _pct(old_median, median),
                "p75_before": old_p75,
                "p75_after": p75,
                "company_count_before": old[4] if old else None,
                "company_count_after": count,
                "crossed_median": _crossed(cursor, industry_id, year, metric, old_median, median),
                "crossed_p75": _crossed(cursor, industry_id, year, metric, old_p75, p75),
            }
            cursor.execute(
                "INSERT INTO industry_benchmarks (industry_id, year, metric, p25, median, p75,"
                " mean, company_count, impact, computed_at)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s::jsonb, clock_timestamp())"
                " ON CONFLICT (industry_id, year, metric) DO UPDATE SET p25 = EXCLUDED.p25,"
                " median = EXCLUDED.median, p75 = EXCLUDED.p75, mean = EXCLUDED.mean,"
                " company_count = EXCLUDED.company_count, impact = EXCLUDED.impact,"
                " computed_at = EXCLUDED.computed_at",
                [
                    str(industry_id),
                    year,
                    metric,
                    p25,
                    median,
                    p75,
                    mean,
                    count,
                    json_dumps(impact),
                ],
            )
            changed += 1
    return changed
