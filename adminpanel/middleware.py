"""Django admin pages answer 403 to signed-in users who are not staff.

The admin itself sends such a user to its login page (302) with a message; the
operators' pages promise a plain refusal to everyone who is not staff (issue #6). Visitors
who are not signed in still get the login page, which is how staff sign in.
"""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest
from django.urls import reverse
from django.utils.deprecation import MiddlewareMixin


class StaffOnlyAdminMiddleware(MiddlewareMixin):
    """403 for authenticated non-staff requests under the admin, login and logout aside.

    A process_request hook (MiddlewareMixin), so the chain stays async: a synchronous
    middleware around an async view holds a thread for the whole request, and a long poll
    would hold the process's shared thread for its whole wait (realtime/handlers.py)."""

    def process_request(self, request: HttpRequest) -> None:
        if not request.path.startswith(settings.ADMIN_URL_PREFIX) or request.path in (
            reverse("admin:login"),
            reverse("admin:logout"),
        ):
            return
        user = request.user
        if user.is_authenticated and not (user.is_active and user.is_staff):
            raise PermissionDenied("Staff only.")
