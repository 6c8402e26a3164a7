"""The live monitor: each server process's figures, and the `monitor` snapshot.

Who produces the snapshot: the web processes themselves. Every server process runs
`monitor_loop` beside its hub (realtime.hub.hub_task). Every MONITOR_INTERVAL_S it
writes its own figures (connections by transport, deliveries and their rate, error and
rate-limit counts, `monitor` subscribers) to one Redis hash, and the process holding the
leader key (a Redis key set with NX and a short expiry, renewed each tick, taken over by
another process when its holder stops) builds the snapshot when anybody anywhere
follows `monitor`, and sends it to every process's hub (realtime.control.process_send),
which hands the one encoded text to its local `monitor` subscribers.

Why there: per-process figures exist only in the web processes, and the monitor must
keep working when what it watches fails. A Celery beat task would stop with the worker
or beat (and beat's one-second tick is its finest), and the publisher is the component
whose lag the page shows. The leader's database reads (one thread, a few small queries)
happen only while someone watches.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import orjson
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connection, connections
from django.utils import timezone

from adminpanel.metrics import publisher_counters
from adminpanel.redis_store import key, redis_async_client, redis_client
from adminpanel.selectors import contexts_top, maintenance_current
from changes.items import format_at
from changes.models import AUDIENCE_STAFF
from changes.selectors import publisher_backlog
from common.json import json_dumps
from config.celery import celery_status
from emissions.access import MONITOR
from realtime import metrics
from realtime.control import process_handler, process_send
from realtime.hub import Hub, hub_task
from realtime.models import Transport
from realtime.selectors import connection_counts
from realtime.services import SERVER

logger = logging.getLogger(__name__)

PROCESSES_KEY = "monitor:processes"
LEADER_KEY = "monitor:leader"
# A process whose figures are older than this many intervals has stopped: left out, and
# removed from the hash by the leader.
STALE_INTERVALS = 3
# The leader key lives this many intervals unless renewed: a stopped leader is replaced
# within that time.
LEADER_TTL_INTERVALS = 3
# Contexts listed in the snapshot's `top_contexts`.
TOP_CONTEXTS = 10


class ProcessFigures:
    """This process's figures, and its deliveries per second between two reads."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.last: tuple[float, int] | None = None

    def read(self) -> dict:
        now = time.monotonic()
        deliveries = self.hub.deliveries
        rate = None
        if self.last is not None and now > self.last[0]:
            rate = round((deliveries - self.last[1]) / (now - self.last[0]), 2)
        self.last = (now, deliveries)
        connections_by_transport = dict.fromkeys(Transport.values, 0)
        for session in list(self.hub.sessions):
            transport = session.transport
            connections_by_transport[transport] = connections_by_transport.get(transport, 0) + 1
        return {
            "server": SERVER,
            "at": time.time(),
            "connections": connections_by_transport,
            "deliveries": deliveries,
            "deliveries_per_s": rate,
            "frames_received": self.hub.frames_received,
            "monitor_subscribers": len(self.hub.members.get((MONITOR, AUDIENCE_STAFF), ())),
            "errors": dict(metrics.errors),
            "rate_limited": dict(metrics.rate_limited),
            "maintenance_refusals": dict(metrics.maintenance_refusals),
        }


def _fresh(raw: dict, now: float) -> tuple[list[dict], list]:
    """The figures of the processes that reported lately, and the hash fields of the
    others (stopped processes, unreadable entries)."""
    fresh, stale = [], []
    limit = settings.MONITOR_INTERVAL_S * STALE_INTERVALS
    for field, value in raw.items():
        try:
            figures = orjson.loads(value)
        except orjson.JSONDecodeError:
            stale.append(field)
            continue
        if isinstance(figures, dict) and now - figures.get("at", 0) <= limit:
            fresh.append(figures)
        else:
            stale.append(field)
    fresh.sort(key=lambda figures: str(figures.get("server", "")))
    return fresh, stale


def processes_read() -> list[dict]:
    """The figures of every running server process (from Redis), stale ones dropped."""
    client = redis_client()
    fresh, stale = _fresh(client.hgetall(key(PROCESSES_KEY)), time.time())
    if stale:
        client.hdel(key(PROCESSES_KEY), *stale)
    return fresh


async def _leader(client) -> bool:
    """Whether this process leads (taking the key if nobody holds it)."""
    ttl_ms = int(settings.MONITOR_INTERVAL_S * LEADER_TTL_INTERVALS * 1000)
    name = key(LEADER_KEY)
    if await client.set(name, SERVER, nx=True, px=ttl_ms):
        return True
    holder = await client.get(name)
    if holder is not None and holder.decode() == SERVER:
        await client.pexpire(name, ttl_ms)
        return True
    return False


class PublisherRates:
    """The publisher's counters (in Redis, adminpanel.metrics) turned into rates between
    two snapshots of the same leader."""

    def __init__(self) -> None:
        self.last: tuple[float, dict] | None = None

    def figures(self, counters: dict[str, float]) -> dict:
        now = time.monotonic()
        figures: dict[str, Any] = {
            "last_batch_size": int(counters.get("last_batch_size", 0)) or None,
            "last_lag_ms": counters.get("last_lag_ms"),
            "batches": int(counters.get("batches", 0)),
            "changes": int(counters.get("changes", 0)),
            "suppressed_frames": int(counters.get("suppressed_frames", 0)),
            "batches_per_s": None,
            "changes_per_s": None,
            "mean_batch_size": None,
            "mean_lag_ms": None,
        }
        if self.last is not None and now > self.last[0]:
            elapsed = now - self.last[0]
            before = self.last[1]
            batches = counters.get("batches", 0) - before.get("batches", 0)
            changes = counters.get("changes", 0) - before.get("changes", 0)
            lag = counters.get("lag_sum", 0) - before.get("lag_sum", 0)
            if batches >= 0 and changes >= 0:  # not across a Redis reset
                figures["batches_per_s"] = round(batches / elapsed, 2)
                figures["changes_per_s"] = round(changes / elapsed, 2)
                if batches:
                    figures["mean_batch_size"] = round(changes / batches, 1)
                    figures["mean_lag_ms"] = round(lag / batches * 1000, 1)
        self.last = (now, counters)
        return figures


def _database_figures() -> dict:
    """Database latency, the publisher's backlog, connections over every process and
    the most followed contexts: one thread, one pooled connection, returned after."""
    try:
        started = time.perf_counter()
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
        latency = round((time.perf_counter() - started) * 1000, 2)
        backlog = publisher_backlog()
        return {
            "health": {"ok": True, "latency_ms": latency},
            "backlog": {
                "lag_ms": backlog.lag_ms,
                "pending": backlog.pending,
                "pending_capped": backlog.capped,
            },
            "connections": connection_counts(),
            "top_contexts": contexts_top(limit=TOP_CONTEXTS),
            "maintenance": maintenance_current().wire(),
        }
    except Exception as exc:
        logger.warning("monitor: database figures failed: %r", exc)
        return {"health": {"ok": False, "error": type(exc).__name__}}
    finally:
        connections[DEFAULT_DB_ALIAS].close()


def _redis_figures() -> tuple[dict, list[dict] | None, dict]:
    try:
        started = time.perf_counter()
        redis_client().ping()
        latency = round((time.perf_counter() - started) * 1000, 2)
        return {"ok": True, "latency_ms": latency}, processes_read(), publisher_counters()
    except Exception as exc:
        logger.warning("monitor: Redis figures failed: %r", exc)
        return {"ok": False, "error": type(exc).__name__}, None, {}


def _summed(processes: list[dict], name: str) -> dict[str, int]:
    total: dict[str, int] = {}
    for figures in processes:
        for label, count in (figures.get(name) or {}).items():
            total[label] = total.get(label, 0) + count
    return dict(sorted(total.items()))


def monitor_snapshot_collect(rates: PublisherRates) -> dict:
    """The `monitor` message (docs/protocol.md): every figure of the monitoring page.
    Synchronous: database and Redis reads, for a worker thread or a view."""
    database = _database_figures()
    redis_health, processes, counters = _redis_figures()
    processes = processes or []
    rates_known = [
        p["deliveries_per_s"] for p in processes if p.get("deliveries_per_s") is not None
    ]
    backlog = database.get("backlog") or {"lag_ms": None, "pending": None, "pending_capped": False}
    return {
        "type": "monitor",
        "at": format_at(_now()),
        "interval_ms": int(settings.MONITOR_INTERVAL_S * 1000),
        "connections": database.get("connections")
        or {**_summed(processes, "connections"), "total": None},
        "top_contexts": database.get("top_contexts", []),
        "deliveries_per_s": round(sum(rates_known), 2) if rates_known else None,
        "deliveries_total": sum(p.get("deliveries", 0) for p in processes),
        "processes": [
            {
                "server": p["server"],
                "connections": sum((p.get("connections") or {}).values()),
                "deliveries_per_s": p.get("deliveries_per_s"),
                "deliveries": p.get("deliveries", 0),
            }
            for p in processes
        ],
        "publisher": {**backlog, **rates.figures(counters)},
        "health": {
            "database": database["health"],
            "redis": redis_health,
            "celery": celery_status(),
        },
        "errors": _summed(processes, "errors"),
        "rate_limited": _summed(processes, "rate_limited"),
        "maintenance_refusals": _summed(processes, "maintenance_refusals"),
        "maintenance": database.get("maintenance") or maintenance_current().wire(),
    }


def _now():
    return timezone.now()


async def monitor_tick(hub: Hub, figures: ProcessFigures, rates: PublisherRates) -> dict | None:
    """One interval: publish this process's figures; if leading and watched, build the
    snapshot and send it to every process. Returns the snapshot sent, if any."""
    client = redis_async_client()
    mine = figures.read()
    await client.hset(key(PROCESSES_KEY), SERVER, orjson.dumps(mine))
    if not await _leader(client):
        return None
    raw = await client.hgetall(key(PROCESSES_KEY))
    fresh, _ = _fresh(raw, time.time())
    if not any(p.get("monitor_subscribers") for p in fresh):
        return None
    snapshot = await sync_to_async(monitor_snapshot_collect, thread_sensitive=False)(rates)
    await process_send("monitor", {"frame": json_dumps(snapshot)})
    return snapshot


@hub_task
async def monitor_loop(hub: Hub) -> None:
    """Beside every hub: monitor_tick every MONITOR_INTERVAL_S, for as long as the
    process runs. A failing tick (Redis away) is logged and the next one tried."""
    figures = ProcessFigures(hub)
    rates = PublisherRates()
    failing = False
    while True:
        await asyncio.sleep(settings.MONITOR_INTERVAL_S)
        try:
            await monitor_tick(hub, figures, rates)
            failing = False
        except asyncio.CancelledError:
            raise
        except Exception:
            if not failing:  # once per outage, not every interval
                logger.warning("monitor tick failed", exc_info=True)
            failing = True


@process_handler("monitor")
async def monitor_snapshot_deliver(hub: Hub, payload: dict) -> None:
    """Hand the snapshot's text to this process's `monitor` subscribers that are live on
    it (subscribed, past their `subscribed` reply, not paused)."""
    frame = payload.get("frame")
    if not isinstance(frame, str):
        return
    for session in list(hub.members.get((MONITOR, AUDIENCE_STAFF), ())):
        cursors = getattr(session, "cursors", None)
        if cursors is None or MONITOR not in cursors or MONITOR in session.switching:
            continue  # a long poll waiting on `monitor`, or a subscribe still under way
        if session.paused:
            continue
        with contextlib.suppress(Exception):
            await session.send(frame)
