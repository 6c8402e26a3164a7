"""Refresh policies and preferences in the Django admin: policy edits go through the
service and are audited, preferences are read-only, staff only."""

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from adminpanel.models import AuditEntry
from preferences.models import RefreshPolicy, RefreshPreference
from tests.preferences.conftest import policy_set

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]


def _admin_client():
    user = get_user_model().objects.create_superuser("root", password="root-pass-1")
    client = Client()
    client.force_login(user)
    return client, user


def test_an_admin_edit_goes_through_the_service_and_is_audited():
    client, user = _admin_client()
    policy_set("registered", "directory")  # the row as seeded
    row = RefreshPolicy.objects.get(user_type="registered", category="directory")
    url = f"/admin/preferences/refreshpolicy/{row.pk}/change/"
    assert client.get(url).status_code == 200
    form = {
        "min_interval_ms": "5000",
        "default_interval_ms": "0",
        "max_deliveries_per_minute": "120",
        "debounce_ms": "200",
        "allowed_transports": ["websocket", "sse"],
        "realtime_allowed": "on",
    }
    response = client.post(url, form)
    assert response.status_code == 302, response.content.decode()[:2000]
    row.refresh_from_db()
    assert (row.min_interval_ms, row.max_deliveries_per_minute, row.debounce_ms) == (5000, 120, 200)
    assert row.allowed_transports == ["websocket", "sse"]
    entry = AuditEntry.objects.get()
    assert entry.action == "policy_edit" and entry.target == "registered/directory"
    assert entry.details["via"] == "admin" and entry.actor_id == user.pk

    # A rule broken in the form is shown there, nothing saved or audited.
    response = client.post(url, {**form, "default_interval_ms": "1000"})
    assert response.status_code == 200
    assert "At least min_interval_ms" in response.content.decode()
    assert AuditEntry.objects.count() == 1
    # No deleting a policy.
    delete = client.post(f"/admin/preferences/refreshpolicy/{row.pk}/delete/", {"post": "yes"})
    assert delete.status_code == 403


def test_preferences_are_read_only_in_the_admin():
    client, user = _admin_client()
    from preferences.services import refresh_preferences_update

    refresh_preferences_update(user=user, session_key=None, document={"paused": True})
    row = RefreshPreference.objects.get()
    assert client.get("/admin/preferences/refreshpreference/").status_code == 200
    page = client.get(f"/admin/preferences/refreshpreference/{row.pk}/change/")
    assert page.status_code == 200
    change = client.post(f"/admin/preferences/refreshpreference/{row.pk}/change/", {})
    assert change.status_code == 403
    assert client.get("/admin/preferences/refreshpreference/add/").status_code == 403


def test_non_staff_cannot_open_the_policy_admin(regular_user):
    client = Client()
    client.force_login(regular_user)
    response = client.get("/admin/preferences/refreshpolicy/")
    assert response.status_code in (302, 403)
    assert RefreshPolicy.objects.filter(user_type="x").count() == 0
