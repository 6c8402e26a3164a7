"""Reads of the operators' records: maintenance mode (through a per-process cache),
maintenance windows, the refresh_metrics series for the charts, the most followed
contexts."""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connection
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from adminpanel.models import MaintenanceState, MaintenanceWindow
from changes.items import format_at


@dataclass(frozen=True)
class Maintenance:
    """Maintenance mode as every process sees it."""

    active: bool = False
    message: str = ""
    until: dt.datetime | None = None
    retry_after: int | None = None
    window: int | None = None
    changed_at: dt.datetime | None = None
    changed_by: str = ""

    def wire(self) -> dict:
        """The `maintenance` message of PROTOCOL.md."""
        return {
            "type": "maintenance",
            "active": self.active,
            "message": self.message,
            "until": format_at(self.until) if self.until else None,
        }

    def retry_hint(self, *, now: dt.datetime | None = None) -> int:
        """Seconds a refused client should wait: the switch's `retry_after`, else the time
        left until `until` (capped at MAINTENANCE_RETRY_MAX_S), else the default."""
        if self.retry_after:
            return self.retry_after
        if self.until is not None:
            left = (self.until - (now or timezone.now())).total_seconds()
            if left > 0:
                return max(1, min(math.ceil(left), settings.MAINTENANCE_RETRY_MAX_S))
        return settings.MAINTENANCE_RETRY_AFTER_S

    def as_dict(self) -> dict:
        """JSON-ready (the admin API's answer, the process message's payload)."""
        values = asdict(self)
        for name in ("until", "changed_at"):
            values[name] = format_at(values[name]) if values[name] else None
        return values

    @classmethod
    def from_dict(cls, values: dict) -> Maintenance:
        def moment(value: Any) -> dt.datetime | None:
            return parse_datetime(value) if isinstance(value, str) else None

        return cls(
            active=bool(values.get("active")),
            message=str(values.get("message") or ""),
            until=moment(values.get("until")),
            retry_after=values.get("retry_after") or None,
            window=values.get("window") or None,
            changed_at=moment(values.get("changed_at")),
            changed_by=str(values.get("changed_by") or ""),
        )


def maintenance_read() -> Maintenance:
    """Maintenance mode from the database (uncached); off when the row is missing."""
    row = MaintenanceState.objects.select_related("changed_by").filter(id=1).first()
    if row is None:
        return Maintenance()
    return Maintenance(
        active=row.active,
        message=row.message,
        until=row.until,
        retry_after=row.retry_after,
        window=row.window_id,
        changed_at=row.changed_at,
        changed_by=row.changed_by.get_username() if row.changed_by else "",
    )


# (monotonic time read, state) of this process. Read on every connect; refreshed from the
# database when older than MAINTENANCE_CACHE_S, and replaced at once by the switch's
# process message (adminpanel/handlers.py).
_cache: tuple[float, Maintenance] | None = None


def maintenance_cache_set(state: Maintenance) -> None:
    """Replace this process's cached state (the switch's process message)."""
    global _cache
    _cache = (time.monotonic(), state)


def _cached() -> Maintenance | None:
    if _cache is not None and time.monotonic() - _cache[0] < settings.MAINTENANCE_CACHE_S:
        return _cache[1]
    return None


def maintenance_current() -> Maintenance:
    """Maintenance mode through this process's cache (sync callers)."""
    state = _cached()
    if state is None:
        state = maintenance_read()
        maintenance_cache_set(state)
    return state


# The read of the cache's refresh in flight: every connection that finds the cache stale
# meanwhile waits for it instead of queueing a read of its own on the one database
# thread (in a reconnect storm, hundreds did, every MAINTENANCE_CACHE_S).
_refreshing: asyncio.Task | None = None


async def maintenance_current_async() -> Maintenance:
    """Maintenance mode through this process's cache; no thread hop when it is fresh,
    and one for all callers when it is not."""
    global _refreshing
    state = _cached()
    if state is not None:
        return state
    task = _refreshing
    if task is None or task.done() or task.get_loop() is not asyncio.get_running_loop():
        task = _refreshing = asyncio.ensure_future(_maintenance_refresh(_cache))
    # Shielded: a caller that goes away does not cancel the others' read.
    return await asyncio.shield(task)


async def _maintenance_refresh(before: tuple[float, Maintenance] | None) -> Maintenance:
    state = await sync_to_async(maintenance_read, thread_sensitive=True)()
    if _cache is not before and _cache is not None:
        return _cache[1]  # replaced meanwhile by a switch's newer state: that one holds
    maintenance_cache_set(state)
    return state


async def maintenance_refusing(*, user_of: Callable[[], Awaitable[Any]]) -> Maintenance | None:
    """The maintenance state that refuses a new connection, or None when it is admitted
    (maintenance off, or staff with MAINTENANCE_ADMIT_STAFF). `user_of` looks the user up,
    only while maintenance is on: the common case costs no lookup."""
    state = await maintenance_current_async()
    if not state.active:
        return None
    if settings.MAINTENANCE_ADMIT_STAFF and getattr(await user_of(), "is_staff", False):
        return None
    return state


def maintenance_active_locked(cursor) -> bool:
    """Whether maintenance is on, read by the publisher inside its transaction, under the
    advisory lock the switch also takes: a batch is published either wholly before a
    switch or wholly after it (so the catch-up when maintenance ends misses nothing)."""
    cursor.execute("SELECT active FROM maintenance_state WHERE id = 1")
    row = cursor.fetchone()
    return bool(row and row[0])


def maintenance_windows_pending() -> list[MaintenanceWindow]:
    """Windows not cancelled and not ended, soonest first."""
    return list(
        MaintenanceWindow.objects.filter(cancelled_at__isnull=True, ended_at__isnull=True)
        .select_related("created_by")
        .order_by("starts_at", "id")
    )


def maintenance_window_next() -> MaintenanceWindow | None:
    """The next (or running) window, for `GET /api/updates/status`."""
    return (
        MaintenanceWindow.objects.filter(cancelled_at__isnull=True, ended_at__isnull=True)
        .order_by("starts_at", "id")
        .first()
    )


def contexts_top(*, limit: int = 10) -> list[dict]:
    """The contexts followed by the most live connections (active_connections)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT context, count(*) AS n FROM active_connections, unnest(contexts) AS context"
            " GROUP BY context ORDER BY n DESC, context LIMIT %s",
            [limit],
        )
        return [{"context": context, "connections": n} for context, n in cursor.fetchall()]


# Figures whose minute values are summed into a chart bucket (counts); the others are
# samples, averaged.
_SUMMED_METRICS = ("engagement",)


def refresh_metrics_series(*, hours: float, bucket_s: int) -> dict:
    """refresh_metrics of the last `hours`, in buckets of `bucket_s` seconds, as columns
    for a chart: `times` (bucket starts, Unix seconds) and one list per metric and label
    (`engagement.pause`, `connections.websocket`, ...), None where nothing was recorded."""
    now = timezone.now()
    start = now - dt.timedelta(hours=hours)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT extract(epoch FROM date_bin(make_interval(secs => %s::float8), at,"
            " TIMESTAMPTZ '2000-01-01 00:00:00+00'))::bigint AS bucket, metric, label,"
            " CASE WHEN metric = ANY(%s) THEN sum(value) ELSE avg(value) END"
            " FROM refresh_metrics WHERE at >= %s GROUP BY bucket, metric, label"
            " ORDER BY bucket",
            [bucket_s, list(_SUMMED_METRICS), start],
        )
        rows = cursor.fetchall()
    first = int(start.timestamp()) // bucket_s * bucket_s
    times = list(range(first, int(now.timestamp()) + 1, bucket_s))
    index = {moment: position for position, moment in enumerate(times)}
    series: dict[str, list[float | None]] = {}
    for bucket, metric, label, value in rows:
        position = index.get(int(bucket))
        if position is None:
            continue
        name = f"{metric}.{label}" if label else metric
        column = series.setdefault(name, [None] * len(times))
        column[position] = round(float(value), 3)
    return {
        "from": format_at(start),
        "to": format_at(now),
        "bucket_s": bucket_s,
        "times": times,
        "series": dict(sorted(series.items())),
    }
