"""Notifications after they exist: their errors, delivery attempts, acknowledgements and
retention."""

from __future__ import annotations

import datetime as dt
import logging

from django.conf import settings
from django.db import connection, transaction
from django.db.backends.utils import CursorWrapper

from common.db import rows_delete_in_batches
from common.errors import ApplicationError, NotFound
from notifications.selectors import notification_id_parse, notification_visible

logger = logging.getLogger(__name__)

# The control action every server process's sessions receive notifications by.
NOTIFICATION_ACTION = "notification"


class NotificationNotFound(NotFound):
    """A notification id that names nothing this client may see."""

    def __init__(self) -> None:
        super().__init__("No such notification.")


class NotificationIdInvalid(ApplicationError):
    """A string that cannot be a notification id."""

    code = "invalid_request"

    def __init__(self) -> None:
        super().__init__("`notification` is a notification id (a UUID).")


def notification_ttl() -> dt.timedelta:
    """How long a notification lives (NOTIFY_TTL_HOURS)."""
    return dt.timedelta(hours=settings.NOTIFY_TTL_HOURS)


# -- attempts and acknowledgements -------------------------------------------------------------


def notification_attempts_record(*, attempts: list[tuple[str, str, int]]) -> None:
    """Count deliveries, (notification id, client key, how many), in one statement: per
    client on the receipts, in total on the notifications. Notifications pruned meanwhile
    are skipped. Statistics: the commit does not wait for the WAL flush."""
    if not attempts:
        return
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL synchronous_commit TO OFF")
        cursor.execute(
            "WITH x AS (SELECT id, client_key, sum(n)::int AS n"
            "   FROM unnest(%s::uuid[], %s::text[], %s::int[]) AS x(id, client_key, n)"
            "   GROUP BY id, client_key),"
            " ok AS (SELECT x.* FROM x JOIN update_notifications u ON u.id = x.id),"
            " receipts AS (INSERT INTO notification_receipts"
            "   (notification_id, client_key, attempts, last_attempt_at)"
            "   SELECT id, client_key, n, now() FROM ok ORDER BY id, client_key"
            "   ON CONFLICT (notification_id, client_key) DO UPDATE"
            "   SET attempts = notification_receipts.attempts + EXCLUDED.attempts,"
            "   last_attempt_at = EXCLUDED.last_attempt_at)"
            " UPDATE update_notifications u SET delivery_attempts = u.delivery_attempts + s.n"
            " FROM (SELECT id, sum(n)::int AS n FROM ok GROUP BY id) s WHERE u.id = s.id",
            [[a[0] for a in attempts], [a[1] for a in attempts], [a[2] for a in attempts]],
        )


def _acknowledge(cursor, *, ids: list[str], client: str) -> None:
    cursor.execute(
        "INSERT INTO notification_receipts (notification_id, client_key, attempts,"
        " acknowledged_at) SELECT id, %s, 0, now() FROM unnest(%s::uuid[]) AS x(id)"
        " ORDER BY id ON CONFLICT (notification_id, client_key) DO UPDATE"
        " SET acknowledged_at = coalesce(notification_receipts.acknowledged_at, now())",
        [client, ids],
    )
    cursor.execute(
        "UPDATE update_notifications SET delivered_at = now()"
        " WHERE id = ANY(%s::uuid[]) AND delivered_at IS NULL",
        [ids],
    )


def notification_acknowledge(*, notification: str, client: str, audience: str) -> None:
    """The client acknowledges one notification: its receipt's acknowledged_at, and the
    notification's delivered_at if it is the first. Idempotent. NotificationIdInvalid for
    a string that is no id, NotificationNotFound for one the client may not see; neither
    changes anything."""
    notification_id = notification_id_parse(notification)
    if notification_id is None:
        raise NotificationIdInvalid()
    if (
        notification_visible(notification_id=notification_id, client=client, audience=audience)
        is None
    ):
        raise NotificationNotFound()
    with transaction.atomic(), connection.cursor() as cursor:
        _acknowledge(cursor, ids=[str(notification_id)], client=client)


def notifications_acknowledge_sent(*, ids: list[str], client: str) -> None:
    """Acknowledge notifications the caller knows were sent to this client."""
    if ids:
        with transaction.atomic(), connection.cursor() as cursor:
            _acknowledge(cursor, ids=sorted(set(ids)), client=client)


def notifications_acknowledge_through(*, client: str, seq: int) -> int:
    """`ack` with a `seq`: acknowledges the notifications requiring acknowledgement that
    were delivered to this client with a seq up to `seq`. How many."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            "SELECT r.notification_id::text FROM notification_receipts r"
            " JOIN update_notifications n ON n.id = r.notification_id"
            " WHERE r.client_key = %s AND r.acknowledged_at IS NULL AND r.attempts > 0"
            " AND n.requires_ack AND n.seq <= %s",
            [client, seq],
        )
        ids = sorted(row[0] for row in cursor.fetchall())
        if ids:
            _acknowledge(cursor, ids=ids, client=client)
        return len(ids)


# -- retention ------------------------------------------------------------------------------


def notifications_prune(*, older_than: dt.timedelta | None = None, batch: int = 1000) -> int:
    """Delete notifications (and their receipts) expired for longer than
    NOTIFY_RETENTION_DAYS, in bounded batches. How many."""
    older_than = older_than or dt.timedelta(days=settings.NOTIFY_RETENTION_DAYS)

    def delete_batch(cursor: CursorWrapper) -> int:
        cursor.execute(
            "WITH doomed AS (SELECT id FROM update_notifications"
            "   WHERE expires_at < now() - %s ORDER BY expires_at LIMIT %s),"
            " receipts AS (DELETE FROM notification_receipts"
            "   WHERE notification_id IN (SELECT id FROM doomed))"
            " DELETE FROM update_notifications WHERE id IN (SELECT id FROM doomed)",
            [older_than, batch],
        )
        return cursor.rowcount

    return rows_delete_in_batches(batch=batch, delete_batch=delete_batch)
