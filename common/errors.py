"""One error shape for the whole API: {"error": {"code": ..., "detail": ...}}.

Domain errors subclass ApplicationError with a stable code; the DRF exception handler
and the Django error handlers below turn every failure into that shape, so no input
ever produces an HTML 500 page on an API path.
"""

import logging
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views import defaults
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler

logger = logging.getLogger(__name__)


class ApplicationError(Exception):
    """A refused request or operation that a client can understand and correct."""

    code = "invalid_request"
    status_code = status.HTTP_400_BAD_REQUEST

    def __init__(self, detail: str, *, code: str | None = None, status_code: int | None = None):
        super().__init__(detail)
        self.detail = detail
        if code is not None:
            self.code = code
        if status_code is not None:
            self.status_code = status_code


class InvalidParameter(ApplicationError):
    """A query parameter that cannot be understood."""

    code = "invalid_parameter"


class NotFound(ApplicationError):
    """A record that does not exist or that the user may not see."""

    code = "not_found"
    status_code = status.HTTP_404_NOT_FOUND


def error_body(code: str, detail: Any) -> dict:
    """The JSON body of every error response."""
    return {"error": {"code": code, "detail": detail}}


_DRF_CODES = {
    exceptions.ParseError: "malformed_request",
    exceptions.AuthenticationFailed: "authentication_failed",
    exceptions.NotAuthenticated: "authentication_required",
    exceptions.PermissionDenied: "permission_denied",
    exceptions.NotFound: "not_found",
    exceptions.MethodNotAllowed: "method_not_allowed",
    exceptions.NotAcceptable: "not_acceptable",
    exceptions.UnsupportedMediaType: "unsupported_media_type",
    exceptions.Throttled: "throttled",
    exceptions.ValidationError: "invalid_request",
}


def api_exception_handler(exc: Exception, context: dict) -> Response | None:
    """DRF exception handler: ApplicationError and DRF errors as JSON error bodies."""
    if isinstance(exc, ApplicationError):
        return Response(error_body(exc.code, exc.detail), status=exc.status_code)
    response = exception_handler(exc, context)
    if response is None:
        logger.exception("Unhandled error in %s", context.get("view"), exc_info=exc)
        return Response(
            error_body("server_error", "The server failed to answer this request."),
            status=status.HTTP_500_INTERNAL_SERVER_ERROR,
        )
    code = next((c for cls, c in _DRF_CODES.items() if isinstance(exc, cls)), "error")
    detail = response.data
    if isinstance(detail, dict) and set(detail) == {"detail"}:
        detail = detail["detail"]
    response.data = error_body(code, detail)
    return response


def _wants_json(request: HttpRequest) -> bool:
    return request.path.startswith("/api/")


def bad_request(request: HttpRequest, exception: Exception) -> HttpResponse:
    if _wants_json(request):
        return JsonResponse(error_body("bad_request", "Bad request."), status=400)
    return defaults.bad_request(request, exception)


def forbidden(request: HttpRequest, exception: Exception) -> HttpResponse:
    if _wants_json(request):
        return JsonResponse(error_body("permission_denied", "Forbidden."), status=403)
    return defaults.permission_denied(request, exception)


def not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    if _wants_json(request):
        return JsonResponse(error_body("not_found", "No such resource."), status=404)
    return defaults.page_not_found(request, exception)


def server_error(request: HttpRequest) -> HttpResponse:
    if _wants_json(request):
        return JsonResponse(error_body("server_error", "Internal server error."), status=500)
    return defaults.server_error(request)


class Unavailable(ApplicationError):
    """A dependency (database, Redis, channel layer) failed: retry later."""

    code = "unavailable"
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE


class PayloadTooLarge(ApplicationError):
    code = "payload_too_large"
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
