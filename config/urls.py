"""URL routes: pages, the dashboard API, its schema, the admin and /metrics."""

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

urlpatterns = [
    path("", include("realtime.urls")),
    path("", include("preferences.urls")),
    path("", include("notifications.urls")),
    path("", include("emissions.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path("", include("adminpanel.urls")),
    path("admin/", admin.site.urls),
    path("", include("django_prometheus.urls")),
]

handler400 = "common.errors.bad_request"
handler403 = "common.errors.forbidden"
handler404 = "common.errors.not_found"
handler500 = "common.errors.server_error"
