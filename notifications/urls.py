"""HTTP routes of notifications (PROTOCOL.md). No trailing slashes, as written there."""

from django.urls import path

from notifications import views

urlpatterns = [
    path(
        "api/admin/updates/broadcast",
        views.BroadcastView.as_view(),
        name="api-admin-updates-broadcast",
    ),
]
