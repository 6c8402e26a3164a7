"""`GET/PUT /api/user/refresh-preferences` and `GET/PUT /api/admin/refresh-policies`.

Thin: read the JSON body (bounded), call the service, answer with the selector's view.
The services validate (400 `invalid_preferences` / `invalid_policy` with a reason per
field) and tell open connections after their commit.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status as http_status
from rest_framework.permissions import IsAdminUser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.serializers import Serializer

from common.api import ApiView, request_body
from common.errors import ApplicationError
from common.json import json_loads_client
from preferences.policies import refresh_policies_update
from preferences.selectors import client_policy_resolve, refresh_policies_list
from preferences.serializers import (
    PoliciesEditReplySerializer,
    PoliciesEditSerializer,
    PoliciesSerializer,
    PreferencesReplySerializer,
    PreferencesSerializer,
)
from preferences.services import refresh_preferences_update, refresh_preferences_validate

# A full preferences document is under 500 bytes and all 16 policies under 4 KiB.
BODY_MAX_BYTES = 16 * 1024

_Handler = TypeVar("_Handler", bound=Callable[..., Any])


def json_document(request: Request) -> Any:
    """The request's JSON body: 415 unless JSON, 413 over BODY_MAX_BYTES, 400 when it
    does not parse or nests too deep (common.json.CLIENT_JSON_MAX_DEPTH)."""
    if request.content_type.split(";")[0].strip().lower() != "application/json":
        raise ApplicationError(
            "Send the body as application/json.",
            code="unsupported_media_type",
            status_code=http_status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
        )
    raw = request_body(request, BODY_MAX_BYTES)
    try:
        return json_loads_client(raw)
    except ValueError:
        raise ApplicationError("The body is not valid JSON.", code="malformed_request") from None


def document_put_schema(
    *, request: type[Serializer], reply: type[Serializer], invalid: str, other: dict[int, Any]
) -> Callable[[_Handler], _Handler]:
    """The OpenAPI description of a PUT whose body is a `json_document`: the reply, the
    service's 400 (`invalid`, with a reason per field), json_document's 413 and 415, and
    the view's `other` answers."""
    responses = {
        200: reply,
        400: OpenApiResponse(description=f"{invalid}: a reason per field"),
        413: None,
        415: None,
        **other,
    }
    return extend_schema(request=request, responses=dict(sorted(responses.items())))


def _preferences_reply(request: Request) -> Response:
    resolved = client_policy_resolve(user=request.user, session_key=request.session.session_key)
    return Response({**resolved.preferences.as_dict(), "policy": resolved.policy})


class RefreshPreferencesView(ApiView):
    """The refresh preferences of the signed-in user, or of the anonymous browser
    session (a PUT without a session creates one and sets its cookie)."""

    @extend_schema(responses={200: PreferencesReplySerializer, 503: None})
    def get(self, request: Request) -> Response:
        return _preferences_reply(request)

    @document_put_schema(
        request=PreferencesSerializer,
        reply=PreferencesReplySerializer,
        invalid="invalid_preferences",
        other={503: None},
    )
    def put(self, request: Request) -> Response:
        document = json_document(request)
        user = request.user
        if not user.is_authenticated and request.session.session_key is None:
            # Refuse before creating a session nobody will use.
            refresh_preferences_validate(user=user, document=document)
            request.session.create()
        refresh_preferences_update(
            user=user, session_key=request.session.session_key, document=document
        )
        return _preferences_reply(request)


class RefreshPoliciesView(ApiView):
    """Refresh policies per user type and data category: staff only."""

    permission_classes = [IsAdminUser]

    @extend_schema(responses={200: PoliciesSerializer, 403: None})
    def get(self, request: Request) -> Response:
        return Response({"policies": refresh_policies_list()})

    @document_put_schema(
        request=PoliciesEditSerializer,
        reply=PoliciesEditReplySerializer,
        invalid="invalid_policy",
        other={403: None},
    )
    def put(self, request: Request) -> Response:
        changed = refresh_policies_update(actor=request.user, document=json_document(request))
        return Response({"policies": refresh_policies_list(), "changed": changed})
