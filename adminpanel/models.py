"""Operators' records: the audit log of admin overrides and staff-only subscriptions."""

from django.conf import settings
from django.db import models
from django.db.models.functions import Now


class AuditAction(models.TextChoices):
    POLICY_EDIT = "policy_edit", "refresh policy edited"
    BROADCAST = "broadcast", "announcement broadcast"
    MAINTENANCE_ON = "maintenance_on", "maintenance mode switched on"
    MAINTENANCE_OFF = "maintenance_off", "maintenance mode switched off"
    MAINTENANCE_SCHEDULED = "maintenance_scheduled", "maintenance window scheduled"
    STAFF_SUBSCRIPTION = "staff_subscription", "staff-only subscription"


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
