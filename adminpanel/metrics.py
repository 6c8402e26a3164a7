"""Prometheus figures of the publisher, maintenance mode and engagement.

The publisher runs in its own process (`manage.py run_publisher`, or the Celery safety
net), which nothing scrapes. Its batches go into histograms kept in Redis (one hash:
per-bucket counts, sums, totals, the last batch's figures), added up in the publisher
and flushed at most every PUBLISHER_METRICS_FLUSH_S; any web process's `/metrics` reads
the hash at scrape time (`OperatorsCollector`). Chosen over prometheus_client's
multiprocess mode, which shares files in one directory and so only works when every
process runs on one machine; Redis is where every process meets already, and the
figures survive a restart of the web server. They are deployment-wide: every web
process exposes the same values (aggregate with `max`, not `sum`, across instances).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

from django.conf import settings
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from adminpanel.models import EngagementKind
from adminpanel.redis_store import ENGAGEMENT_COUNTS_KEY, key, redis_client
from adminpanel.selectors import maintenance_current
from changes.selectors import publisher_backlog

if TYPE_CHECKING:
    from changes.publisher import PublishResult

logger = logging.getLogger(__name__)

PUBLISHER_KEY = "metrics:publisher"
# Publisher lag (capture to publication) in seconds: tens of milliseconds when healthy,
# seconds under a bulk load, a minute when the publisher was down.
LAG_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# Changes per batch: one or a few when changes trickle in, up to PUBLISHER_CLAIM_LIMIT
# (20,000) in a bulk update.
BATCH_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 20000)


def _bucket(value: float, bounds: tuple) -> str:
    for bound in bounds:
        if value <= bound:
            return str(bound)
    return "+Inf"


class _PublisherAccumulator:
    """Increments not yet in Redis, and the last batch's figures."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.increments: dict[str, float] = {}
        self.latest: dict[str, float] = {}
        self.flushed_at = time.monotonic()

    def add(self, field: str, amount: float) -> None:
        self.increments[field] = self.increments.get(field, 0) + amount


_pending = _PublisherAccumulator()


def publisher_batch_record(result: PublishResult | None, *, sent_frames: int | None = None) -> None:
    """Count one published batch (its lag, its size, frames held back by maintenance);
    flushed to Redis when PUBLISHER_METRICS_FLUSH_S has passed since the last flush."""
    if result is None or not result.changes:
        return
    lag_s = result.lag_ms / 1000
    suppressed = len(result.frames) - sent_frames if sent_frames is not None else 0
    with _pending.lock:
        _pending.add("batches", 1)
        _pending.add("changes", result.changes)
        _pending.add(f"lag_le:{_bucket(lag_s, LAG_BUCKETS_S)}", 1)
        _pending.add("lag_sum", lag_s)
        _pending.add(f"size_le:{_bucket(result.changes, BATCH_BUCKETS)}", 1)
        _pending.add("size_sum", result.changes)
        if suppressed > 0:
            _pending.add("suppressed_frames", suppressed)
        _pending.latest = {
            "last_lag_ms": round(result.lag_ms, 2),
            "last_batch_size": result.changes,
            "last_at": time.time(),
        }
    if publisher_metrics_flush_due():
        publisher_metrics_flush()


def publisher_metrics_flush_due() -> bool:
    """Whether recorded batches wait and the flush interval has passed (cheap: memory)."""
    return bool(_pending.increments) and (
        time.monotonic() - _pending.flushed_at >= settings.PUBLISHER_METRICS_FLUSH_S
    )


def publisher_metrics_flush() -> bool:
    """Add what was recorded to the Redis hash (one pipeline). On failure the increments
    are kept for the next flush (a bounded set of fields), so nothing is counted twice or
    lost while Redis is away."""
    with _pending.lock:
        increments, latest = _pending.increments, _pending.latest
        _pending.increments, _pending.latest = {}, {}
        _pending.flushed_at = time.monotonic()
    if not increments:
        return True
    try:
        pipe = redis_client().pipeline(transaction=False)
        name = key(PUBLISHER_KEY)
        for field, amount in increments.items():
            if field.endswith("_sum"):
                pipe.hincrbyfloat(name, field, amount)
            else:
                pipe.hincrby(name, field, int(amount))
        if latest:
            pipe.hset(name, mapping=latest)
        pipe.execute()
        return True
    except Exception:
        logger.warning("could not flush publisher metrics to Redis; kept for the next flush")
        with _pending.lock:
            for field, amount in increments.items():
                _pending.add(field, amount)
            _pending.latest = _pending.latest or latest
        return False


def publisher_counters() -> dict[str, float]:
    """The publisher's figures as stored in Redis (empty before its first flush)."""
    raw = redis_client().hgetall(key(PUBLISHER_KEY))
    counters: dict[str, float] = {}
    for field, value in raw.items():
        try:
            counters[field.decode()] = float(value)
        except ValueError:
            continue
    return counters


def _histogram(name: str, documentation: str, counters: dict, prefix: str, bounds: tuple):
    buckets, cumulative = [], 0.0
    for bound in (*bounds, "+Inf"):
        cumulative += counters.get(f"{prefix}_le:{bound}", 0)
        buckets.append((floatToGoString(bound), cumulative))
    return HistogramMetricFamily(
        name, documentation, buckets=buckets, sum_value=counters.get(f"{prefix}_sum", 0)
    )


class OperatorsCollector(Collector):
    """The publisher's histograms and counters (from Redis), its backlog (from the
    database), maintenance mode and engagement events, read at scrape time."""

    def describe(self):
        # Without describe() the registry calls collect() at registration.
        return []

    def collect(self):
        try:
            counters = publisher_counters()
        except Exception:
            logger.warning("publisher metrics unavailable (Redis)")
            counters = {}
        yield _histogram(
            "carbon_publisher_lag_seconds",
            "Capture to publication of each batch's oldest change",
            counters,
            "lag",
            LAG_BUCKETS_S,
        )
        yield _histogram(
            "carbon_publisher_batch_size",
            "Changes per published batch",
            counters,
            "size",
            BATCH_BUCKETS,
        )
        for name, field, documentation in (
            ("carbon_publisher_batches", "batches", "Batches published"),
            ("carbon_publisher_changes", "changes", "Changes published"),
            (
                "carbon_publisher_suppressed_frames",
                "suppressed_frames",
                "Frames not fanned out during maintenance (read from the log afterwards)",
            ),
        ):
            family = CounterMetricFamily(name, documentation)
            family.add_metric([], counters.get(field, 0))
            yield family

        yield from self._database_gauges()
        yield from self._engagement()

    def _database_gauges(self):
        try:
            backlog = publisher_backlog()
            active = maintenance_current().active
        except Exception:
            logger.exception("could not read the publisher's backlog")
            return
        pending = GaugeMetricFamily(
            "carbon_publisher_pending_changes", "Captured changes waiting to be published"
        )
        pending.add_metric([], backlog.pending)
        yield pending
        age = GaugeMetricFamily(
            "carbon_publisher_backlog_age_seconds", "Age of the oldest unpublished change"
        )
        age.add_metric([], backlog.lag_ms / 1000)
        yield age
        maintenance = GaugeMetricFamily("carbon_maintenance_active", "1 while maintenance is on")
        maintenance.add_metric([], 1 if active else 0)
        yield maintenance

    def _engagement(self):
        try:
            raw = redis_client().hgetall(key(ENGAGEMENT_COUNTS_KEY))
        except Exception:
            logger.warning("engagement counts unavailable (Redis)")
            return
        counts = {field.decode(): int(value) for field, value in raw.items()}
        family = CounterMetricFamily(
            "carbon_engagement_events", "Engagement events reported by clients", labels=["kind"]
        )
        for kind in EngagementKind.values:
            family.add_metric([kind], counts.get(kind, 0))
        yield family
