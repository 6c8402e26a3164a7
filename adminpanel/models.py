"""Operators' records: the audit log of admin overrides and staff-only subscriptions."""

from django.conf import settings
from django.db import models
from django.db.models.functions import Now

from common import audit


class AuditAction(models.TextChoices):
    POLICY_EDIT = audit.POLICY_EDIT, "refresh policy edited"
    BROADCAST = audit.BROADCAST, "announcement broadcast"
    MAINTENANCE_ON = audit.MAINTENANCE_ON, "maintenance mode switched on"
    MAINTENANCE_OFF = audit.MAINTENANCE_OFF, "maintenance mode switched off"
    MAINTENANCE_SCHEDULED = audit.MAINTENANCE_SCHEDULED, "maintenance window scheduled"
    STAFF_SUBSCRIPTION = audit.STAFF_SUBSCRIPTION, "staff-only subscription"


class AuditEntry(models.Model):
    """Who did what, when. Rows are only ever added (the admin shows them read-only)."""

    at = models.DateTimeField(db_default=Now(), db_index=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    # The actor's username at the time (kept when the user is deleted).
    actor_name = models.CharField(max_length=150, blank=True, default="")
    action = models.CharField(max_length=32, choices=AuditAction.choices, db_index=True)
    # What it was done to: a policy "registered/company_metrics", a context, "all".
    target = models.CharField(max_length=200, blank=True, default="")
    details = models.JSONField(default=dict, blank=True)

    class Meta:
        db_table = "audit_log"
        ordering = ["-at", "-id"]
        verbose_name = "audit log entry"
        verbose_name_plural = "audit log"

    def __str__(self) -> str:
        return (
            f"{self.at:%Y-%m-%d %H:%M:%S} {self.actor_name or 'system'} {self.action} {self.target}"
        )


class MaintenanceState(models.Model):
    """Maintenance mode: one row (id 1), the truth every process reads through its cache.

    Changed only by `adminpanel.maintenance.maintenance_switch`, which also audits it and
    tells every client and every server process.
    """

    id = models.PositiveSmallIntegerField(primary_key=True, default=1, editable=False)
    active = models.BooleanField(default=False)
    message = models.CharField(max_length=500, blank=True, default="")
    # When maintenance is expected to end (sent to clients); informative, the switch ends it.
    until = models.DateTimeField(null=True, blank=True)
    # The retry hint (seconds) given to refused connections; empty: derived from `until`.
    retry_after = models.PositiveIntegerField(null=True, blank=True)
    # The scheduled window that switched it on, if one did.
    window = models.ForeignKey(
        "MaintenanceWindow", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    changed_at = models.DateTimeField(db_default=Now())
    changed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        db_table = "maintenance_state"
        verbose_name = "maintenance mode"
        verbose_name_plural = "maintenance mode"
        constraints = [
            models.CheckConstraint(condition=models.Q(id=1), name="maintenance_state_one_row")
        ]

    def __str__(self) -> str:
        return "maintenance on" if self.active else "maintenance off"


class MaintenanceWindow(models.Model):
    """A planned maintenance: announced ahead, switched on and off by a beat task."""

    starts_at = models.DateTimeField(db_index=True)
    ends_at = models.DateTimeField()
    message = models.CharField(max_length=500)
    retry_after = models.PositiveIntegerField(null=True, blank=True)
    # How long before `starts_at` clients are told (a `notification`).
    announce_before = models.DurationField()
    announced_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    cancelled_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(db_default=Now())
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        db_table = "maintenance_windows"
        ordering = ["starts_at", "id"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(ends_at__gt=models.F("starts_at")),
                name="maintenance_window_ends_after_start",
            )
        ]

    def __str__(self) -> str:
        return f"{self.starts_at:%Y-%m-%d %H:%M} to {self.ends_at:%Y-%m-%d %H:%M} UTC"

    @property
    def status(self) -> str:
        if self.cancelled_at:
            return "cancelled"
        if self.ended_at:
            return "ended"
        if self.started_at:
            return "running"
        if self.announced_at:
            return "announced"
        return "scheduled"


class RefreshMetric(models.Model):
    """One figure at one minute (the specification's refresh_metrics): connections by
    transport, deliveries per second, publisher lag, pending changes (sampled), and
    engagement events by kind (counted over the minute)."""

    at = models.DateTimeField()
    metric = models.CharField(max_length=40)
    # The dimension: a transport, an engagement kind; empty when there is none.
    label = models.CharField(max_length=40, blank=True, default="")
    value = models.FloatField()

    class Meta:
        db_table = "refresh_metrics"
        constraints = [
            models.UniqueConstraint(fields=["metric", "label", "at"], name="refresh_metric_once")
        ]
        indexes = [models.Index(fields=["at"], name="refresh_metrics_at")]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M} {self.metric}[{self.label}] = {self.value}"


class EngagementKind(models.TextChoices):
    PAUSE = "pause"
    RESUME = "resume"
    MANUAL_REFRESH = "manual_refresh"
    NOTIFICATION_OPENED = "notification_opened"
    TRANSPORT_FALLBACK = "transport_fallback"


class EngagementEvent(models.Model):
    """One thing a viewer did with the live updates, reported by the browser client."""

    at = models.DateTimeField(db_default=Now())
    kind = models.CharField(max_length=24, choices=EngagementKind.choices)
    # Who, as realtime.control.client_key spells it ("user:<id>", "anon:<session>"), or
    # the client address for a client without a session.
    client = models.CharField(max_length=64)
    context = models.CharField(max_length=100, blank=True, default="")
    transport = models.CharField(max_length=10, blank=True, default="")
    # transport_fallback: the transport that failed.
    from_transport = models.CharField(max_length=10, blank=True, default="")
    # notification_opened: which notification.
    notification = models.CharField(max_length=100, blank=True, default="")

    class Meta:
        db_table = "engagement_events"
        indexes = [models.Index(fields=["at", "kind"], name="engagement_events_at_kind")]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.kind} {self.client}"
