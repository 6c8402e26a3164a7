"""Cursor pagination for the dashboard lists: stable pages while rows change."""

from __future__ import annotations

from django.conf import settings
from rest_framework.exceptions import NotFound as DRFNotFound
from rest_framework.pagination import CursorPagination

from common.errors import InvalidParameter


class DashboardCursorPagination(CursorPagination):
    """DRF's cursor pagination, ordered by whatever the view chose, 400 on a bad cursor."""

    page_size = settings.API_PAGE_SIZE
    page_size_query_param = "page_size"
    max_page_size = settings.API_MAX_PAGE_SIZE

    def get_ordering(self, request, queryset, view):
        return view.get_cursor_ordering()

    def decode_cursor(self, request):
        try:
            return super().decode_cursor(request)
        except DRFNotFound as exc:
            raise InvalidParameter("The cursor is malformed; use a `next` link as given.") from exc
