"""The operators' pages and endpoints: the monitoring page, maintenance mode and its
windows, the monitor snapshot and refresh_metrics series (staff only), and the
engagement report (everyone, rate limited). Thin: the rules live in services and
selectors."""

from __future__ import annotations

import datetime as dt
import functools

from django.conf import settings
from django.contrib import admin
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import exceptions
from rest_framework import status as http_status
from rest_framework.permissions import IsAdminUser
from rest_framework.request import Request
from rest_framework.response import Response

from adminpanel.engagement import engagement_events_record, engagement_rate_hit
from adminpanel.maintenance import (
    maintenance_switch,
    maintenance_window_cancel,
    maintenance_window_schedule,
)
from adminpanel.monitor import PublisherRates, monitor_snapshot_collect
from adminpanel.selectors import (
    maintenance_read,
    maintenance_windows_pending,
    refresh_metrics_series,
)
from adminpanel.serializers import (
    EngagementAcceptedSerializer,
    EngagementReportSerializer,
    MaintenanceStateSerializer,
    MaintenanceSwitchSerializer,
    MaintenanceWindowCreateSerializer,
    MaintenanceWindowSerializer,
)
from common.api import ApiView, json_body
from common.errors import InvalidParameter
from common.identity import client_key
from realtime.metrics import LIMIT_ENGAGEMENT, rate_limited_count

# refresh_metrics charts: at most a week back, buckets of one minute to one hour.
SERIES_MAX_HOURS = 168
SERIES_BUCKETS_S = (60, 300, 600, 900, 1800, 3600)


def staff_page(view):
    """Staff only: anonymous visitors go to the admin login, signed-in non-staff get 403."""

    @functools.wraps(view)
    def wrapped(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path(), reverse("admin:login"))
        if not request.user.is_staff:
            raise PermissionDenied
        return view(request, *args, **kwargs)

    return wrapped


@staff_page
def monitor_page(request: HttpRequest) -> HttpResponse:
    """`/admin/monitor/`: the server-rendered shell; static/js/admin/monitor.js fills it."""
    context = {
        **admin.site.each_context(request),
        "title": "Live monitoring",
        # The page needs the width; the admin's model list is one click away (Home).
        "is_nav_sidebar_enabled": False,
        "interval_ms": int(settings.MONITOR_INTERVAL_S * 1000),
        "maintenance": maintenance_read(),
    }
    return render(request, "admin/monitor.html", context)


class StaffAPIView(ApiView):
    """Staff only (403 for everybody else, anonymous included)."""

    permission_classes = [IsAdminUser]


def _maintenance_answer() -> dict:
    return {
        **maintenance_read().as_dict(),
        "windows": MaintenanceWindowSerializer(maintenance_windows_pending(), many=True).data,
    }


class MaintenanceView(StaffAPIView):
    """Maintenance mode: read it, switch it (audited; every client is told)."""

    @extend_schema(responses={200: MaintenanceStateSerializer, 403: None})
    def get(self, request: Request) -> Response:
        return Response(_maintenance_answer())

    @extend_schema(
        request=MaintenanceSwitchSerializer,
        responses={200: MaintenanceStateSerializer, 400: None, 403: None, 413: None},
    )
    def put(self, request: Request) -> Response:
        data = json_body(request, MaintenanceSwitchSerializer)
        maintenance_switch(
            actor=request.user,
            active=data["active"],
            message=data["message"],
            until=data["until"],
            retry_after=data["retry_after"],
        )
        return Response(_maintenance_answer())


class MaintenanceWindowsView(StaffAPIView):
    """Scheduled maintenance windows: the pending ones; plan one (audited)."""

    @extend_schema(responses={200: MaintenanceWindowSerializer(many=True), 403: None})
    def get(self, request: Request) -> Response:
        return Response(MaintenanceWindowSerializer(maintenance_windows_pending(), many=True).data)

    @extend_schema(
        request=MaintenanceWindowCreateSerializer,
        responses={201: MaintenanceWindowSerializer, 400: None, 403: None, 413: None},
    )
    def post(self, request: Request) -> Response:
        data = json_body(request, MaintenanceWindowCreateSerializer)
        announce = data["announce_before_s"]
        window = maintenance_window_schedule(
            actor=request.user,
            starts_at=data["starts_at"],
            ends_at=data["ends_at"],
            message=data["message"],
            retry_after=data["retry_after"],
            announce_before=dt.timedelta(seconds=announce) if announce is not None else None,
        )
        return Response(
            MaintenanceWindowSerializer(window).data, status=http_status.HTTP_201_CREATED
        )


class MaintenanceWindowView(StaffAPIView):
    """One window: cancel it (audited; maintenance it switched on goes off)."""

    @extend_schema(responses={204: None, 403: None, 404: None, 409: None})
    def delete(self, request: Request, window_id: int) -> Response:
        maintenance_window_cancel(actor=request.user, window_id=window_id)
        return Response(status=http_status.HTTP_204_NO_CONTENT)


class MonitorSnapshotView(StaffAPIView):
    """The `monitor` message, now (the monitoring page's first paint)."""

    @extend_schema(responses={200: None, 403: None})
    def get(self, request: Request) -> Response:
        return Response(monitor_snapshot_collect(PublisherRates()))


class RefreshMetricsView(StaffAPIView):
    """refresh_metrics of the last hours, bucketed, as chart columns."""

    @extend_schema(
        parameters=[
            OpenApiParameter("hours", int, description=f"1 to {SERIES_MAX_HOURS}, default 24"),
            OpenApiParameter("bucket", int, description=f"seconds, one of {SERIES_BUCKETS_S}"),
        ],
        responses={200: None, 400: None, 403: None},
    )
    def get(self, request: Request) -> Response:
        unknown = sorted(set(request.query_params) - {"hours", "bucket"})
        if unknown:
            raise InvalidParameter(f"Unknown parameter(s): {', '.join(u[:40] for u in unknown)}.")
        hours = _int_param(request, "hours", 24, 1, SERIES_MAX_HOURS)
        bucket = _int_param(request, "bucket", 600, 60, 3600)
        if bucket not in SERIES_BUCKETS_S:
            raise InvalidParameter(f"`bucket` is one of {', '.join(map(str, SERIES_BUCKETS_S))}.")
        return Response(refresh_metrics_series(hours=hours, bucket_s=bucket))


def _int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    values = request.query_params.getlist(name)
    if not values:
        return default
    if len(values) > 1 or not values[0].isdigit() or len(values[0]) > 6:
        raise InvalidParameter(f"`{name}` is an integer from {low} to {high}.")
    value = int(values[0])
    if not low <= value <= high:
        raise InvalidParameter(f"`{name}` is an integer from {low} to {high}.")
    return value


class EngagementEventsView(ApiView):
    """What viewers do with live updates (pause, resume, manual refresh, notification
    opened, transport fallback), reported by the browser client; rate limited per client."""

    @extend_schema(
        request=EngagementReportSerializer,
        responses={202: EngagementAcceptedSerializer, 400: None, 413: None, 429: None},
    )
    def post(self, request: Request) -> Response:
        client = _engagement_client(request)
        retry_after = engagement_rate_hit(client=client)
        if retry_after is not None:
            rate_limited_count(LIMIT_ENGAGEMENT)
            raise exceptions.Throttled(wait=retry_after)
        data = json_body(request, EngagementReportSerializer)
        accepted = engagement_events_record(client=client, events=data["events"])
        return Response({"accepted": accepted}, status=http_status.HTTP_202_ACCEPTED)


def _engagement_client(request: Request) -> str:
    """Who reports: the user, else the browser session, else the client address."""
    session = getattr(request, "session", None)
    return client_key(request.user, getattr(session, "session_key", None)) or (
        f"addr:{request.META.get('REMOTE_ADDR') or 'unknown'}"
    )
