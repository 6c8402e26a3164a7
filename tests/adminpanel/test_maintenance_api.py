"""`/api/admin/maintenance` and its windows, the Django admin's switch, and the beat task
that announces, starts and ends scheduled windows."""

import datetime as dt
import json

import pytest
from channels.db import database_sync_to_async
from django.contrib.auth import get_user_model
from django.utils import timezone

from adminpanel.maintenance import maintenance_window_schedule, maintenance_windows_apply
from adminpanel.models import AuditAction, AuditEntry, MaintenanceWindow
from adminpanel.selectors import maintenance_read
from adminpanel.tasks import maintenance_windows_apply_task
from tests.adminpanel.conftest import connected, next_of

MAINTENANCE = "/api/admin/maintenance"
WINDOWS = "/api/admin/maintenance/windows"


def put(client, body, **extra):
    return client.put(MAINTENANCE, json.dumps(body), content_type="application/json", **extra)


def iso(moment: dt.datetime) -> str:
    return moment.isoformat()


@pytest.fixture
def viewer_client(regular_user):
    from rest_framework.test import APIClient

    client = APIClient()
    client.force_authenticate(regular_user)
    return client


# -- staff only ----------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", MAINTENANCE),
        ("put", MAINTENANCE),
        ("get", WINDOWS),
        ("post", WINDOWS),
        ("delete", f"{WINDOWS}/1"),
        ("get", "/api/admin/monitor"),
        ("get", "/api/admin/refresh-metrics"),
    ],
)
def test_every_admin_endpoint_is_403_for_non_staff_and_anonymous(
    method, path, api_client, viewer_client
):
    for client in (api_client, viewer_client):
        response = getattr(client, method)(path, {}, format="json")
        assert response.status_code == 403, (method, path, response.content)
        assert response.json()["error"]["code"] in ("permission_denied", "authentication_required")
    assert not AuditEntry.objects.exists()
    assert not maintenance_read().active


# -- the switch ------------------------------------------------------------------------------


@pytest.mark.django_db
def test_get_and_put_switch_maintenance_and_audit(staff_client, staff_user):
    answer = staff_client.get(MAINTENANCE).json()
    assert answer["active"] is False and answer["windows"] == []

    until = timezone.now() + dt.timedelta(minutes=30)
    response = put(
        staff_client,
        {"active": True, "message": "Database upgrade", "until": iso(until), "retry_after": 120},
    )
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["active"] is True and body["message"] == "Database upgrade"
    assert body["retry_after"] == 120 and body["changed_by"] == "staff"
    assert body["until"].startswith(until.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M"))

    response = put(staff_client, {"active": False})
    assert response.json()["active"] is False and response.json()["until"] is None
    actions = list(AuditEntry.objects.order_by("id").values_list("action", "actor_name"))
    assert actions == [
        (AuditAction.MAINTENANCE_ON, "staff"),
        (AuditAction.MAINTENANCE_OFF, "staff"),
    ]


@pytest.mark.django_db
@pytest.mark.parametrize(
    "body",
    [
        {},
        {"active": "yes"},
        {"active": 1},
        {"active": None},
        {"active": True, "message": 5},
        {"active": True, "message": "x" * 501},
        {"active": True, "message": "nul\x00byte"},
        {"active": True, "message": "\ud800"},
        {"active": True, "retry_after": 0},
        {"active": True, "retry_after": 3601},
        {"active": True, "retry_after": "30"},
        {"active": True, "retry_after": 1.5},
        {"active": True, "until": 1700000000},
        {"active": True, "until": "tomorrow"},
        {"active": True, "until": "2001-01-01T00:00:00Z"},
        {"active": True, "surprise": 1},
        [{"active": True}],
        "on",
    ],
)
def test_bad_switch_bodies_are_400_with_the_reason(staff_client, body):
    response = put(staff_client, body)
    assert response.status_code == 400, response.content
    assert response.json()["error"]["code"] == "invalid_request"
    assert not maintenance_read().active
    assert not AuditEntry.objects.exists()


@pytest.mark.django_db
def test_malformed_oversized_and_non_json_bodies(staff_client):
    response = staff_client.put(MAINTENANCE, "{not json", content_type="application/json")
    assert response.status_code == 400
    response = staff_client.put(MAINTENANCE, "active=1", content_type="text/plain")
    assert response.status_code == 415
    big = json.dumps({"active": True, "message": "x" * 70_000})
    response = staff_client.put(MAINTENANCE, big, content_type="application/json")
    assert response.status_code == 413
    deep = "[" * 100_000 + "]" * 100_000
    response = staff_client.put(MAINTENANCE, deep, content_type="application/json")
    assert response.status_code in (400, 413)
    # Under the size limit and too deep, the same answer on every Python: 3.11's parser
    # gave up at this depth, 3.13's went on.
    deep = '{"active": ' + "[" * 3000 + "]" * 3000 + "}"
    response = staff_client.put(MAINTENANCE, deep, content_type="application/json")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "malformed_request"
    assert not maintenance_read().active


@pytest.mark.django_db
def test_the_django_admin_switch_goes_through_the_service(client):
    admin = get_user_model().objects.create_superuser("root", password="root-pass-1")
    client.force_login(admin)
    response = client.get("/admin/adminpanel/maintenancestate/")
    assert response.status_code == 302
    page = client.get(response["Location"])
    assert page.status_code == 200
    response = client.post(
        "/admin/adminpanel/maintenancestate/1/change/",
        {
            "active": "on",
            "message": "From the admin",
            "until_0": "",
            "until_1": "",
            "retry_after": "15",
        },
    )
    assert response.status_code == 302, response.content
    state = maintenance_read()
    assert state.active and state.message == "From the admin" and state.retry_after == 15
    entry = AuditEntry.objects.get()
    assert (entry.action, entry.actor_name) == (AuditAction.MAINTENANCE_ON, "root")


@pytest.mark.django_db
def test_the_admin_pages_of_maintenance_are_refused_to_non_staff(client, regular_user):
    client.force_login(regular_user)
    for path in (
        "/admin/adminpanel/maintenancestate/1/change/",
        "/admin/adminpanel/maintenancewindow/add/",
        "/admin/adminpanel/auditentry/",
    ):
        # Signed-in non-staff are refused outright (adminpanel.middleware).
        assert client.get(path).status_code == 403


# -- windows ----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_windows_are_planned_listed_cancelled_and_audited(staff_client):
    starts = timezone.now() + dt.timedelta(hours=2)
    response = staff_client.post(
        WINDOWS,
        {
            "starts_at": iso(starts),
            "ends_at": iso(starts + dt.timedelta(minutes=30)),
            "message": "Storage migration",
            "announce_before_s": 1800,
        },
        format="json",
    )
    assert response.status_code == 201, response.content
    window = response.json()
    assert window["status"] == "scheduled" and window["announce_before_s"] == 1800
    assert [w["id"] for w in staff_client.get(WINDOWS).json()] == [window["id"]]
    assert staff_client.get(MAINTENANCE).json()["windows"][0]["id"] == window["id"]

    assert staff_client.delete(f"{WINDOWS}/{window['id']}").status_code == 204
    again = staff_client.delete(f"{WINDOWS}/{window['id']}")
    assert again.status_code == 409 and again.json()["error"]["code"] == "conflict"
    assert staff_client.delete(f"{WINDOWS}/999999").status_code == 404
    assert staff_client.get(WINDOWS).json() == []
    entries = list(AuditEntry.objects.order_by("id"))
    assert [e.action for e in entries] == [AuditAction.MAINTENANCE_SCHEDULED] * 2
    assert entries[0].details["message"] == "Storage migration"
    assert entries[1].details["cancelled"] is True


@pytest.mark.django_db
@pytest.mark.parametrize(
    "change",
    [
        {"ends_at": "before"},
        {"starts_at": "2001-01-01T00:00:00Z", "ends_at": "2001-01-01T01:00:00Z"},
        {"ends_at": "far"},
        {"message": "   "},
        {"message": None},
        {"message": 3},
        {"retry_after": -1},
        {"announce_before_s": 10**9},
        {"starts_at": 17},
        {"unknown": True},
    ],
)
def test_bad_windows_are_400(staff_client, change):
    starts = timezone.now() + dt.timedelta(hours=1)
    body = {
        "starts_at": iso(starts),
        "ends_at": iso(starts + dt.timedelta(hours=1)),
        "message": "Planned",
        **change,
    }
    if body["ends_at"] == "before":
        body["ends_at"] = iso(starts - dt.timedelta(minutes=1))
    if body["ends_at"] == "far":
        body["ends_at"] = iso(starts + dt.timedelta(days=8))
    response = staff_client.post(WINDOWS, body, format="json")
    assert response.status_code == 400, response.content
    assert not MaintenanceWindow.objects.exists()


def _window(*, starts_in: dt.timedelta, lasts: dt.timedelta, announce: dt.timedelta):
    starts = timezone.now() + starts_in
    return maintenance_window_schedule(
        actor=None,
        starts_at=starts,
        ends_at=starts + lasts,
        message="Storage migration",
        retry_after=20,
        announce_before=announce,
    )


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_a_window_is_announced_switched_on_and_off_by_the_task(world):
    window = await database_sync_to_async(_window)(
        starts_in=dt.timedelta(minutes=30),
        lasts=dt.timedelta(minutes=20),
        announce=dt.timedelta(hours=1),
    )
    apply = database_sync_to_async(maintenance_windows_apply)
    client = await connected()
    try:
        assert await apply(now=window.starts_at - dt.timedelta(hours=2)) == {
            "announced": 0,
            "started": 0,
            "ended": 0,
        }
        assert await apply(now=window.starts_at - dt.timedelta(minutes=30)) == {
            "announced": 1,
            "started": 0,
            "ended": 0,
        }
        note = await next_of(client, "notification")
        assert note["id"] == f"maintenance-window-{window.pk}"
        assert note["level"] == "warning" and note["requires_ack"] is False
        assert note["maintenance"]["message"] == "Storage migration"
        assert "Storage migration" in note["body"]
        # Announced once.
        assert (await apply(now=window.starts_at - dt.timedelta(minutes=29)))["announced"] == 0

        assert (await apply(now=window.starts_at + dt.timedelta(seconds=1)))["started"] == 1
        on = await next_of(client, "maintenance")
        assert on["active"] is True and on["message"] == "Storage migration"
        assert on["until"] is not None
        state = await database_sync_to_async(maintenance_read)()
        assert state.active and state.window == window.pk and state.retry_after == 20

        assert (await apply(now=window.ends_at + dt.timedelta(seconds=1)))["ended"] == 1
        assert (await next_of(client, "maintenance"))["active"] is False
    finally:
        await client.disconnect()
    assert not (await database_sync_to_async(maintenance_read)()).active
    actions = await database_sync_to_async(
        lambda: list(AuditEntry.objects.order_by("id").values_list("action", "target"))
    )()
    assert actions == [
        (AuditAction.MAINTENANCE_SCHEDULED, f"window:{window.pk}"),
        (AuditAction.MAINTENANCE_ON, f"window:{window.pk}"),
        (AuditAction.MAINTENANCE_OFF, "all"),
    ]


@pytest.mark.django_db(transaction=True)
def test_the_beat_task_starts_a_window_that_is_due():
    window = _window(
        starts_in=dt.timedelta(seconds=-1), lasts=dt.timedelta(hours=1), announce=dt.timedelta(0)
    )
    assert maintenance_windows_apply_task()["started"] == 1
    state = maintenance_read()
    assert state.active and state.window == window.pk and state.until == window.ends_at


@pytest.mark.django_db(transaction=True)
def test_a_window_missed_entirely_is_closed_without_switching():
    window = _window(
        starts_in=dt.timedelta(minutes=1), lasts=dt.timedelta(minutes=1), announce=dt.timedelta(0)
    )
    done = maintenance_windows_apply(now=window.ends_at + dt.timedelta(minutes=5))
    assert done == {"announced": 0, "started": 0, "ended": 1}
    assert not maintenance_read().active
    window.refresh_from_db()
    assert window.status == "ended" and window.started_at is None


@pytest.mark.django_db(transaction=True)
def test_cancelling_a_running_window_ends_maintenance_but_not_a_manual_one(staff_user):
    window = _window(
        starts_in=dt.timedelta(seconds=-1), lasts=dt.timedelta(hours=1), announce=dt.timedelta(0)
    )
    maintenance_windows_apply()
    assert maintenance_read().active
    from adminpanel.maintenance import maintenance_switch, maintenance_window_cancel

    maintenance_window_cancel(actor=staff_user, window_id=window.pk)
    assert not maintenance_read().active

    # A window ending while an operator's own maintenance is on leaves it on.
    other = _window(
        starts_in=dt.timedelta(seconds=-1), lasts=dt.timedelta(hours=1), announce=dt.timedelta(0)
    )
    maintenance_windows_apply()
    maintenance_switch(actor=staff_user, active=True, message="Manual")
    maintenance_windows_apply(now=other.ends_at + dt.timedelta(seconds=1))
    state = maintenance_read()
    assert state.active and state.message == "Manual"


@pytest.mark.django_db
def test_windows_planned_in_the_django_admin_are_audited_and_validated(client):
    admin = get_user_model().objects.create_superuser("root", password="root-pass-1")
    client.force_login(admin)
    starts = (timezone.now() + dt.timedelta(days=1)).replace(microsecond=0)

    def form(starts_at, ends_at, message="Kernel upgrade"):
        return {
            "starts_at_0": starts_at.strftime("%Y-%m-%d"),
            "starts_at_1": starts_at.strftime("%H:%M:%S"),
            "ends_at_0": ends_at.strftime("%Y-%m-%d"),
            "ends_at_1": ends_at.strftime("%H:%M:%S"),
            "message": message,
            "retry_after": "",
            "announce_before": "01:00:00",
        }

    add = "/admin/adminpanel/maintenancewindow/add/"
    response = client.post(add, form(starts, starts + dt.timedelta(minutes=30)))
    assert response.status_code == 302, response.content
    window = MaintenanceWindow.objects.get()
    assert window.message == "Kernel upgrade" and window.created_by == admin
    entry = AuditEntry.objects.get()
    assert (entry.action, entry.target) == (
        AuditAction.MAINTENANCE_SCHEDULED,
        f"window:{window.pk}",
    )

    past = timezone.now() - dt.timedelta(days=1)
    response = client.post(add, form(past, past + dt.timedelta(minutes=30)))
    assert response.status_code == 200  # the form again, with the reason
    assert b"already ended" in response.content
    assert MaintenanceWindow.objects.count() == 1
