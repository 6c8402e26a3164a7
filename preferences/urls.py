"""Routes of the refresh preference and policy endpoints (no trailing slashes, as in
PROTOCOL.md)."""

from django.urls import path

from preferences import views

urlpatterns = [
    path(
        "api/user/refresh-preferences",
        views.RefreshPreferencesView.as_view(),
        name="api-refresh-preferences",
    ),
    path(
        "api/admin/refresh-policies",
        views.RefreshPoliciesView.as_view(),
        name="api-refresh-policies",
    ),
]
