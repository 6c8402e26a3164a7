"""What the apps' Django admin classes share."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest


class ReadOnlyAdminMixin:
    """Rows the system writes and staff only read: no add, change or delete in the admin
    (for a ModelAdmin or an inline alike, whose `has_add_permission` also takes `obj`)."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
