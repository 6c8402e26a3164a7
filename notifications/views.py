"""`POST /api/admin/updates/broadcast`: staff announcements. Thin: access, validation,
the rate limit, then `announcement_broadcast` (which audits and sends)."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import status as http_status
from rest_framework.authentication import SessionAuthentication, TokenAuthentication
from rest_framework.exceptions import Throttled
from rest_framework.permissions import IsAdminUser
from rest_framework.request import Request
from rest_framework.response import Response

from common.api import ApiView, json_body
from notifications.announcements import (
    announcement_broadcast,
    announcement_context_resolve,
    broadcast_retry_after,
)
from notifications.messages import notification_row_message
from notifications.serializers import BroadcastSerializer, NotificationSerializer


class BroadcastView(ApiView):
    """Send an announcement to every connected client, or to one context's followers."""

    # Token first: an anonymous request is told to authenticate (401, WWW-Authenticate),
    # a signed-in non-staff user is refused (403).
    authentication_classes = [TokenAuthentication, SessionAuthentication]
    permission_classes = [IsAdminUser]

    @extend_schema(
        request=BroadcastSerializer,
        responses={
            201: NotificationSerializer,
            400: None,
            401: None,
            403: None,
            413: None,
            429: None,
        },
    )
    def post(self, request: Request) -> Response:
        data = json_body(request, BroadcastSerializer)
        context = announcement_context_resolve(actor=request.user, context=data.get("context"))
        retry_after = broadcast_retry_after(user_id=request.user.pk)
        if retry_after is not None:
            raise Throttled(
                wait=retry_after, detail=f"Too many broadcasts; retry in {retry_after} s."
            )
        # The body's fields are the service's arguments; the context as resolved.
        notification = announcement_broadcast(actor=request.user, **{**data, "context": context})
        return Response(notification_row_message(notification), status=http_status.HTTP_201_CREATED)
