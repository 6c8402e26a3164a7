"""The audit log's way in for the apps below the one that keeps it (adminpanel, on top:
docs/architecture.md). An app records an override with `audit(...)`; adminpanel writes
the row, in the caller's transaction (a receiver of `audited` runs synchronously)."""

from __future__ import annotations

from typing import Any

from django.dispatch import Signal

# The actions (adminpanel.models.AuditAction labels them).
POLICY_EDIT = "policy_edit"
BROADCAST = "broadcast"
MAINTENANCE_ON = "maintenance_on"
MAINTENANCE_OFF = "maintenance_off"
MAINTENANCE_SCHEDULED = "maintenance_scheduled"
STAFF_SUBSCRIPTION = "staff_subscription"

# Sent with actor (a user or None), action, target and details.
audited = Signal()


def audit(*, actor: Any, action: str, target: str = "", details: dict | None = None) -> None:
    """Record one override in the audit log. An action nobody records is an error, not a
    silent loss: the audit log's app must be installed."""
    responses = audited.send(
        sender=None, actor=actor, action=action, target=target, details=details or {}
    )
    if not responses:
        raise RuntimeError("no audit log receives `audited`: is adminpanel in INSTALLED_APPS?")
