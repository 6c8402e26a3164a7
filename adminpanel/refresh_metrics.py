"""The refresh_metrics snapshots behind the operators' charts: one row per figure and minute,
and their pruning."""

from __future__ import annotations

import datetime as dt
import logging

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from adminpanel.models import (
    EngagementKind,
)
from adminpanel.monitor import processes_read
from adminpanel.selectors import maintenance_read
from changes.selectors import publisher_backlog
from realtime.selectors import connection_counts

logger = logging.getLogger(__name__)

# Rows deleted per pruning statement: short transactions, no long locks.
PRUNE_BATCH = 10_000


def refresh_metrics_snapshot(*, now: dt.datetime | None = None) -> int:
    """Record this minute's figures in refresh_metrics (the beat task, every minute):
    connections by transport, deliveries per second over every server process, the
    publisher's lag and backlog, maintenance mode (samples, at the current minute), and
    engagement events by kind (counted over the minute that just ended, at its start).
    Running twice in a minute overwrites, never duplicates. Returns the rows written."""
    now = now or timezone.now()
    minute = now.replace(second=0, microsecond=0)
    previous = minute - dt.timedelta(minutes=1)
    rows: list[tuple[dt.datetime, str, str, float]] = []
    for transport, count in connection_counts().items():
        rows.append((minute, "connections", transport, count))
    backlog = publisher_backlog()
    rows.append((minute, "publisher_lag_ms", "", backlog.lag_ms))
    rows.append((minute, "pending_changes", "", backlog.pending))
    try:
        processes = processes_read()
    except Exception:
        logger.warning("could not read the server processes' figures from Redis")
        processes = None
    if processes is not None:
        rate = sum(p.get("deliveries_per_s") or 0 for p in processes)
        rows.append((minute, "deliveries_per_s", "", rate))
    rows.append((minute, "maintenance", "", 1.0 if maintenance_read().active else 0.0))
    counted = dict.fromkeys(EngagementKind.values, 0)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT kind, count(*) FROM engagement_events WHERE at >= %s AND at < %s GROUP BY kind",
            [previous, minute],
        )
        counted.update(dict(cursor.fetchall()))
    for kind, count in counted.items():
        rows.append((previous, "engagement", kind, count))
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO refresh_metrics (at, metric, label, value)"
            " SELECT * FROM unnest(%s::timestamptz[], %s::text[], %s::text[], %s::float8[])"
            " ON CONFLICT (metric, label, at) DO UPDATE SET value = EXCLUDED.value",
            [
                [r[0] for r in rows],
                [r[1] for r in rows],
                [r[2] for r in rows],
                [float(r[3]) for r in rows],
            ],
        )
    return len(rows)


def _prune(table: str, cutoff: dt.datetime, batch: int) -> int:
    deleted = 0
    while True:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                f"DELETE FROM {table} WHERE id IN (SELECT id FROM {table} WHERE at < %s LIMIT %s)",
                [cutoff, batch],
            )
            count = cursor.rowcount
        deleted += count
        if count < batch:
            return deleted


def refresh_metrics_prune(
    *, now: dt.datetime | None = None, batch: int = PRUNE_BATCH
) -> dict[str, int]:
    """Delete refresh_metrics rows older than REFRESH_METRICS_RETENTION_DAYS and
    engagement events older than ENGAGEMENT_RETENTION_DAYS, in bounded batches."""
    now = now or timezone.now()
    return {
        "refresh_metrics": _prune(
            "refresh_metrics",
            now - dt.timedelta(days=settings.REFRESH_METRICS_RETENTION_DAYS),
            batch,
        ),
        "engagement_events": _prune(
            "engagement_events",
            now - dt.timedelta(days=settings.ENGAGEMENT_RETENTION_DAYS),
            batch,
        ),
    }
