"""Redis for the operators' figures: key names and clients.

The figures that several processes contribute to (each server process's connections and
deliveries, the publisher's histograms) meet in Redis, where the monitor's leader and
the `/metrics` scrape of any web process read them. Nothing here is the truth of
anything: losing these keys loses some history of figures, never data.
"""

from __future__ import annotations

import asyncio
import weakref

import redis
from django.conf import settings
from redis import asyncio as redis_asyncio

from common import redis_connection

# Every Redis call for figures gives up after this long: a figure is not worth waiting
# for, and a scrape or a monitor tick must not hang on a Redis that is away.
REDIS_TIMEOUT_S = 0.5

_sync_client: redis.Redis | None = None
_async_clients: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def key(name: str) -> str:
    """A key of this deployment (REDIS_PREFIX), e.g. key("monitor:processes")."""
    return f"{settings.REDIS_PREFIX}:{name}"


def redis_client() -> redis.Redis:
    """This process's synchronous client (thread safe: redis-py pools its connections)."""
    global _sync_client
    if _sync_client is None:
        _sync_client = redis_connection.redis_client(
            socket_timeout=REDIS_TIMEOUT_S,
            socket_connect_timeout=REDIS_TIMEOUT_S,
        )
    return _sync_client


def redis_async_client() -> redis_asyncio.Redis:
    """The asynchronous client of the running event loop (its connections belong to it)."""
    loop = asyncio.get_running_loop()
    client = _async_clients.get(loop)
    if client is None:
        client = _async_clients[loop] = redis_connection.redis_async_client(
            socket_timeout=REDIS_TIMEOUT_S,
            socket_connect_timeout=REDIS_TIMEOUT_S,
        )
    return client


# Redis hash of engagement events by kind since the deployment began (a Prometheus
# counter, carbon_engagement_events_total), kept apart from the database rows that
# retention prunes.
ENGAGEMENT_COUNTS_KEY = "metrics:engagement"
