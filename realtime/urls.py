"""HTTP routes of the live protocol (PROTOCOL.md). No trailing slashes, as written there."""

from django.urls import path

from realtime import views

urlpatterns = [
    path("api/updates/latest/<str:cursor>", views.updates_latest, name="api-updates-latest"),
    path("api/updates/status", views.UpdatesStatusView.as_view(), name="api-updates-status"),
    path(
        "api/updates/acknowledge",
        views.AcknowledgeView.as_view(),
        name="api-updates-acknowledge",
    ),
    path("api/realtime/health", views.HealthView.as_view(), name="api-realtime-health"),
    path("api/realtime/live", views.realtime_live, name="api-realtime-live"),
    path("api/realtime/subscribe", views.SubscribeView.as_view(), name="api-realtime-subscribe"),
]
