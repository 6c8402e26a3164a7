"""Writes of the operators' records: the audit log, maintenance mode and its scheduled
windows, staff-only subscriptions, engagement events, and the refresh_metrics snapshots
with their pruning."""

from __future__ import annotations

import datetime as dt
import logging
import math
import time
from typing import Any

from asgiref.sync import async_to_sync
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone
from limits import parse as parse_rate
from limits.storage import RedisStorage
from limits.strategies import FixedWindowRateLimiter

from adminpanel.models import (
    AuditAction,
    AuditEntry,
    EngagementEvent,
    EngagementKind,
    MaintenanceState,
    MaintenanceWindow,
)
from adminpanel.redis_store import REDIS_TIMEOUT_S, key, redis_client
from adminpanel.selectors import Maintenance, maintenance_cache_set, maintenance_read
from common.errors import ApplicationError

logger = logging.getLogger(__name__)

# A window longer than this is a typo, not a plan.
MAINTENANCE_WINDOW_MAX = dt.timedelta(days=7)
# Rows deleted per pruning statement: short transactions, no long locks.
PRUNE_BATCH = 10_000
# Redis hash of engagement events by kind since the deployment began (a Prometheus
# counter, carbon_engagement_events_total), kept apart from the database rows that
# retention prunes.
ENGAGEMENT_COUNTS_KEY = "metrics:engagement"


def audit_record(
    *, actor: Any, action: str, target: str = "", details: dict | None = None
) -> AuditEntry:
    """Record one admin override or staff-only subscription (actor: a user or None)."""
    user = actor if actor is not None and getattr(actor, "is_authenticated", False) else None
    return AuditEntry.objects.create(
        actor=user,
        actor_name=user.get_username() if user is not None else "",
        action=action,
        target=target[:200],
        details=details or {},
    )


def audit_received(sender: Any, *, actor: Any, action: str, target: str, details: dict, **kwargs):
    """The audit log's receiver of `common.audit.audited` (the apps below adminpanel)."""
    return audit_record(actor=actor, action=action, target=target, details=details)


# -- maintenance mode ---------------------------------------------------------------------


def _moment(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


@transaction.atomic
def maintenance_switch(
    *,
    actor: Any,
    active: bool,
    message: str = "",
    until: dt.datetime | None = None,
    retry_after: int | None = None,
    window: MaintenanceWindow | None = None,
) -> Maintenance:
    """Switch maintenance mode on or off, or change its message, `until` or retry hint
    while it is on; audit it; once committed, tell every server process and client.

    Takes the publisher's advisory lock (waiting for a batch being published), so every
    batch is published wholly before the switch or wholly after it: the publisher reads
    the mode under the same lock. When maintenance ends, every hub then compares its
    contexts with the published heads and reads what was held back from the log, and
    no batch published with the old mode can slip in after that comparison.
    A switch that changes nothing (or switches off what is off) is not recorded and not
    announced.
    """
    from changes.publisher import PUBLISHER_LOCK_KEY

    if active and until is not None and until <= timezone.now():
        raise ApplicationError("`until` is in the past.")
    if not active:
        until, retry_after, window = None, None, None
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [PUBLISHER_LOCK_KEY])
    row, _ = MaintenanceState.objects.select_for_update().get_or_create(id=1)
    was_active = row.active
    wanted = (active, message, until, retry_after, window.pk if window else None)
    unchanged = (row.active, row.message, row.until, row.retry_after, row.window_id) == wanted
    if unchanged or (not active and not row.active):
        return maintenance_read()
    user = actor if actor is not None and getattr(actor, "is_authenticated", False) else None
    row.active, row.message, row.until, row.retry_after = active, message, until, retry_after
    row.window = window
    row.changed_at = timezone.now()
    row.changed_by = user
    row.save()
    audit_record(
        actor=actor,
        action=AuditAction.MAINTENANCE_ON if active else AuditAction.MAINTENANCE_OFF,
        target=f"window:{window.pk}" if window else "all",
        details={
            "message": message,
            "until": _moment(until),
            "retry_after": retry_after,
            "was_active": was_active,
        },
    )
    state = maintenance_read()
    transaction.on_commit(lambda: maintenance_announce(state))
    return state


def maintenance_announce(state: Maintenance) -> bool:
    """Tell every server process (its cached mode; when maintenance ends, the catch-up
    of what was held back) and every client (`maintenance`). Switching on, processes
    first, so no new connection slips in after clients were told; switching off, clients
    first, so they hear that maintenance ended before the catch-up batches arrive.
    False when Redis could not be reached (processes then see the change within
    MAINTENANCE_CACHE_S; connected clients are not told)."""
    from realtime.broadcast import system_message_send
    from realtime.control import process_send

    maintenance_cache_set(state)

    async def send() -> None:
        if state.active:
            await process_send("maintenance", state.as_dict())
            await system_message_send(state.wire())
        else:
            await system_message_send(state.wire())
            await process_send("maintenance", state.as_dict())

    try:
        async_to_sync(send)()
    except Exception:
        logger.exception("could not announce maintenance %s", "on" if state.active else "off")
        return False
    return True


def _window_details(window: MaintenanceWindow) -> dict:
    return {
        "window": window.pk,
        "starts_at": _moment(window.starts_at),
        "ends_at": _moment(window.ends_at),
        "message": window.message,
        "retry_after": window.retry_after,
        "announce_before_s": int(window.announce_before.total_seconds()),
    }


def maintenance_window_validate(
    *, starts_at: dt.datetime, ends_at: dt.datetime, message: str
) -> None:
    """ApplicationError unless these make a window that can still happen."""
    if ends_at <= starts_at:
        raise ApplicationError("`ends_at` must be after `starts_at`.")
    if ends_at <= timezone.now():
        raise ApplicationError("The window has already ended.")
    if ends_at - starts_at > MAINTENANCE_WINDOW_MAX:
        raise ApplicationError(f"A window lasts at most {MAINTENANCE_WINDOW_MAX.days} days.")
    if not message.strip():
        raise ApplicationError("A window needs a message for the people it interrupts.")


@transaction.atomic
def maintenance_window_schedule(
    *,
    actor: Any,
    starts_at: dt.datetime,
    ends_at: dt.datetime,
    message: str,
    retry_after: int | None = None,
    announce_before: dt.timedelta | None = None,
) -> MaintenanceWindow:
    """Plan a maintenance window (audited). The beat task announces it `announce_before`
    its start (default MAINTENANCE_ANNOUNCE_BEFORE_S) and switches maintenance on and off
    at its times."""
    maintenance_window_validate(starts_at=starts_at, ends_at=ends_at, message=message)
    if announce_before is None:
        announce_before = dt.timedelta(seconds=settings.MAINTENANCE_ANNOUNCE_BEFORE_S)
    user = actor if actor is not None and getattr(actor, "is_authenticated", False) else None
    window = MaintenanceWindow.objects.create(
        starts_at=starts_at,
        ends_at=ends_at,
        message=message,
        retry_after=retry_after,
        announce_before=announce_before,
        created_by=user,
    )
    audit_record(
        actor=actor,
        action=AuditAction.MAINTENANCE_SCHEDULED,
        target=f"window:{window.pk}",
        details=_window_details(window),
    )
    return window


@transaction.atomic
def maintenance_window_cancel(*, actor: Any, window_id: int) -> MaintenanceWindow:
    """Cancel a window that has not ended (audited); if it switched maintenance on, off."""
    from common.errors import NotFound

    window = MaintenanceWindow.objects.select_for_update().filter(pk=window_id).first()
    if window is None:
        raise NotFound("No such maintenance window.")
    if window.cancelled_at or window.ended_at:
        raise ApplicationError(f"The window has {window.status}.", code="conflict", status_code=409)
    window.cancelled_at = timezone.now()
    window.save(update_fields=["cancelled_at"])
    audit_record(
        actor=actor,
        action=AuditAction.MAINTENANCE_SCHEDULED,
        target=f"window:{window.pk}",
        details={**_window_details(window), "cancelled": True},
    )
    state = maintenance_read()
    if state.active and state.window == window.pk:
        maintenance_switch(actor=actor, active=False, message="")
    return window


def maintenance_window_announcement(window: MaintenanceWindow, *, seq: int) -> dict:
    """The announcement of a coming window: a `notification` (every client shows those),
    with the window's times in the `maintenance` extension field."""
    starts, ends = window.starts_at.astimezone(dt.UTC), window.ends_at.astimezone(dt.UTC)
    from changes.items import format_at

    return {
        "type": "notification",
        "id": f"maintenance-window-{window.pk}",
        "level": "warning",
        "title": "Scheduled maintenance",
        "body": f"{window.message} ({starts:%Y-%m-%d %H:%M} to {ends:%H:%M} UTC)",
        "context": None,
        "seq": seq,
        "requires_ack": False,
        "maintenance": {
            "starts_at": format_at(starts),
            "until": format_at(ends),
            "message": window.message,
        },
    }


def maintenance_windows_apply(*, now: dt.datetime | None = None) -> dict[str, int]:
    """Announce, start and end the windows that are due (the beat task), each in its own
    transaction. A window whose end passed before it could start (beat was down) is
    closed without switching anything. Returns how many of each happened."""
    now = now or timezone.now()
    done = {"announced": 0, "started": 0, "ended": 0}
    ids = list(
        MaintenanceWindow.objects.filter(
            cancelled_at__isnull=True, ended_at__isnull=True
        ).values_list("pk", flat=True)
    )
    for window_id in ids:
        step = _window_apply(window_id, now)
        if step:
            done[step] += 1
    return done


@transaction.atomic
def _window_apply(window_id: int, now: dt.datetime) -> str | None:
    from changes.selectors import change_log_state
    from realtime.broadcast import system_message_send

    window = (
        MaintenanceWindow.objects.select_for_update(skip_locked=True)
        .filter(pk=window_id, cancelled_at__isnull=True, ended_at__isnull=True)
        .first()
    )
    if window is None:
        return None
    if window.ends_at <= now:
        state = maintenance_read()
        if window.started_at and state.active and state.window == window.pk:
            maintenance_switch(actor=None, active=False, message="")
        window.ended_at = now
        window.save(update_fields=["ended_at"])
        return "ended"
    if window.starts_at <= now and window.started_at is None:
        maintenance_switch(
            actor=None,
            active=True,
            message=window.message,
            until=window.ends_at,
            retry_after=window.retry_after,
            window=window,
        )
        window.started_at = now
        window.announced_at = window.announced_at or now
        window.save(update_fields=["started_at", "announced_at"])
        return "started"
    if window.announced_at is None and now >= window.starts_at - window.announce_before:
        message = maintenance_window_announcement(window, seq=change_log_state().head_seq)

        def announce() -> None:
            try:
                async_to_sync(system_message_send)(message)
            except Exception:
                logger.exception("could not announce maintenance window %s", window.pk)

        transaction.on_commit(announce)
        window.announced_at = now
        window.save(update_fields=["announced_at"])
        return "announced"
    return None


# -- staff-only subscriptions ---------------------------------------------------------------


def staff_subscriptions_record(
    *, user: Any, contexts: list[str], session: str, transport: str
) -> list[str]:
    """Audit the staff-only contexts among those a staff connection just subscribed to:
    `monitor`, and companies that are not public. Returns them."""
    from emissions.access import MONITOR
    from emissions.models import Company

    company_ids = [c.partition(":")[2] for c in contexts if c.startswith("company:")]
    hidden = set()
    if company_ids:
        hidden = {
            f"company:{pk}"
            for pk in Company.objects.filter(pk__in=company_ids, is_public=False).values_list(
                "pk", flat=True
            )
        }
    staff_only = [c for c in contexts if c == MONITOR or c in hidden]
    if staff_only:
        name = user.get_username() if getattr(user, "is_authenticated", False) else ""
        AuditEntry.objects.bulk_create(
            AuditEntry(
                actor=user if name else None,
                actor_name=name,
                action=AuditAction.STAFF_SUBSCRIPTION,
                target=context,
                details={"session": session, "transport": transport},
            )
            for context in staff_only
        )
    return staff_only


# -- engagement -------------------------------------------------------------------------------

_engagement_limiter: FixedWindowRateLimiter | None = None


def _limiter() -> FixedWindowRateLimiter:
    global _engagement_limiter
    if _engagement_limiter is None:
        scheme, _, rest = settings.REDIS_URL.partition("://")
        storage = RedisStorage(
            f"{'redis+unix' if scheme == 'unix' else scheme}://{rest}",
            key_prefix=f"{settings.REDIS_PREFIX}:limits",
            socket_timeout=REDIS_TIMEOUT_S,
            socket_connect_timeout=REDIS_TIMEOUT_S,
        )
        # A fixed window: two Redis commands per report, and an exact Retry-After.
        _engagement_limiter = FixedWindowRateLimiter(storage)
    return _engagement_limiter


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


# -- refresh_metrics -----------------------------------------------------------------------------


def refresh_metrics_snapshot(*, now: dt.datetime | None = None) -> int:
    """Record this minute's figures in refresh_metrics (the beat task, every minute):
    connections by transport, deliveries per second over every server process, the
    publisher's lag and backlog, maintenance mode (samples, at the current minute), and
    engagement events by kind (counted over the minute that just ended, at its start).
    Running twice in a minute overwrites, never duplicates. Returns the rows written."""
    from adminpanel.monitor import processes_read
    from changes.selectors import publisher_backlog
    from realtime.selectors import connection_counts

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
