"""Maintenance mode: the switch, its announcement to every process and client, and the
scheduled windows that switch it on and off."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from asgiref.sync import async_to_sync
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from adminpanel.audit import audit_record
from adminpanel.models import (
    AuditAction,
    MaintenanceState,
    MaintenanceWindow,
)
from adminpanel.selectors import Maintenance, maintenance_cache_set, maintenance_read
from changes.items import format_at
from changes.publisher import PUBLISHER_LOCK_KEY
from changes.selectors import change_log_state
from common.errors import ApplicationError, NotFound
from realtime.broadcast import system_message_send
from realtime.control import process_send

logger = logging.getLogger(__name__)


# A window longer than this is a typo, not a plan.
MAINTENANCE_WINDOW_MAX = dt.timedelta(days=7)


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
