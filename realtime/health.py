"""Health checks (GET /api/realtime/health): the database, Redis, the channel layer, the
publisher's lag, and live connection counts, in total and per server process (several
run behind HAProxy: config/web.py). Each check runs with a timeout and reports its own
failure; `health_report` runs them all at once."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.models import Count

from changes.selectors import publisher_backlog
from common.redis_connection import RedisTarget, redis_async_client_close, redis_target
from config.celery import celery_status
from realtime.models import ActiveConnection, Transport
from realtime.selectors import connection_counts

# Each health check gives up after this long. A round trip to a local PostgreSQL or
# Redis takes about a millisecond; 2 s means broken, and keeps the whole answer under the
# 5 s timeout load balancers commonly give a health probe.
HEALTH_CHECK_TIMEOUT_S = 2.0
# The publisher is unhealthy (503) when its oldest unpublished change is older than this.
# It publishes within ~20 ms when running, and Celery beat's safety net every second;
# 30 s of lag means both are down or overwhelmed.
PUBLISHER_LAG_LIMIT_MS = 30_000
# How long the channel-layer check waits for nothing after its round trip, to drop the
# channel's subscription (see `_channel_drop`).
CHANNEL_DROP_S = 0.01


def _failure(exc: BaseException) -> str:
    # The kind of failure only: hosts, ports and credentials stay out of a public answer.
    return "timeout" if isinstance(exc, TimeoutError) else type(exc).__name__


def _in_thread(function: Callable[[], Any], *, alias: str = DEFAULT_DB_ALIAS):
    """Run a database read in a thread of its own, not the request's: a hanging database
    must not hold the request's thread past the check's timeout. Closes the thread's
    connection (back to the pool) afterwards."""

    def run() -> Any:
        try:
            return function()
        finally:
            connections[alias].close()

    return sync_to_async(run, thread_sensitive=False)()


async def _timed(probe: Callable[[], Awaitable[Any]], timeout: float) -> dict:
    """Run a probe with a timeout; its latency is what it returns (seconds), else its
    whole duration."""
    started = time.perf_counter()
    try:
        measured = await asyncio.wait_for(probe(), timeout)
    except Exception as exc:
        return {"ok": False, "error": _failure(exc)}
    elapsed = measured if isinstance(measured, float) else time.perf_counter() - started
    return {"ok": True, "latency_ms": round(elapsed * 1000, 2)}


async def database_check(*, database=None, timeout: float = HEALTH_CHECK_TIMEOUT_S) -> dict:
    """`SELECT 1` on `database` (a Django connection; default: the default one)."""

    def probe() -> None:
        conn = database or connections[DEFAULT_DB_ALIAS]
        try:
            with conn.cursor() as cursor:
                cursor.execute("SELECT 1")
                cursor.fetchone()
        finally:
            if database is not None:
                database.close()

    return await _timed(lambda: _in_thread(probe), timeout)


async def redis_check(*, url: str | None = None, timeout: float = HEALTH_CHECK_TIMEOUT_S) -> dict:
    """ROLE on a fresh connection to `url` (default: REDIS_URL), which must answer
    `master`: through Sentinel, the connection goes to the master the sentinels name now,
    and a server that answers as a replica (an old master back after a failover) fails."""

    async def probe() -> None:
        target = RedisTarget.parse(url) if url else redis_target()
        client = target.async_client(socket_connect_timeout=timeout, socket_timeout=timeout)
        try:
            role = await client.execute_command("ROLE")
        finally:
            await redis_async_client_close(client)
        if role[0] not in (b"master", "master"):
            raise RuntimeError("Redis answers as a replica")

    return await _timed(probe, timeout)


async def _channel_drop(layer, channel: str) -> None:
    """Forget a channel made by new_channel. channels_redis has no delete_channel; a
    receive that is cancelled unsubscribes, so one is started and cancelled at once."""
    with contextlib.suppress(Exception):
        await asyncio.wait_for(layer.receive(channel), CHANNEL_DROP_S)


async def channel_layer_check(*, layer=None, timeout: float = HEALTH_CHECK_TIMEOUT_S) -> dict:
    """A round trip: a message sent to a fresh channel of `layer` (default: the project's
    channel layer) and received back."""

    async def probe() -> float:
        channel_layer = layer or get_channel_layer()
        channel = await channel_layer.new_channel("health.")
        nonce = uuid.uuid4().hex
        try:
            sent = time.perf_counter()
            await channel_layer.send(channel, {"type": "health.ping", "nonce": nonce})
            # Cancelled by the timeout, the receive unsubscribes by itself.
            message = await channel_layer.receive(channel)
            round_trip = time.perf_counter() - sent
        except Exception:
            await _channel_drop(channel_layer, channel)
            raise
        await _channel_drop(channel_layer, channel)
        if message.get("nonce") != nonce:
            raise RuntimeError("the channel layer returned another message")
        return round_trip

    return await _timed(probe, timeout)


async def publisher_check(
    *, lag_limit_ms: int = PUBLISHER_LAG_LIMIT_MS, timeout: float = HEALTH_CHECK_TIMEOUT_S
) -> dict:
    """The publisher's lag (age of the oldest unpublished change) and backlog."""
    try:
        backlog = await asyncio.wait_for(_in_thread(publisher_backlog), timeout)
    except Exception as exc:
        return {"ok": False, "lag_ms": None, "pending": None, "error": _failure(exc)}
    return {
        "ok": backlog.lag_ms <= lag_limit_ms,
        "lag_ms": backlog.lag_ms,
        "pending": backlog.pending,
    }


async def connections_check(*, timeout: float = HEALTH_CHECK_TIMEOUT_S) -> dict:
    """Connection counts by transport; None each when they cannot be read."""
    try:
        return await asyncio.wait_for(_in_thread(connection_counts), timeout)
    except Exception:
        return dict.fromkeys([*Transport.values, "total"])


def _connections_by_process() -> list[dict]:
    """Live connections of each server process (`server`: hostname:pid, as
    realtime.services.SERVER and the monitor name it) by transport, with its total;
    processes holding none are not listed (the monitor lists every running one)."""
    rows = (
        ActiveConnection.objects.values_list("server", "transport")
        .annotate(n=Count("id"))
        .order_by()
    )
    processes: dict[str, dict] = {}
    for server, transport, n in rows:
        counts = processes.setdefault(
            server, {"server": server, **dict.fromkeys(Transport.values, 0), "total": 0}
        )
        counts[transport] = n
        counts["total"] += n
    return [processes[server] for server in sorted(processes)]


async def processes_check(*, timeout: float = HEALTH_CHECK_TIMEOUT_S) -> list[dict] | None:
    """`_connections_by_process`; None when it cannot be read."""
    try:
        return await asyncio.wait_for(_in_thread(_connections_by_process), timeout)
    except Exception:
        return None


async def celery_check(*, timeout: float = HEALTH_CHECK_TIMEOUT_S) -> dict:
    """Celery's broker and workers (config.celery.celery_status)."""
    try:
        return await asyncio.wait_for(
            sync_to_async(celery_status, thread_sensitive=False)(), timeout
        )
    except Exception as exc:
        return {
            "ok": False,
            "app": None,
            "broker": None,
            "broker_ok": False,
            "workers": None,
            "worker_seen_s": None,
            "error": _failure(exc),
        }


async def health_report() -> dict:
    """Every check at once; each catches its own failure.

    Celery is reported beside the checks, not among them: live updates do not wait for
    it (the publisher runs on its own), so a missing worker shows on the operators' page
    without taking every server out of a load balancer with a 503."""
    database, redis, layer, publisher, counts, processes, celery = await asyncio.gather(
        database_check(),
        redis_check(),
        channel_layer_check(),
        publisher_check(),
        connections_check(),
        processes_check(),
        celery_check(),
    )
    checks = {"database": database, "redis": redis, "channel_layer": layer, "publisher": publisher}
    healthy = all(check["ok"] for check in checks.values())
    return {
        "status": "ok" if healthy else "degraded",
        "checks": checks,
        "connections": counts,
        "processes": processes,
        "celery": celery,
    }
