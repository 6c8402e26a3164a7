"""Reads of notifications: who is a client, what awaits acknowledgement, what a poll
carries, whether a client may acknowledge a notification."""

from __future__ import annotations

import datetime as dt
import re
import uuid
from dataclasses import dataclass
from typing import Any

from django.db import connection
from django.db.models import Q
from django.utils import timezone

from changes.models import AUDIENCE_PUBLIC, AUDIENCE_STAFF
from common.identity import client_key
from notifications.messages import (
    Delivery,
    NotificationMessage,
    notification_row_delivery,
    notification_row_message,
)
from notifications.models import UpdateNotification

# What a client key may look like in notification_receipts (a cookie is the client's
# word: anything else, or anything longer, identifies nobody).
_CLIENT_KEY = re.compile(r"^(user|anon|conn):[A-Za-z0-9_-]{1,90}\Z")


def client_key_valid(key: str | None) -> bool:
    return key is not None and bool(_CLIENT_KEY.match(key))


def receipt_client_key(
    *, user: Any, session_key: str | None, connection_id: str | None
) -> str | None:
    """Who receives and acknowledges: the user, else the browser's Django session, else
    the live session (`conn:<id>`: a client without an identity is a client per
    connection). None when there is nothing to remember the client by."""
    key = client_key(user, session_key)
    if client_key_valid(key):
        return key
    key = f"conn:{connection_id}" if connection_id else None
    return key if client_key_valid(key) else None


def audiences_visible(audience: str) -> list[str]:
    """The notification audiences a client of `audience` may see."""
    return [AUDIENCE_PUBLIC, AUDIENCE_STAFF] if audience == AUDIENCE_STAFF else [AUDIENCE_PUBLIC]


def notification_id_parse(value: str) -> uuid.UUID | None:
    """The UUID a notification id names, or None for anything else."""
    if not isinstance(value, str) or len(value) > 36:
        return None
    try:
        parsed = uuid.UUID(value)
    except ValueError:
        return None
    return parsed if str(parsed) == value.lower() else None


def notification_visible(
    *, notification_id: uuid.UUID, client: str | None, audience: str
) -> UpdateNotification | None:
    """The notification if this client may see it (its audience, its targets); None for
    one that does not exist or is someone else's: both are refused alike."""
    found = UpdateNotification.objects.filter(
        id=notification_id, audience__in=audiences_visible(audience)
    )
    targeted = Q(target_sessions=[])
    if client is not None:
        targeted |= Q(target_sessions__contains=[client])
    return found.filter(targeted).first()


def notifications_awaiting_ack(*, limit: int) -> list[Delivery]:
    """Unexpired notifications that require acknowledgement, newest first: the candidates
    a reconnecting session is checked against (each process keeps them in memory)."""
    rows = UpdateNotification.objects.filter(requires_ack=True, expires_at__gt=timezone.now())
    return [notification_row_delivery(row) for row in rows.order_by("-created_at")[:limit]]


def receipts_state(*, client: str, ids: list[str]) -> dict[str, tuple[int, bool]]:
    """Of these notifications, the ones the client has a receipt for: id -> (attempts,
    acknowledged)."""
    if not ids:
        return {}
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT notification_id::text, attempts, acknowledged_at IS NOT NULL"
            " FROM notification_receipts"
            " WHERE client_key = %s AND notification_id = ANY(%s::uuid[])",
            [client, ids],
        )
        return {row[0]: (row[1], row[2]) for row in cursor.fetchall()}


@dataclass(frozen=True)
class PollNotification:
    """A notification in a poll answer; `fresh`: never delivered to this client before."""

    message: NotificationMessage
    fresh: bool


def notifications_for_poll(
    *,
    client: str | None,
    audience: str,
    contexts: list[str],
    limit: int,
    recent: dt.timedelta,
) -> list[PollNotification]:
    """What a poll answer carries for this client, oldest first, at most `limit`: the
    unexpired notifications for the polled contexts or for everyone that the client may
    see and that either were never delivered to it and are recent, or require an
    acknowledgement it has not given and were delivered to it before (announcements: even
    if not). A client without an identity has nothing to be remembered by: none."""
    if client is None:
        return []
    rows = UpdateNotification.objects.raw(
        "SELECT n.*, r.id IS NULL AS fresh FROM update_notifications n"
        " LEFT JOIN notification_receipts r ON r.notification_id = n.id AND r.client_key = %s"
        " WHERE n.expires_at > now() AND n.audience = ANY(%s)"
        " AND (n.context IS NULL OR n.context = ANY(%s))"
        " AND (n.target_sessions = '{}' OR %s = ANY(n.target_sessions))"
        " AND ((n.requires_ack AND r.acknowledged_at IS NULL"
        "       AND (r.attempts > 0 OR n.notification_type = 'announcement'))"
        " OR (r.id IS NULL AND n.created_at > now() - %s))"
        " ORDER BY n.created_at, n.id LIMIT %s",
        [client, audiences_visible(audience), list(contexts), client, recent, limit],
    )
    return [PollNotification(notification_row_message(row), bool(row.fresh)) for row in rows]
