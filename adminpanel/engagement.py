"""Engagement events the dashboards report (views, expansions): rate-limited per client,
stored for the charts and counted for /metrics."""

from __future__ import annotations

import logging
import math
import time

from django.conf import settings
from limits import parse as parse_rate
from limits.strategies import FixedWindowRateLimiter

from adminpanel.models import (
    EngagementEvent,
)
from adminpanel.redis_store import ENGAGEMENT_COUNTS_KEY, REDIS_TIMEOUT_S, key, redis_client
from common.ratelimit import rate_limiter

logger = logging.getLogger(__name__)


def _limiter() -> FixedWindowRateLimiter:
    return rate_limiter(timeout_s=REDIS_TIMEOUT_S)


def engagement_rate_hit(*, client: str) -> int | None:
    """Count one engagement report of `client`: None if within ENGAGEMENT_RATE, else the
    seconds until it would be. Lets the report through when Redis is away: analytics
    must not fail a page."""
    rate = parse_rate(settings.ENGAGEMENT_RATE)
    limiter = _limiter()
    try:
        if limiter.hit(rate, "engagement", client):
            return None
        stats = limiter.get_window_stats(rate, "engagement", client)
    except Exception:
        logger.warning("engagement rate limit unavailable; letting the report through")
        return None
    return max(1, math.ceil(stats.reset_time - time.time()))


def engagement_events_record(*, client: str, events: list[dict]) -> int:
    """Store a client's engagement events (validated by the caller) and count them by
    kind for /metrics. Returns how many were stored."""
    EngagementEvent.objects.bulk_create(
        EngagementEvent(
            kind=event["kind"],
            client=client[:64],
            context=event.get("context") or "",
            transport=event.get("transport") or "",
            from_transport=event.get("from_transport") or "",
            notification=event.get("notification") or "",
        )
        for event in events
    )
    counts: dict[str, int] = {}
    for event in events:
        counts[event["kind"]] = counts.get(event["kind"], 0) + 1
    try:
        pipe = redis_client().pipeline(transaction=False)
        for kind, count in counts.items():
            pipe.hincrby(key(ENGAGEMENT_COUNTS_KEY), kind, count)
        pipe.execute()
    except Exception:
        logger.warning("could not count engagement events in Redis")
    return len(events)
