"""Writes of the operators' records."""

from __future__ import annotations

from typing import Any

from adminpanel.models import AuditEntry


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
