"""Django admin pages answer 403 to signed-in users who are not staff.

The admin itself sends such a user to its login page (302) with a message; the
operators' pages promise a plain refusal to everyone who is not staff (issue #6). Visitors
who are not signed in still get the login page, which is how staff sign in.
"""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.urls import reverse


class StaffOnlyAdminMiddleware:
    """403 for authenticated non-staff requests under the admin, login and logout aside."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path.startswith(settings.ADMIN_URL_PREFIX) and request.path not in (
            reverse("admin:login"),
            reverse("admin:logout"),
        ):
            user = request.user
            if user.is_authenticated and not (user.is_active and user.is_staff):
                raise PermissionDenied("Staff only.")
        return self.get_response(request)
