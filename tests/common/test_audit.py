"""The audit signal (common/audit.py): the apps below adminpanel record overrides through
it, adminpanel writes the row in the caller's transaction."""

import pytest
from django.contrib.auth import get_user_model
from django.db import transaction

from adminpanel.models import AuditAction, AuditEntry
from common import audit as audit_actions
from common.audit import audit, audited

pytestmark = pytest.mark.django_db


def test_an_audit_lands_in_the_log_with_its_actor():
    staff = get_user_model().objects.create_user("ops", password="x-pass-1", is_staff=True)
    audit(actor=staff, action=audit_actions.BROADCAST, target="all", details={"title": "hi"})
    entry = AuditEntry.objects.get()
    assert (entry.actor, entry.actor_name, entry.action) == (staff, "ops", AuditAction.BROADCAST)
    assert (entry.target, entry.details) == ("all", {"title": "hi"})


def test_an_audit_is_part_of_the_callers_transaction():
    with pytest.raises(RuntimeError), transaction.atomic():
        audit(actor=None, action=audit_actions.POLICY_EDIT, target="anonymous/overview")
        raise RuntimeError("the change it audits failed")
    assert not AuditEntry.objects.exists()


def test_an_audit_nobody_records_is_an_error(monkeypatch):
    monkeypatch.setattr(audited, "receivers", [])
    monkeypatch.setattr(audited, "sender_receivers_cache", {})
    with pytest.raises(RuntimeError, match="no audit log receives"):
        audit(actor=None, action=audit_actions.BROADCAST)
    assert not AuditEntry.objects.exists()


def test_the_audit_actions_are_the_logs_choices():
    assert {value for value, _ in AuditAction.choices} == {
        audit_actions.POLICY_EDIT,
        audit_actions.BROADCAST,
        audit_actions.MAINTENANCE_ON,
        audit_actions.MAINTENANCE_OFF,
        audit_actions.MAINTENANCE_SCHEDULED,
        audit_actions.STAFF_SUBSCRIPTION,
    }
