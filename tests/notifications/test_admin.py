"""Notifications in the Django admin: the read-only list with receipts, and the broadcast
form (validated, rate limited, audited, sent)."""

import datetime as dt

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.urls import reverse
from django.utils import timezone

from adminpanel.models import AuditEntry
from notifications.models import NotificationReceipt, UpdateNotification

pytestmark = pytest.mark.django_db(transaction=True)

BROADCAST = "admin:notifications_updatenotification_broadcast"
CHANGELIST = "admin:notifications_updatenotification_changelist"


@pytest.fixture
def admin_client(client):
    user = get_user_model().objects.create_superuser("root", password="root-pass-1")
    client.force_login(user)
    return client


def announcement(**fields) -> UpdateNotification:
    now = timezone.now()
    return UpdateNotification.objects.create(
        notification_type="announcement",
        level="info",
        title="Hello",
        body="World",
        audience="public",
        expires_at=now + dt.timedelta(hours=1),
        **fields,
    )


def test_the_list_links_to_the_broadcast_form(admin_client):
    announcement()
    page = admin_client.get(reverse(CHANGELIST))
    assert page.status_code == 200
    assert reverse(BROADCAST) in page.content.decode()
    assert b"Hello" in page.content


def test_a_notification_page_is_read_only_with_its_receipts(admin_client):
    note = announcement()
    NotificationReceipt.objects.create(notification=note, client_key="user:1", attempts=3)
    page = admin_client.get(
        reverse("admin:notifications_updatenotification_change", args=[note.pk])
    )
    assert page.status_code == 200
    content = page.content.decode()
    assert "user:1" in content and 'name="_save"' not in content
    assert (
        admin_client.get(reverse("admin:notifications_updatenotification_add")).status_code == 403
    )


def test_broadcast_from_the_admin(admin_client, world):
    form = admin_client.get(reverse(BROADCAST))
    assert form.status_code == 200 and b"Broadcast" in form.content
    response = admin_client.post(
        reverse(BROADCAST),
        {
            "level": "critical",
            "title": "Outage",
            "body": "Imports paused.",
            "context": "industry:steel",
            "requires_ack": "on",
        },
    )
    assert response.status_code == 302 and response["Location"] == reverse(CHANGELIST)
    note = UpdateNotification.objects.get()
    assert (note.level, note.context, note.requires_ack) == ("critical", "industry:steel", True)
    audit = AuditEntry.objects.get()
    assert (audit.action, audit.target, audit.actor_name) == ("broadcast", "industry:steel", "root")


@pytest.mark.parametrize(
    "fields",
    [
        {"level": "fatal", "title": "t", "body": "b"},
        {"level": "info", "title": "", "body": "b"},
        {"level": "info", "title": "t", "body": "b", "context": "industry:nope"},
        {"level": "info", "title": "t", "body": "b", "context": "not a context"},
        {"level": "info", "title": "tab\there", "body": "b"},
    ],
)
def test_invalid_admin_broadcasts_send_nothing(admin_client, world, fields):
    response = admin_client.post(reverse(BROADCAST), fields)
    assert response.status_code == 200
    assert b"errorlist" in response.content
    assert not UpdateNotification.objects.exists() and not AuditEntry.objects.exists()


def test_admin_broadcasts_share_the_rate_limit(admin_client, world, settings):
    settings.NOTIFY_BROADCAST_RATE = "1/minute"
    fields = {"level": "info", "title": "t", "body": "b"}
    assert admin_client.post(reverse(BROADCAST), fields).status_code == 302
    limited = admin_client.post(reverse(BROADCAST), fields)
    assert limited.status_code == 200 and b"Too many broadcasts" in limited.content
    assert UpdateNotification.objects.count() == 1


def test_the_broadcast_form_is_for_staff_with_access(client, world):
    viewer = get_user_model().objects.create_user("viewer", password="viewer-pass-1")
    client.force_login(viewer)
    fields = {"level": "info", "title": "t", "body": "b"}
    # Signed in but not staff: refused (adminpanel.middleware).
    assert client.post(reverse(BROADCAST), fields).status_code == 403
    staff = get_user_model().objects.create_user("clerk", password="clerk-pass-1", is_staff=True)
    client.force_login(staff)
    assert client.post(reverse(BROADCAST), fields).status_code == 403
    staff.user_permissions.add(Permission.objects.get(codename="view_updatenotification"))
    assert client.get(reverse(BROADCAST)).status_code == 200
    assert not UpdateNotification.objects.exists()
