"""Routes of the operators' pages and endpoints (mounted before the Django admin, so
`/admin/monitor/` is this page, not an admin model)."""

from django.urls import path

from adminpanel import views

urlpatterns = [
    path("admin/monitor/", views.monitor_page, name="admin-monitor"),
    path("api/admin/maintenance", views.MaintenanceView.as_view(), name="api-admin-maintenance"),
    path(
        "api/admin/maintenance/windows",
        views.MaintenanceWindowsView.as_view(),
        name="api-admin-maintenance-windows",
    ),
    path(
        "api/admin/maintenance/windows/<int:window_id>",
        views.MaintenanceWindowView.as_view(),
        name="api-admin-maintenance-window",
    ),
    path("api/admin/monitor", views.MonitorSnapshotView.as_view(), name="api-admin-monitor"),
    path(
        "api/admin/refresh-metrics",
        views.RefreshMetricsView.as_view(),
        name="api-admin-refresh-metrics",
    ),
    path(
        "api/engagement/events", views.EngagementEventsView.as_view(), name="api-engagement-events"
    ),
]
