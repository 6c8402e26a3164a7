"""Notifications: the specification's `update_notifications`, and who received them.

One `UpdateNotification` is one `notification` message of PROTOCOL.md (its `id` is the
message's `id`). It targets the sessions that follow its `context` (every session when
the context is null) and whose audience may see it; `target_sessions` narrows that to
some clients. Because one notification reaches many clients, per-client delivery lives
in `NotificationReceipt` (`notification_receipts`): attempts and acknowledgement per
client. The specification's columns on the notification stay meaningful as totals:
`delivery_attempts` is the sum of every client's attempts, `delivered_at` the moment of
the first acknowledgement.
"""

from __future__ import annotations

import uuid

from django.contrib.postgres.fields import ArrayField
from django.contrib.postgres.functions import RandomUUID
from django.db import models
from django.db.models import F, Q
from django.db.models.functions import Now

# A title fits a toast; a body a few sentences. Longer texts are refused (400), not cut.
TITLE_MAX_LENGTH = 120
BODY_MAX_LENGTH = 2000
# "user:<id>", "anon:<Django session key>" or "conn:<live session id>".
CLIENT_KEY_MAX_LENGTH = 100
# The contexts of PROTOCOL.md that a notification can concern (`system` is spelled null).
CONTEXT_PATTERN = (
    r"^(overview|companies|company:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
    r"|industry:[a-z0-9]+(-[a-z0-9]+)*)$"
)


class NotificationLevel(models.TextChoices):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class NotificationType(models.TextChoices):
    TOTAL_MOVE = "total_move", "company total moved"
    RANKING_CHANGE = "ranking_change", "industry ranking changed"
    VERIFICATION_CHANGE = "verification_change", "verification status changed"
    NEW_COMPANY = "new_company", "new company in an industry"
    DATA_QUALITY = "data_quality", "data-quality score moved"
    ANNOUNCEMENT = "announcement", "announcement"


class NotificationAudience(models.TextChoices):
    """Who may see a notification: `public` everyone, `staff` staff only (it concerns a
    non-public company or a rejected record)."""

    PUBLIC = "public"
    STAFF = "staff"


class UpdateNotification(models.Model):
    """Something a person should notice: a significant change or an announcement.

    Delivery state over every client: `delivery_attempts` counts the frames sent (and
    poll answers that carried it) to all clients together, `delivered_at` is the first
    acknowledgement; per client, see `receipts`.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, db_default=RandomUUID())
    # The data_changes row that caused it; null for announcements. Not a foreign key: the
    # change log is pruned after CHANGE_RETENTION_DAYS and emptied by a reset, and a
    # notification's record outlives both.
    change_id = models.UUIDField(null=True, blank=True)
    # Client keys this notification is limited to; empty: every client that follows
    # `context` (or every client, when `context` is null) and may see it.
    target_sessions = ArrayField(
        models.CharField(max_length=CLIENT_KEY_MAX_LENGTH), default=list, blank=True
    )
    notification_type = models.CharField(max_length=24, choices=NotificationType.choices)
    # The facts behind the text (company, year, totals, ranks), sent as `data`.
    payload = models.JSONField(default=dict, blank=True)
    delivery_attempts = models.IntegerField(default=0, db_default=0)
    delivered_at = models.DateTimeField(null=True, blank=True)
    level = models.CharField(max_length=8, choices=NotificationLevel.choices)
    title = models.CharField(max_length=TITLE_MAX_LENGTH)
    body = models.CharField(max_length=BODY_MAX_LENGTH, blank=True, default="", db_default="")
    # The context it concerns; null: everyone (the implicit `system` context).
    context = models.CharField(max_length=100, null=True, blank=True)  # noqa: DJ001
    # The seq of the change that caused it; for an announcement, the head when it was made.
    seq = models.BigIntegerField(default=0, db_default=0)
    audience = models.CharField(max_length=8, choices=NotificationAudience.choices)
    requires_ack = models.BooleanField(default=False, db_default=False)
    created_at = models.DateTimeField(db_default=Now())
    # Not delivered, redelivered or offered to polls after this.
    expires_at = models.DateTimeField()

    class Meta:
        db_table = "update_notifications"
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(
                condition=Q(level__in=NotificationLevel.values), name="update_notifications_level"
            ),
            models.CheckConstraint(
                condition=Q(audience__in=NotificationAudience.values),
                name="update_notifications_audience",
            ),
            models.CheckConstraint(
                condition=Q(notification_type__in=NotificationType.values),
                name="update_notifications_type",
            ),
            models.CheckConstraint(
                condition=Q(notification_type=NotificationType.ANNOUNCEMENT)
                | Q(change_id__isnull=False),
                name="update_notifications_change_or_announcement",
            ),
            models.CheckConstraint(
                condition=Q(delivery_attempts__gte=0), name="update_notifications_attempts"
            ),
            models.CheckConstraint(condition=Q(seq__gte=0), name="update_notifications_seq"),
            models.CheckConstraint(condition=~Q(title=""), name="update_notifications_title"),
            models.CheckConstraint(
                condition=Q(context__isnull=True) | Q(context__regex=CONTEXT_PATTERN),
                name="update_notifications_context",
            ),
            models.CheckConstraint(
                condition=Q(expires_at__gt=F("created_at")), name="update_notifications_expiry"
            ),
        ]
        indexes = [
            models.Index(F("created_at").desc(), name="update_notifications_created"),
            models.Index(fields=["context", "created_at"], name="update_notifications_context"),
            # Redelivery and polls look for unexpired notifications awaiting acknowledgement.
            models.Index(
                fields=["expires_at"],
                condition=Q(requires_ack=True),
                name="update_notifications_ack_due",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.level} {self.title}"


class NotificationReceipt(models.Model):
    """One client's delivery of one notification: how often it was sent to the client's
    connections (and polls), and when the client acknowledged it."""

    notification = models.ForeignKey(
        UpdateNotification, on_delete=models.CASCADE, related_name="receipts"
    )
    client_key = models.CharField(max_length=CLIENT_KEY_MAX_LENGTH)
    attempts = models.IntegerField(default=0, db_default=0)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    acknowledged_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "notification_receipts"
        constraints = [
            models.UniqueConstraint(
                fields=["notification", "client_key"], name="notification_receipts_unique"
            ),
            models.CheckConstraint(
                condition=Q(attempts__gte=0), name="notification_receipts_attempts"
            ),
            models.CheckConstraint(
                condition=Q(client_key__regex=r"^(user|anon|conn):[A-Za-z0-9_-]+$"),
                name="notification_receipts_client_key",
            ),
        ]
        indexes = [models.Index(fields=["client_key"], name="notification_receipts_client")]

    def __str__(self) -> str:
        return f"{self.notification_id} {self.client_key}"
