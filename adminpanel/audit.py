"""The audit log: admin overrides (from adminpanel and, through common/audit.py, the apps
below it) and the staff-only subscriptions of live connections."""

from __future__ import annotations

import logging
from typing import Any

from adminpanel.models import (
    AuditAction,
    AuditEntry,
)
from emissions.access import MONITOR
from emissions.models import Company

logger = logging.getLogger(__name__)


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


def staff_subscriptions_record(
    *, user: Any, contexts: list[str], session: str, transport: str
) -> list[str]:
    """Audit the staff-only contexts among those a staff connection just subscribed to:
    `monitor`, and companies that are not public. Returns them."""
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
